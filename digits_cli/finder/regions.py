"""Digit-like regions of the ink, each with its MNIST-style crop (and, if wide, its split parts)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digits_cli.config import SegmentSettings
from digits_cli.finder.crop import MNIST_SIZE, ink_bounds, ink_strength, mnist_crop, stroke_width
from digits_cli.finder.ink import MAX_WIDTH_RATIO, Ink, label_ink, remove_lines
from digits_cli.finder.paper import colour_distance, estimate_background, ink_mask, working_rgb
from digits_cli.finder.results import CHECK_EVERY, Box, Check, no_check

# Below this noise level (contrast units) crops are cut from the unblurred picture.
CLEAN_NOISE = 0.01
# Wider regions (width over height) may be touching digits and are also read split in two,
# recursively up to this depth, when read whole with less confidence than SURE.
SPLIT_FROM = 0.9
MAX_SPLIT_DEPTH = 2
# A region up to this many times wider than tall may be digits touching (wider is not digits);
# beyond MAX_WIDTH_RATIO it is read only split, down to this depth (eight parts at most).
MAX_TOUCHING_WIDTH = 6.0
WIDE_SPLIT_DEPTH = 3
# Touching digits are also cut at likely columns (see cut_points): where even cuts into up to
# this many parts of these widths (shares of the height) would fall, and the deepest minima
# of the ink profile; pieces between them are this wide.
MAX_CUT_PARTS = 8
CUT_PITCH = (0.4, 1.0)
MAX_MINIMA = 8
PIECE_WIDTH = (0.2, 1.1)
CUT_FROM = 1.5  # regions this many times wider than tall (one wide digit rarely is)
# Ink on a cut part's edge smaller than this share of its largest piece is a neighbour's.
SLIVER = 0.3
# A split part is at least this share of its region's height (less is a sliver of a stroke).
MIN_PART = 0.55
# Ink along this share of every side of its box is a box.
FRAMED = 0.85
# Beyond this many components the picture is noise; the largest ones are kept.
MAX_COMPONENTS = 400
AREA_ROWS = 128  # rows of labels counted at once


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


@dataclass
class Candidate:
    """Something that looks like one digit: where it is and its MNIST-style 28x28 crop.

    A region wide enough to be digits touching has a ``splitter``; :meth:`split` makes its
    ``parts`` with it, and their parts at once, down to the depth limit: a region found is split
    once reading it whole proved unsure (or it is too wide; reading.read_candidates), its parts
    before any of them is read.
    """

    box: Box  # x, y, width, height in the original picture's pixels
    crop: np.ndarray  # (28, 28) float32 in [0, 1], white ink on black
    # How it looks as ink, to tell digits from clutter (see reading.plausible).
    looks: Looks = field(default_factory=lambda: Looks(1.0, 0.0, False))
    # A wide region may be digits touching: its left and right parts, read instead if surer.
    parts: list[Candidate] = field(default_factory=list)
    # For a wide region, makes those parts, each already split in turn (see split).
    splitter: Callable[[], list[Candidate]] | None = field(default=None, repr=False, compare=False)
    # For a region of several touching digits: pieces between likely cut columns, by their
    # columns (see cut_points); reading.best_cut reads it as the surest row of them.
    cutter: Callable[[], dict[tuple[int, int], Candidate]] | None = field(
        default=None, repr=False, compare=False
    )
    # The printed form field it is written in (digits of one field are one number), or -1.
    field: int = -1
    # Wider than any digit: digits touching, read only split.
    too_wide: bool = False
    # Working resolution over the original picture's (looks are measured at the former).
    scale: float = 1.0

    def split(self) -> None:
        """Make this region's parts (and theirs), if it is wide enough to have any."""
        if self.splitter is not None and not self.parts:
            self.parts = self.splitter()
            for part in self.parts:
                part.field = self.field
                for piece in part.parts:
                    piece.field = self.field


def find_digits(
    image: np.ndarray, cfg: SegmentSettings, check: Check = no_check
) -> list[Candidate]:
    """Every digit-like region of ``image`` with its MNIST-style crop; raises only what
    ``check`` raises (it is called between the steps and in their loops).

    Accepts (H, W), (H, W, 1), grey+alpha, RGB or RGBA arrays of any numeric dtype; anything
    else, or a picture without digits, gives an empty list.
    """
    import cv2

    rgb, scale = working_rgb(image, cfg.max_side)
    if rgb is None:
        return []
    height, width = rgb.shape[:2]
    min_height = max(4, round(cfg.min_digit_height * scale))
    if max(height, width) < min_height:
        return []
    check()
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0.7)
    background, sheet = estimate_background(smooth)
    check()
    contrast = colour_distance(smooth, background, check)
    if sheet is not None:
        contrast[~sheet] = 0  # the desk around a sheet of paper
    check()
    mask, strong, noise = ink_mask(contrast, cfg.min_contrast, sheet)
    check()
    ink = label_ink(mask, strong)
    check()
    ink, lines, fields = remove_lines(ink, mask, strong, min_height, check)
    check()
    regions = find_regions(ink, lines, smooth, contrast, min_height, check)
    # Small digits keep their holes only without the blur, which is needed against noise alone.
    clean = noise < CLEAN_NOISE
    candidates = []
    for count, (x, y, w, h, ids) in enumerate(regions):
        if count % CHECK_EVERY == 0:
            check()
        window = slice(y, y + h), slice(x, x + w)
        labels = ink.labels[window]
        own = labels == ids[0] if len(ids) == 1 else np.isin(labels, ids)
        own_contrast = (
            colour_distance(rgb[window], background[window]) if clean else contrast[window]
        )
        candidate = make_candidate(own_contrast, own, (x, y), scale, image, min_height)
        if candidate is not None:
            candidate.field = field_of((x, y, w, h), fields)
            candidates.append(candidate)
    return candidates


def field_of(box: Box, fields: list[Box]) -> int:
    """The form field (index) holding the centre of ``box``, or -1."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    for index, (fx, fy, fw, fh) in enumerate(fields):
        if fx <= cx <= fx + fw and fy - 0.25 * fh <= cy <= fy + 1.25 * fh:
            return index
    return -1


def make_candidate(
    contrast: np.ndarray,
    own: np.ndarray,
    origin: tuple[int, int],
    scale: float,
    image: Any,
    min_height: int,
    depth: int = 0,
    max_depth: int = MAX_SPLIT_DEPTH,
) -> Candidate | None:
    """A candidate for the ink ``own`` with its ``contrast`` (same shape, placed at ``origin``).

    A region too wide for one digit also gets a splitter making its left and right parts (and
    theirs, down to ``max_depth``) as candidates, for when reading it whole proves unsure. A
    region wider than any digit (several touching) is ``too_wide``: it is only read split, and
    split deeper.
    """
    bounds = ink_bounds(own)
    if bounds is None:
        return None
    top, bottom, left, right = bounds
    own = own[top:bottom, left:right]
    contrast = contrast[top:bottom, left:right]
    x, y = origin[0] + left, origin[1] + top
    h, w = own.shape
    strength = ink_strength(contrast, own)
    crop = mnist_crop(contrast, own, strength)
    if crop is None:
        return None
    box = original_box((x, y, w, h), scale, image)
    candidate = Candidate(box, crop, looks_of(contrast, own, strength, box, image))
    candidate.too_wide = w > MAX_WIDTH_RATIO * h
    candidate.scale = scale
    if depth == 0 and w > CUT_FROM * h:
        max_depth = WIDE_SPLIT_DEPTH
    if depth < max_depth and w > SPLIT_FROM * h and w >= 4:

        def split() -> list[Candidate]:
            cut = split_column(own)
            halves = [own.copy(), own.copy()]
            halves[0][:, cut:] = False
            halves[1][:, :cut] = False
            parts = [
                part
                for half in halves
                if (
                    part := make_candidate(
                        contrast, half, (x, y), scale, image, min_height, depth + 1, max_depth
                    )
                )
                and part.box[3] * scale >= max(min_height / 2, MIN_PART * h)
            ]
            if len(parts) < 2:
                return []
            for part in parts:
                part.split()
            return parts

        candidate.splitter = split
    if depth == 0 and w > CUT_FROM * h:

        def cut() -> dict[tuple[int, int], Candidate]:
            pieces = {}
            points = cut_points(own)
            for start, left_edge in enumerate(points):
                for right_edge in points[start + 1 :]:
                    span = right_edge - left_edge
                    if not PIECE_WIDTH[0] * h <= span <= PIECE_WIDTH[1] * h or span == w:
                        continue
                    piece = np.zeros_like(own)
                    piece[:, left_edge:right_edge] = without_slivers(own[:, left_edge:right_edge])
                    part = make_candidate(
                        contrast, piece, (x, y), scale, image, min_height, max_depth, max_depth
                    )
                    if part is not None and part.box[3] * scale >= max(
                        min_height / 2, MIN_PART * h
                    ):
                        pieces[left_edge, right_edge] = part
            return pieces

        candidate.cutter = cut
    return candidate


def looks_of(contrast: np.ndarray, own: np.ndarray, strength: float, box: Box, image: Any) -> Looks:
    """How the ink ``own`` (with its ``contrast`` and ``strength``) at ``box`` of ``image``
    looks; its stroke structure is measured only when asked."""
    height, width = np.shape(image)[:2]
    x, y, w, h = box
    edge = x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1
    return Looks(
        strength,
        float(own.mean()),
        edge,
        lambda: stroke_width(own) / own.shape[0],
        lambda: strong_core(contrast, own, strength),
        lambda: framed(own),
    )


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
    return all(side.mean() >= FRAMED for side in sides)


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


def cut_points(own: np.ndarray) -> list[int]:
    """Columns where touching digits may meet, the region's ends included: where even cuts into
    k parts would fall (moved to the column with least ink within a third of a part's width),
    for the k its width allows (a digit 0.4-1.0 times as wide as tall), and the deepest local
    minima of its ink profile."""
    height, width = own.shape
    profile = np.convolve(own.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    points = {0, width}
    for count in range(2, MAX_CUT_PARTS + 1):
        pitch = width / count
        if not CUT_PITCH[0] * height <= pitch <= CUT_PITCH[1] * height:
            continue
        for index in range(1, count):
            centre = index * pitch
            low, high = max(1, int(centre - pitch / 3)), min(width - 1, int(centre + pitch / 3) + 1)
            bias = 0.1 * height * np.abs(np.arange(low, high) - centre) / pitch
            points.add(low + int(np.argmin(profile[low:high] + bias)))
    inner = profile[2:-2]
    minima = (
        np.flatnonzero((inner <= profile[1:-3]) & (inner <= profile[3:-1]) & (inner < profile[:-4]))
        + 2
    )
    deepest = minima[np.argsort(profile[minima], kind="stable")[:MAX_MINIMA]]
    points.update(int(column) for column in deepest)
    return sorted(points)


def without_slivers(piece: np.ndarray) -> np.ndarray:
    """A part cut from touching digits without the bits of its neighbours' strokes the cut left
    in it: small pieces of ink on its left or right edge."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        piece.view(np.uint8), None, None, None, 8
    )
    if count <= 2:
        return piece
    areas = stats[1:, cv2.CC_STAT_AREA]
    left = stats[1:, cv2.CC_STAT_LEFT]
    right = left + stats[1:, cv2.CC_STAT_WIDTH]
    on_edge = (left == 0) | (right == piece.shape[1])
    sliver = on_edge & (areas < SLIVER * areas.max())
    return piece & ~np.isin(labels, np.flatnonzero(sliver) + 1)


def split_column(own: np.ndarray) -> int:
    """Where touching digits most likely meet: the column with least ink in the middle 60%."""
    width = own.shape[1]
    profile = np.convolve(own.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    low, high = max(1, int(0.2 * width)), min(width - 1, int(0.8 * width) + 1)
    centre_bias = 0.05 * own.shape[0] * np.abs(np.arange(low, high) - width / 2) / width
    return low + int(np.argmin(profile[low:high] + centre_bias))


def find_regions(
    ink: Ink,
    lines: np.ndarray | None,
    rgb: np.ndarray,
    contrast: np.ndarray,
    min_height: int,
    check: Check = no_check,
) -> list[tuple[int, int, int, int, np.ndarray]]:
    """Digit-like regions of the ink: (x, y, w, h, component ids) each.

    Specks are dropped; fragments of one digit are joined (see :func:`join_fragments`); regions
    too small, too wide or as large as the whole picture are dropped.
    """
    ids = np.flatnonzero(ink.real)
    boxes = ink.boxes[ids].astype(np.int64)
    speck = max(2, int(0.35 * min_height))
    keep = np.maximum(boxes[:, 2], boxes[:, 3]) >= speck
    boxes, ids = boxes[keep], ids[keep]
    if len(ids) > MAX_COMPONENTS:
        # Counted a band of rows at a time: bincount's int64 copy of a whole 2000x2000 page of
        # labels is 32 MB of fresh pages, 0.3 s of page faults here.
        areas = np.zeros(len(ink.real), np.int64)
        for top in range(0, ink.labels.shape[0], AREA_ROWS):
            check()
            band = ink.labels[top : top + AREA_ROWS].ravel()
            areas += np.bincount(band, minlength=len(ink.real))
        areas = areas[ids]
        largest = np.argsort(-areas)[:MAX_COMPONENTS]
        boxes, ids = boxes[largest], ids[largest]
    if len(ids) == 0:
        return []

    def colour(index: int) -> np.ndarray:
        return ink_colour(ink, int(ids[index]), rgb, contrast)

    check()
    groups = join_fragments(boxes, colour, lines, check)
    height, width = ink.labels.shape
    regions = []
    for members in groups:
        x0 = int(boxes[members, 0].min())
        y0 = int(boxes[members, 1].min())
        x1 = int((boxes[members, 0] + boxes[members, 2]).max())
        y1 = int((boxes[members, 1] + boxes[members, 3]).max())
        w, h = x1 - x0, y1 - y0
        if h < min_height or w > MAX_TOUCHING_WIDTH * h:
            continue
        if h >= 0.95 * height and w >= 0.95 * width and min(height, width) > 2 * MNIST_SIZE:
            continue  # a frame or a page edge, not a digit
        regions.append((x0, y0, w, h, ids[members]))
    return regions


def ink_colour(ink: Ink, component: int, rgb: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """A component's ink colour in [0, 1]: its mean colour weighted towards its strongest pixels."""
    x, y, w, h = (int(v) for v in ink.boxes[component])
    window = slice(y, y + h), slice(x, x + w)
    inside = ink.labels[window] == component
    weight = contrast[window][inside].astype(np.float64) ** 4
    total = weight.sum() + 1e-12
    return (rgb[window][inside] * weight[:, None]).sum(axis=0) / (255 * total)


def join_fragments(
    boxes: np.ndarray,
    colour: Callable[[int], np.ndarray],
    lines: np.ndarray | None,
    check: Check = no_check,
) -> list[np.ndarray]:
    """Group indices of components that are pieces of one digit (union-find over joined pairs).

    Two components are joined when they share columns, are stacked with a small gap (or
    overlap), have the same ink colour (``colour(index)``, asked only for such pairs), and either
    the smaller is a flat bar on top of the other and no wider than a digit (a 5's or a 7's top
    drawn apart) or a removed line ran between them or through both. A small digit written just
    above another (a label), a bar under a digit (an underline) and a line under several digits
    stay apart.
    """
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    widths, heights = boxes[:, 2], boxes[:, 3]
    shared_columns = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    gap = np.maximum(y0[:, None], y0[None]) - np.minimum(y1[:, None], y1[None])
    taller = np.maximum(heights[:, None], heights[None])
    stacked = (shared_columns >= 0.5 * np.minimum(widths[:, None], widths[None])) & (
        gap <= 0.15 * taller + 1
    )
    parent = np.arange(len(boxes))
    colours: dict[int, np.ndarray] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for count, (i, j) in enumerate(zip(*np.nonzero(np.triu(stacked, k=1)), strict=True)):
        if count % CHECK_EVERY == 0:
            check()
        smaller = i if heights[i] < heights[j] else j
        other = j if smaller == i else i
        # A top bar (a 5's or a 7's) no wider than a digit; a bar below is an underline.
        size = max(widths[other], heights[other])
        flat = 1.5 * heights[smaller] <= widths[smaller] <= 1.2 * size and y0[smaller] < y0[other]
        left, right = max(x0[i], x0[j]), min(x1[i], x1[j])
        # The rows between them, or, where they overlap, the rows they share.
        facing = sorted((min(y1[i], y1[j]), max(y0[i], y0[j])))
        top, bottom = facing[0] - 1, facing[1] + 1
        bridged = lines is not None and bool(lines[max(0, top) : bottom, left:right].any())
        if not (flat or bridged):
            continue
        for k in (int(i), int(j)):
            if k not in colours:
                colours[k] = colour(k)
        if np.sqrt(((colours[int(i)] - colours[int(j)]) ** 2).mean()) <= 0.2:
            parent[root(int(i))] = root(int(j))
    roots = np.array([root(i) for i in range(len(boxes))])
    # sorted(set()), not np.unique: numpy's unique imports numpy.ma on first use (9 ms of a
    # cold `digits predict`).
    return [np.nonzero(roots == r)[0] for r in sorted(set(roots.tolist()))]


def original_box(box: Box, scale: float, image: Any) -> Box:
    """A working-resolution box in the original picture's pixels, clipped to the picture."""
    height, width = np.shape(image)[:2]
    x, y, w, h = box
    x0 = min(width - 1, max(0, math.floor(x / scale)))
    y0 = min(height - 1, max(0, math.floor(y / scale)))
    x1 = min(width, max(x0 + 1, math.ceil((x + w) / scale)))
    y1 = min(height, max(y0 + 1, math.ceil((y + h) / scale)))
    return (x0, y0, x1 - x0, y1 - y0)
