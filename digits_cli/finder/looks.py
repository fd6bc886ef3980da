"""What a region's ink looks like (strength, fill, border, stroke width, core, frame), to tell
digits written on purpose from clutter (reading.plausible)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digits_cli.finder.crop import median, stroke_width
from digits_cli.finder.results import Box

# Ink along this share of every side of its box is a box.
FRAMED = 0.85


@dataclass
class Looks:
    """What a region's ink looks like, to tell digits from clutter."""

    strength: float  # its ink's contrast (90th percentile), in colour distance over the paper
    fill: float  # share of its box that is ink
    edge: bool  # touches the picture's border
    # Measured when asked (they cost more): its mean stroke width over its height (a blob's is
    # ~0.5), and its strong ink's core: the share of the core's convex hull that is ink (a
    # blob's is ~1), the core's height over the region's, and its width over its height.
    measure_thickness: Callable[[], float] = field(default=lambda: 0.1, repr=False)
    measure_core: Callable[[], tuple[float, float, float]] = field(
        default=lambda: (0.5, 1.0, 0.5), repr=False
    )
    # Whether its ink runs along all four sides of its box (a printed box, a grid's cell).
    measure_framed: Callable[[], bool] = field(default=lambda: False, repr=False)
    # Its strong ink's colour as its median departure from the paper (RGB, paper minus ink;
    # coverage scales it, the pen's colour sets its direction); None when not measured.
    measure_colour: Callable[[], np.ndarray | None] = field(default=lambda: None, repr=False)

    @functools.cached_property
    def colour(self) -> np.ndarray | None:
        return self.measure_colour()

    @functools.cached_property
    def framed(self) -> bool:
        return self.measure_framed()

    @functools.cached_property
    def thickness(self) -> float:
        return self.measure_thickness()

    @functools.cached_property
    def core(self) -> tuple[float, float, float]:
        """Solidity, height share and aspect of the strong ink's core."""
        return self.measure_core()


def looks_of(
    contrast: np.ndarray,
    own: np.ndarray,
    strength: float,
    box: Box,
    image: Any,
    departure: np.ndarray | None = None,
) -> Looks:
    """How the ink ``own`` (with its ``contrast`` and ``strength``, and its ``departure`` from
    the paper, all of one shape) at ``box`` of ``image`` looks; its stroke structure and colour
    are measured only when asked."""
    height, width = np.shape(image)[:2]
    x, y, w, h = box
    edge = x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1
    return Looks(
        strength,
        np.count_nonzero(own) / own.size,  # own.mean(), without its Python wrapper
        edge,
        lambda: stroke_width(own) / own.shape[0],
        lambda: strong_core(contrast, own, strength),
        lambda: framed(own),
        lambda: None if departure is None else strong_colour(departure, contrast, own, strength),
    )


def strong_colour(
    departure: np.ndarray, contrast: np.ndarray, own: np.ndarray, strength: float
) -> np.ndarray | None:
    """The median ``departure`` (from the paper, RGB) of the strong ink of ``own`` (at least
    half its strength)."""
    pixels = departure[own & (contrast >= 0.5 * strength)]
    return np.asarray(median(pixels, axis=0), np.float64) if len(pixels) else None


def framed(own: np.ndarray) -> bool:
    """Whether the ink ``own`` runs along nearly all of each side of its box, as a box's lines
    do (a digit's round or open strokes leave the corners and most sides free)."""
    if min(own.shape) < 6:
        return False
    band = max(2, min(own.shape) // 12)
    sides = (
        own[:band].any(axis=0),
        own[-band:].any(axis=0),
        own[:, :band].any(axis=1),
        own[:, -band:].any(axis=1),
    )
    return all(np.count_nonzero(side) / side.size >= FRAMED for side in sides)


def strong_core(
    contrast: np.ndarray, own: np.ndarray, strength: float
) -> tuple[float, float, float]:
    """The strong ink of ``own`` (at least half its strength): the share of its convex hull it
    fills, its height over the region's, and its width over its height."""
    import cv2

    core = (own & (contrast >= 0.5 * strength)).astype(np.uint8)
    contours, _ = cv2.findContours(core, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, 0.0, 0.0
    points = np.concatenate(contours)
    hull = cv2.convexHull(points)
    # The hull runs through pixel centres: half a pixel of outline around it belongs to it.
    area = cv2.contourArea(hull) + cv2.arcLength(hull, True) / 2 + 1
    _, _, w, h = cv2.boundingRect(points)
    return float(np.count_nonzero(core)) / area, h / own.shape[0], w / max(1, h)
