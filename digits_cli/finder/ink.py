"""Ink components, labelled once, and drawn lines (rules, margins, underlines) cut out of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from digits_cli.finder.crop import SQUARE_3, median, percentile, quantile
from digits_cli.finder.results import CHECK_EVERY, Box, Check, no_check

# A component is at most this many times wider than tall (wide handwritten 2s reach ~1.9).
MAX_WIDTH_RATIO = 2.2
# A line is at least this many times longer than thick.
LINE_ELONGATION = 10
# A vertical line spans this share of the picture's height, or is this many times taller than
# the tallest digit-sized ink; anything shorter is most likely a 1. A lone horizontal bar is
# also this many times longer than the tallest digit (else it may be a 7's or a 5's top).
LINE_SPAN = 0.9
LONG_LINE = 2.5
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


def remove_lines(
    ink: Ink, mask: np.ndarray, strong: np.ndarray, min_height: int, check: Check = no_check
) -> tuple[Ink, np.ndarray | None, list[Box]]:
    """Cut long straight lines (rules, margins, underlines, strike-throughs) out of the ink.

    A thin straight horizontal run is a line when it is much longer than the ink attached to it
    is tall (a rule under or through digits, while the bar of a 7 or the base of a 2 stays), or,
    alone, when a fifth of the picture wide and much longer than the tallest digit (so a 7's top
    bar drawn apart stays). A vertical run is most likely a 1 (or a stroke of a 4): it is a line
    only when much longer than the tallest digit, or, with no digit about, when it spans nearly
    the whole picture. Printed form fields (boxes, combs: see :func:`forms.find_fields`) are cut
    out whole, walls and all. What is left must again hold ``strong`` ink, so the faint ragged
    edges of a cut line do not become digits. Returns the ink without the lines, the lines (None
    if there were none) and the form fields' boxes.
    """
    from digits_cli.finder.forms import find_fields

    height, width = mask.shape
    partly_thick: list[Run] = []  # lines under a digit lying along them, perhaps
    across = thin_runs(ink, mask, (1, 3 * min_height), partly_thick=partly_thick)
    down = thin_runs(ink, mask, (max(4 * min_height, height // 5), 1))
    if not across and not down and not partly_thick:
        return ink, None, []
    check()
    walls, form_lines, fields = find_fields(ink, mask, across, min_height, check)
    check()
    import cv2

    lines = np.zeros_like(mask)
    if walls or form_lines:
        for wall in walls:
            lines[wall.window][wall.inside] = 1  # already just the wall's own pixels
        for run in form_lines:
            cut_run(run, lines)
        # A printed line's soft edges too, else they stay behind as slivers beside the cut.
        lines = cv2.dilate(lines, SQUARE_3) & mask
    # Ink that is mostly one vertical run (a rule, or a 1) does not tell how tall digits are.
    bars = {run.owner for run in down if run.length >= 0.8 * ink.boxes[run.owner, 3]}
    tallest = tallest_digit(ink, bars, min_height, height)
    # Runs that are lines whatever is attached (a margin, a rule across the page): with their
    # soft edges, they are no ink attached to another run. A short run (a 7's cross-bar) is.
    sure = np.zeros_like(mask)
    for run in across + down:
        if run.length >= (
            max(width // 5, LONG_LINE * tallest) if run.horizontal else LINE_SPAN * height
        ):
            sure[run.window][run.inside] = 1
    sure = cv2.dilate(sure, SQUARE_3)
    # Only a line at the foot of its ink can be drawn under a digit (see underlines).
    every = across + [
        run
        for run in partly_thick
        if run.y + 2 * run.inside.shape[0] >= ink.boxes[run.owner, 1] + ink.boxes[run.owner, 3]
    ]
    for index, (run, (extent, attached)) in enumerate(
        zip(every, attached_extents(ink, sure, every, check), strict=True)
    ):
        # A bar's own rounded ends and soft edges are not ink attached to it.
        if extent <= 2 * run.inside.shape[0] + 2:
            extent = 0
        long = 2 * extent if extent else max(width // 5, LONG_LINE * tallest)
        thin = index < len(across)
        if thin and run.length >= long:
            cut_run(run, lines)
        elif underlines(run, extent, attached):
            cut_underline(run, lines, mask)
    for run in down:
        if run.length >= LINE_SPAN * height or (tallest and run.length >= LONG_LINE * tallest):
            cut_run(run, lines)
    check()
    if not lines.any():
        return ink, None, fields
    kept = ink.real[ink.labels]
    kept[lines.view(bool)] = False
    return label_ink(kept.view(np.uint8), strong & kept), lines, fields


def attached_extents(
    ink: Ink, sure: np.ndarray, runs: list[Run], check: Check = no_check
) -> list[tuple[int, Box | None]]:
    """For each run, how tall the tallest piece of ink touching it is, it and the ``sure`` lines
    (grown by a pixel) left out, and the box (page pixels) of those pieces more than twice as tall
    as the run is thick (None: none).

    Pieces, not their span: a rule on a ruled page joined to the others by a margin line has
    only the digits standing on it attached, not the whole page; a 7's cross-bar still joins
    the halves of its stem. The pieces are flood-filled from the run's surroundings, so a run
    costs what touches it, not its component's size: labelling the whole component for every
    run took 30 s on a ruled page of 8,000 marks, one component thousands of runs long.
    """
    import cv2

    fill = 8 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8)
    extents: list[tuple[int, Box | None]] = [(0, None)] * len(runs)
    by_owner: dict[int, list[int]] = {}
    for index, run in enumerate(runs):
        by_owner.setdefault(run.owner, []).append(index)
    for owner, indices in by_owner.items():
        x, y, w, h = (int(v) for v in ink.boxes[owner])
        # The component's ink but the sure lines, and the flood fill's mask (1 px border).
        free = (ink.labels[y : y + h, x : x + w] == owner) & (sure[y : y + h, x : x + w] == 0)
        free = free.view(np.uint8)
        filled = np.zeros((h + 2, w + 2), np.uint8)
        for count, index in enumerate(indices):
            if count % CHECK_EVERY == 0:
                check()
            run = runs[index]
            rows, cols = run.inside.shape
            top, left = run.y - y, run.x - x
            if top < -rows or left < -cols or top > h or left > w:
                continue  # not in its component's window: nothing is attached
            # The run and 2 px around it, within the component's window.
            y0, x0, y1, x1 = (
                max(0, top - 2),
                max(0, left - 2),
                min(h, top + rows + 2),
                min(w, left + cols + 2),
            )
            if y0 >= y1 or x0 >= x1:
                continue
            own = np.zeros((rows + 4, cols + 4), np.uint8)
            own[2 : 2 + rows, 2 : 2 + cols] = run.inside
            own = own[y0 - top + 2 : y1 - top + 2, x0 - left + 2 : x1 - left + 2]
            left_out = cv2.dilate(own, SQUARE_3).view(bool)
            # Two pixels out: what was left out around the run is a pixel wide.
            near = cv2.dilate(own, np.ones((5, 5), np.uint8)).view(bool)
            around = free[y0:y1, x0:x1]
            kept = around[left_out]
            around[left_out] = 0
            rects = []
            for seed_y, seed_x in zip(*np.nonzero(near & (around > 0)), strict=True):
                if not filled[y0 + seed_y + 1, x0 + seed_x + 1]:  # not in a piece filled already
                    seed = (int(x0 + seed_x), int(y0 + seed_y))
                    rects.append(cv2.floodFill(free, filled, seed, 1, 0, 0, fill)[3])
            for rect_x, rect_y, rect_w, rect_h in rects:
                filled[rect_y + 1 : rect_y + rect_h + 1, rect_x + 1 : rect_x + rect_w + 1] = 0
            around[left_out] = kept
            if not rects:
                continue
            # The pieces taller than the line is thick, twice over: not its own ragged edges.
            ragged = 2 * percentile(run.inside.sum(axis=0), 25) + 2
            big = [r for r in rects if r[3] > ragged]
            extents[index] = (max(r[3] for r in rects), bounding(big, (x, y)) if big else None)
    return extents


def bounding(rects: Sequence[Sequence[int]], origin: tuple[int, int]) -> Box:
    """The box holding every one of ``rects``, moved by ``origin``."""
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    return (origin[0] + x0, origin[1] + y0, x1 - x0, y1 - y0)


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
    found = []
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
        if not thin:
            # A line with a digit's stroke lying along part of it (a digit on its underline) is
            # thick only there: thin along a quarter of its length still.
            thickness = inside.sum(axis=0 if horizontal else 1)
            if partly_thick is not None and span >= elongation * percentile(thickness, 25):
                owner = int(ink.labels[y0 + row, x0 + col])
                if ink.real[owner] and (owners is None or owner in owners):
                    partly_thick.append(Run(x0 + x, y0 + y, inside, owner, horizontal))
            continue
        owner = int(ink.labels[y0 + row, x0 + col])
        if ink.real[owner] and (owners is None or owner in owners):
            found.append(Run(x0 + x, y0 + y, inside, owner, horizontal))
    return found


def underlines(run: Run, extent: int, attached: Box | None) -> bool:
    """Whether a run lies under all the ink touching it and reaches out beyond it on both sides:
    a line drawn under a digit, not a 2's base (which its stroke meets at an end) nor a bar that
    ink crosses (a 4's, a 7's)."""
    if not extent or attached is None:
        return False
    x, y, w, h = attached
    # The line's own thickness: a digit's stroke lying along part of it thickens it only there.
    thickness = percentile(run.inside.sum(axis=0), 25)
    reach = max(2 * thickness, 0.1 * extent)
    above = y + h <= run.y + run.inside.shape[0]
    return above and run.x <= x - reach and run.x + run.length >= x + w + reach


def tallest_digit(ink: Ink, bars: set[int], min_height: int, height: int) -> int:
    """The height of the tallest digit-sized component but ``bars`` (0 if none)."""
    widths, heights = ink.boxes[:, 2], ink.boxes[:, 3]
    tall = (heights >= min_height) & (widths <= MAX_WIDTH_RATIO * heights)
    tall &= ink.real & (heights < LINE_SPAN * height)
    tall[list(bars)] = False
    return int(heights[tall].max()) if tall.any() else 0


def cut_underline(run: Run, lines: np.ndarray, mask: np.ndarray) -> None:
    """Cut a line drawn under a digit (see underlines) as cut_run does, and what is left of it
    around the cut that no longer reaches beyond the line's band (its soft edges, a wavy line's
    bulge; not the digit lying along it), so that it stays behind as no sliver."""
    import cv2

    cut_run(run, lines)
    rows, cols = run.window
    grow = max(2, round(percentile(run.inside.sum(axis=0), 25)))
    height, width = mask.shape
    y0, y1 = max(0, rows.start - grow), min(height, rows.stop + grow)
    x0, x1 = max(0, cols.start - grow), min(width, cols.stop + grow)
    left = (mask[y0:y1, x0:x1] > 0) & (lines[y0:y1, x0:x1] == 0)
    count, pieces, stats, _ = cv2.connectedComponentsWithStats(left.view(np.uint8), connectivity=8)
    band = lines[y0:y1, x0:x1]
    for piece in range(1, count):
        x, y, w, h, _ = stats[piece]
        # A piece reaching the band's edge goes on beyond it (a digit): it stays.
        if x > 0 and y > 0 and x + w < x1 - x0 and y + h < y1 - y0:
            band[y : y + h, x : x + w][pieces[y : y + h, x : x + w] == piece] = 1


def cut_run(run: Run, lines: np.ndarray) -> None:
    """Mark a run as line, except where it is thicker than the line (a digit's stroke on it)."""
    thickness = run.inside.sum(axis=0 if run.horizontal else 1)
    thin = thickness <= median(thickness) + 1
    cut = run.inside & (thin[None, :] if run.horizontal else thin[:, None])
    lines[run.window][cut] = 1
