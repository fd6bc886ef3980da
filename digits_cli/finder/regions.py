"""Digit-like regions of the ink, each with its MNIST-style crop (and, if wide, its split parts)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digits_cli.config import SegmentSettings
from digits_cli.finder.crop import MNIST_SIZE, ink_bounds, ink_strength, mnist_crop
from digits_cli.finder.ink import MAX_WIDTH_RATIO, Ink, label_ink, strong_in_shade
from digits_cli.finder.lines import remove_lines
from digits_cli.finder.looks import Looks, looks_of
from digits_cli.finder.paper import (
    colour_distance,
    estimate_background,
    ink_mask,
    ink_thresholds,
    line_colour,
    working_rgb,
)
from digits_cli.finder.results import CHECK_EVERY, Box, Check, no_check
from digits_cli.finder.touching import PIECE_WIDTH, cut_points, split_column, without_slivers

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
CUT_FROM = 1.5  # regions this many times wider than tall (one wide digit rarely is)
# Narrower ones, down to this, may be two digits touching: cut too when halving them fails.
PAIR_CUT_FROM = 1.0
# A split part is at least this share of its region's height (less is a sliver of a stroke).
MIN_PART = 0.55
# Beyond this many components the picture is noise; the largest ones are kept.
MAX_COMPONENTS = 400
AREA_ROWS = 128  # rows of labels counted at once


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
    # For a region of touching digits: pieces between likely cut columns, by their columns
    # (see cut_points); reading.best_cut reads it as the surest row of them. Made for regions
    # wider than PAIR_CUT_FROM; used at once beyond CUT_FROM, else when halving proved unsure.
    cutter: Callable[[], dict[tuple[int, int], Candidate]] | None = field(
        default=None, repr=False, compare=False
    )
    # Its cutter is used at once (wider than CUT_FROM), not only once halving proved unsure.
    cut_at_once: bool = False
    # The printed form field it is written in (digits of one field are one number), or -1.
    field: int = -1
    # Wider than any digit: digits touching, read only split.
    too_wide: bool = False
    # Working resolution over the original picture's (looks are measured at the former).
    scale: float = 1.0
    # For a piece read in place of its region: the region as found (reading.read_candidates).
    # (dataclasses.field by name: ``field`` is the form field's attribute from here on.)
    whole: Candidate | None = dataclasses.field(default=None, repr=False, compare=False)
    # The colour of the page's printed lines (form boxes, rules) taken out, as their departure
    # from the paper (RGB), the same for every region found on the page; None if there were none.
    lines_colour: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

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
    thresholds = ink_thresholds(cfg.min_contrast, noise)
    strong = strong_in_shade(ink, contrast, strong, background, sheet, thresholds, min_height)
    check()
    ink, lines, fields = remove_lines(ink, mask, strong, min_height, check)
    check()
    regions = find_regions(ink, lines, smooth, contrast, min_height, check)
    lines_colour = line_colour(smooth, background, lines)
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
        # Ink colours matter only beside printed lines (reading.plausible): measured only then.
        departure = (
            None
            if lines_colour is None
            else cv2.subtract(background[window], smooth[window], dtype=cv2.CV_16S)
        )
        candidate = make_candidate(
            own_contrast, own, (x, y), scale, image, min_height, departure=departure
        )
        if candidate is not None:
            candidate.field = field_of((x, y, w, h), fields)
            candidate.lines_colour = lines_colour
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
    departure: np.ndarray | None = None,
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
    departure = None if departure is None else departure[top:bottom, left:right]
    x, y = origin[0] + left, origin[1] + top
    h, w = own.shape
    strength = ink_strength(contrast, own)
    crop = mnist_crop(contrast, own, strength)
    if crop is None:
        return None
    box = original_box((x, y, w, h), scale, image)
    candidate = Candidate(box, crop, looks_of(contrast, own, strength, box, image, departure))
    candidate.too_wide = w > MAX_WIDTH_RATIO * h
    candidate.scale = scale
    if depth == 0 and candidate.too_wide:
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
                        contrast,
                        half,
                        (x, y),
                        scale,
                        image,
                        min_height,
                        depth + 1,
                        max_depth,
                        departure,
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
    if depth == 0 and w > PAIR_CUT_FROM * h:

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
                        contrast,
                        piece,
                        (x, y),
                        scale,
                        image,
                        min_height,
                        max_depth,
                        max_depth,
                        departure,
                    )
                    if part is not None and part.box[3] * scale >= max(
                        min_height / 2, MIN_PART * h
                    ):
                        pieces[left_edge, right_edge] = part
            return pieces

        candidate.cutter = cut
        candidate.cut_at_once = w > CUT_FROM * h
    return candidate


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
    the smaller is a flat bar on top of the other (itself no bar) and no wider than a digit (a
    5's or a 7's top drawn apart) or a removed line ran between them or through both. A small
    digit written just above another (a label), a bar under a digit (an underline), a line under
    several digits and a sliver lying on a line stay apart.
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

    def join_if_one_colour(i: int, j: int) -> None:
        for k in (i, j):
            if k not in colours:
                colours[k] = colour(k)
        if np.sqrt(((colours[i] - colours[j]) ** 2).mean()) <= 0.2:
            parent[root(i)] = root(j)

    for count, (i, j) in enumerate(zip(*np.nonzero(np.triu(stacked, k=1)), strict=True)):
        if count % CHECK_EVERY == 0:
            check()
        smaller = i if heights[i] < heights[j] else j
        other = j if smaller == i else i
        # A top bar (a 5's or a 7's) no wider than a digit; a bar below is an underline.
        size = max(widths[other], heights[other])
        flat = 1.5 * heights[smaller] <= widths[smaller] <= 1.2 * size and y0[smaller] < y0[other]
        flat &= widths[other] < 3 * heights[other]  # on a digit, not on a line
        left, right = max(x0[i], x0[j]), min(x1[i], x1[j])
        # The rows between them, or, where they overlap, the rows they share.
        facing = sorted((min(y1[i], y1[j]), max(y0[i], y0[j])))
        top, bottom = facing[0] - 1, facing[1] + 1
        bridged = lines is not None and bool(lines[max(0, top) : bottom, left:right].any())
        if flat or bridged:
            join_if_one_colour(int(i), int(j))
    if lines is not None:
        # Side by side across a removed upright line (squared paper's, a box's wall): the halves
        # of one digit the line ran through, when together they are no wider than a digit.
        shared_rows = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        apart = np.maximum(x0[:, None], x0[None]) - np.minimum(x1[:, None], x1[None])
        together = np.maximum(x1[:, None], x1[None]) - np.minimum(x0[:, None], x0[None])
        beside = (
            (shared_rows >= 0.5 * np.minimum(heights[:, None], heights[None]))
            & (apart >= 0)
            & (apart <= 0.15 * taller + 1)
            & (together <= 1.1 * taller)
        )
        for i, j in zip(*np.nonzero(np.triu(beside, k=1)), strict=True):
            left, right = sorted((int(i), int(j)), key=lambda k: x0[k])
            top, bottom = max(y0[i], y0[j]), min(y1[i], y1[j])
            if lines[top:bottom, x1[left] : x0[right] + 1].any():
                join_if_one_colour(left, right)
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
