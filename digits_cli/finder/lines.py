"""Drawn lines (rules, margins, underlines, form fields) cut out of the ink."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from digits_cli.finder.crop import SQUARE_3, median, percentile
from digits_cli.finder.ink import MAX_WIDTH_RATIO, Ink, Run, label_ink, thin_runs
from digits_cli.finder.results import CHECK_EVERY, Box, Check, no_check

# A vertical line spans this share of the picture's height, or is this many times taller than
# the tallest digit-sized ink; anything shorter is most likely a 1. A lone horizontal bar is
# also this many times longer than the tallest digit (else it may be a 7's or a 5's top).
LINE_SPAN = 0.9
LONG_LINE = 2.5


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
            ragged = 2 * line_thickness(run) + 2
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


def line_thickness(run: Run) -> float:
    """A horizontal run's own thickness, the first quartile of its columns': a digit's stroke
    lying along part of it thickens it only there."""
    return percentile(run.inside.sum(axis=0), 25)


def underlines(run: Run, extent: int, attached: Box | None) -> bool:
    """Whether a run lies under all the ink touching it and reaches out beyond it on both sides:
    a line drawn under a digit, not a 2's base (which its stroke meets at an end) nor a bar that
    ink crosses (a 4's, a 7's)."""
    if not extent or attached is None:
        return False
    x, y, w, h = attached
    reach = max(2 * line_thickness(run), 0.1 * extent)
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
    grow = max(2, round(line_thickness(run)))
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
