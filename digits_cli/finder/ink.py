"""Ink components, labelled once, and drawn lines (rules, margins, underlines) cut out of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits_cli.finder.crop import SQUARE_3, median
from digits_cli.finder.results import Box

# A component is at most this many times wider than tall (wide handwritten 2s reach ~1.9).
MAX_WIDTH_RATIO = 2.2
# A line is at least this many times longer than thick.
LINE_ELONGATION = 10
# A vertical line spans this share of the picture's height, or is this many times taller than
# the tallest digit-sized ink; anything shorter is most likely a 1. A lone horizontal bar is
# also this many times longer than the tallest digit (else it may be a 7's or a 5's top).
LINE_SPAN = 0.9
LONG_LINE = 2.5


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


def remove_lines(
    ink: Ink, mask: np.ndarray, strong: np.ndarray, min_height: int
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
    across = thin_runs(ink, mask, (1, 3 * min_height))
    down = thin_runs(ink, mask, (max(4 * min_height, height // 5), 1))
    if not across and not down:
        return ink, None, []
    walls, form_lines, fields = find_fields(ink, mask, across, min_height)
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
    for run in across:
        extent = attached_extent(ink, sure, run)
        # A bar's own rounded ends and soft edges are not ink attached to it.
        if extent <= 2 * run.inside.shape[0] + 2:
            extent = 0
        long = 2 * extent if extent else max(width // 5, LONG_LINE * tallest)
        if run.length >= long:
            cut_run(run, lines)
    for run in down:
        if run.length >= LINE_SPAN * height or (tallest and run.length >= LONG_LINE * tallest):
            cut_run(run, lines)
    if not lines.any():
        return ink, None, fields
    kept = ink.real[ink.labels]
    kept[lines.view(bool)] = False
    return label_ink(kept.view(np.uint8), strong & kept), lines, fields


def attached_extent(ink: Ink, sure: np.ndarray, run: Run) -> int:
    """How tall the tallest piece of ink touching ``run`` is, it and the ``sure`` lines (grown by
    a pixel) left out.

    Pieces, not their span: a rule on a ruled page joined to the others by a margin line has
    only the digits standing on it attached, not the whole page; a 7's cross-bar still joins
    the halves of its stem.
    """
    import cv2

    x, y, w, h = (int(v) for v in ink.boxes[run.owner])
    # The run's pixels in the component's window (the run may poke out of it by a pixel).
    pad_y, pad_x = run.inside.shape
    own = np.zeros((h + 2 * pad_y, w + 2 * pad_x), np.uint8)
    top, left = run.y - y + pad_y, run.x - x + pad_x
    if top < 0 or left < 0 or top + pad_y > own.shape[0] or left + pad_x > own.shape[1]:
        return 0
    own[top : top + pad_y, left : left + pad_x] = run.inside
    own = own[pad_y : pad_y + h, pad_x : pad_x + w]
    left_out = cv2.dilate(own, SQUARE_3) | sure[y : y + h, x : x + w]
    attached = (ink.labels[y : y + h, x : x + w] == run.owner) & (left_out == 0)
    if not attached.any():
        return 0
    _, pieces, stats, _ = cv2.connectedComponentsWithStats(
        attached.astype(np.uint8), None, None, None, 8
    )
    # Two pixels out: what was left out around the run is a pixel wide.
    near = cv2.dilate(own, np.ones((5, 5), np.uint8)).view(bool)
    touching = np.flatnonzero(np.bincount(pieces[near & attached], minlength=len(stats)))
    touching = touching[touching > 0]  # the pieces the run touches (bincount: no numpy.ma)
    return int(stats[touching, cv2.CC_STAT_HEIGHT].max()) if touching.size else 0


def thin_runs(
    ink: Ink,
    mask: np.ndarray,
    kernel: tuple[int, int],
    owners: set[int] | None = None,
    elongation: float = LINE_ELONGATION,
) -> list[Run]:
    """Thin straight runs of real ink at least ``kernel`` long (one row or one column), at least
    ``elongation`` times longer than thick, in the components ``owners`` (default: any)."""
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
        if span * span < elongation * area:
            continue
        col, row = (int(v) for v in contour[0, 0])
        window = runs[y : y + h, x : x + w]
        _, pieces = cv2.connectedComponents(window, connectivity=8)
        inside = pieces == pieces[row - y, col - x]
        owner = int(ink.labels[y0 + row, x0 + col])
        if ink.real[owner] and (owners is None or owner in owners):
            found.append(Run(x0 + x, y0 + y, inside, owner, horizontal))
    return found


def tallest_digit(ink: Ink, bars: set[int], min_height: int, height: int) -> int:
    """The height of the tallest digit-sized component but ``bars`` (0 if none)."""
    widths, heights = ink.boxes[:, 2], ink.boxes[:, 3]
    tall = (heights >= min_height) & (widths <= MAX_WIDTH_RATIO * heights)
    tall &= ink.real & (heights < LINE_SPAN * height)
    tall[list(bars)] = False
    return int(heights[tall].max()) if tall.any() else 0


def cut_run(run: Run, lines: np.ndarray) -> None:
    """Mark a run as line, except where it is thicker than the line (a digit's stroke on it)."""
    thickness = run.inside.sum(axis=0 if run.horizontal else 1)
    thin = thickness <= median(thickness) + 1
    cut = run.inside & (thin[None, :] if run.horizontal else thin[:, None])
    lines[run.window][cut] = 1
