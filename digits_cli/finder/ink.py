"""Ink components, labelled once, and the thin straight runs of ink that may be drawn lines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits_cli.finder.crop import percentile, quantile

# A component is at most this many times wider than tall (wide handwritten 2s reach ~1.9).
MAX_WIDTH_RATIO = 2.2
# A line is at least this many times longer than thick.
LINE_ELONGATION = 10
# Components looked at again for ink strong for its light (strong_in_shade), at most.
MAX_LOOKED_AGAIN = 400


@dataclass
class Ink:
    """Ink pixels labelled once into 8-connected components, reused by every later step."""

    labels: np.ndarray  # int32 (H, W): each pixel's component, 0 for paper
    boxes: np.ndarray  # int32 (count, 4): x, y, width, height of each component
    real: np.ndarray  # bool (count,): holds a pixel of strong ink (not just faint noise)


@dataclass
class Run:
    """A thin straight run of ink, a kernel long at least: perhaps a drawn line."""

    x: int
    y: int
    inside: np.ndarray  # bool: the run's pixels within its bounding box at (x, y)
    owner: int  # the ink component it lies in
    horizontal: bool

    @property
    def window(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.inside.shape[0]), slice(
            self.x, self.x + self.inside.shape[1]
        )

    @property
    def length(self) -> int:
        return self.inside.shape[1] if self.horizontal else self.inside.shape[0]


def label_ink(mask: np.ndarray, strong: np.ndarray) -> Ink:
    """Label the components of ``mask``, box them, and tell which hold some ``strong`` ink."""
    import cv2

    count, labels = cv2.connectedComponentsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
    boxes = np.zeros((count, 4), np.int32)
    real = np.zeros(count, dtype=bool)
    if count > 1:
        # Boxes from the components' outer outlines: OpenCV's own statistics visit every pixel
        # and cost twice the labelling.
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        outlines = [c for c, h in zip(contours, hierarchy[0], strict=True) if h[3] < 0]
        points = np.concatenate(outlines).reshape(-1, 2)
        starts = np.cumsum([0] + [len(outline) for outline in outlines[:-1]])
        low = np.minimum.reduceat(points, starts, axis=0)
        high = np.maximum.reduceat(points, starts, axis=0)
        ids = labels[points[starts, 1], points[starts, 0]]
        boxes[ids, :2] = low
        boxes[ids, 2:] = high - low + 1
        real[labels[strong]] = True
        real[0] = False
    return Ink(labels, boxes, real)


def strong_in_shade(
    ink: Ink,
    contrast: np.ndarray,
    strong: np.ndarray,
    paper: np.ndarray,
    sheet: np.ndarray | None,
    thresholds: tuple[float, float],
    min_size: int,
) -> np.ndarray:
    """``strong`` with the ink that is strong for its light, ``ink.real`` updated to match.

    A page lit unevenly (a lamp to one side, a vignette) dims ink and paper alike, so the same
    pen departs less from the ``paper`` (the background, RGB) in the shade. There the strong
    threshold falls with the paper's brightness over the page's brightest (its 95th percentile,
    on the sheet if any), down to twice the low one: still far above the noise. Only components
    not real yet and at least ``min_size`` tall or wide (a digit's least height) are looked at
    again, MAX_LOOKED_AGAIN of them at most.
    """
    import cv2

    low, high = thresholds
    floor = 2 * low
    extent = np.maximum(ink.boxes[:, 2], ink.boxes[:, 3])
    weak = np.flatnonzero(~ink.real & (extent >= min_size))
    weak = weak[weak > 0]
    if high <= floor or weak.size == 0:
        return strong
    # Only those with ink above the floor somewhere can be strong in any light (a scan's faint
    # show-through has none): one pass over the page instead of a loop over hundreds of them.
    above = np.bincount(ink.labels[contrast >= floor], minlength=len(ink.real))
    weak = weak[above[weak] > 0]
    if weak.size == 0:
        return strong
    if weak.size > MAX_LOOKED_AGAIN:  # a noisy page: its largest
        areas = ink.boxes[weak, 2].astype(np.int64) * ink.boxes[weak, 3]
        weak = weak[np.argsort(-areas)[:MAX_LOOKED_AGAIN]]
    grey = cv2.cvtColor(paper, cv2.COLOR_RGB2GRAY)
    sample = grey[::8, ::8] if sheet is None else grey[sheet][::64]
    brightest = max(1.0, quantile(sample.ravel(), 0.95))
    strong = strong.copy()
    for component in weak:
        x, y, w, h = (int(v) for v in ink.boxes[component])
        window = slice(y, y + h), slice(x, x + w)
        own = ink.labels[window] == component
        light = np.minimum(grey[window][own] / np.float32(brightest), 1)
        hit = contrast[window][own] >= np.maximum(high * light, floor)
        if hit.any():
            ink.real[component] = True
            inside = strong[window]
            inside[own] = hit | inside[own]
    return strong


def thin_runs(
    ink: Ink,
    mask: np.ndarray,
    kernel: tuple[int, int],
    owners: set[int] | None = None,
    elongation: float = LINE_ELONGATION,
    partly_thick: list[Run] | None = None,
) -> list[Run]:
    """Thin straight runs of real ink at least ``kernel`` long (one row or one column), at least
    ``elongation`` times longer than thick, in the components ``owners`` (default: any); runs
    that are so along a quarter of their length only are added to ``partly_thick`` if given."""
    import cv2

    rows, cols = kernel
    horizontal = cols > rows
    length = cols if horizontal else rows
    if mask.shape[0] <= rows or mask.shape[1] <= cols:
        return []
    # Only components at least that long can hold such a run: look just around them.
    extent = ink.boxes[:, 2 if horizontal else 3]
    long = np.flatnonzero(ink.real & (extent >= length))
    if owners is not None:
        long = long[np.isin(long, list(owners))]
    if long.size == 0:
        return []
    boxes = ink.boxes[long]
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    runs = cv2.morphologyEx(
        mask[y0:y1, x0:x1],
        cv2.MORPH_OPEN,
        np.ones(kernel, np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if not cv2.countNonZero(runs):
        return []
    found: list[Run] = []
    contours, _ = cv2.findContours(runs, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        span = w if horizontal else h
        # Thin runs only: a bold stroke of a big digit is not a drawn line. The outline tells
        # a piece's area closely enough (pixels = enclosed area + half the outline) without
        # labelling every piece.
        area = cv2.contourArea(contour) + cv2.arcLength(contour, True) / 2 + 1
        thin = span * span >= elongation * area
        if not thin and (partly_thick is None or span * span < elongation * area / 4):
            continue
        col, row = (int(v) for v in contour[0, 0])
        window = runs[y : y + h, x : x + w]
        _, pieces = cv2.connectedComponents(window, connectivity=8)
        inside = pieces == pieces[row - y, col - x]
        # A line with a digit's stroke lying along part of it (a digit on its underline) is
        # thick only there: thin along a quarter of its length still.
        if not thin and span < elongation * percentile(inside.sum(axis=0 if horizontal else 1), 25):
            continue
        owner = int(ink.labels[y0 + row, x0 + col])
        destination = found if thin else partly_thick
        if destination is not None and ink.real[owner] and (owners is None or owner in owners):
            destination.append(Run(x0 + x, y0 + y, inside, owner, horizontal))
    return found
