"""Reading order: digits as rows (chains of neighbours) of numbers.

A row is followed from digit to digit: each digit links to the nearest digit on its right that
lies on the same line, the line's slope being the page's own (measured from the surest links),
so rows slanted or drifting by ten degrees or so, and wavy baselines, stay whole however many
rows there are. Rows broken by a wide gap are joined again when they share a band; rows are then
read top to bottom, and within a row a wide gap starts a new number.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np

from digits_cli.finder.results import Digit

# A link spans a gap of at most this many digit heights (the taller of the two).
MAX_LINK_GAP = 8.0
# Linked digits' centres, with the page's slope taken out, differ by at most this share of the
# taller one's height, or their boxes share at least this share of the shorter one's height.
LINK_DRIFT = 0.4
LINK_OVERLAP = 0.5
# The steepest slope a link is allowed before the page's slope is known, and the slope the
# surest links measure at most (tan of about 14 degrees).
MAX_SLOPE = 0.25
# Links closer than this many heights measure the page's slope.
SURE_GAP = 1.5
# Two digits more different in height than this are not neighbours in a number.
MAX_HEIGHT_RATIO = 3.0
# Digits compared with every digit at once (see blocks).
PAIR_BLOCK = 256


def arrange(
    digits: list[Digit], number_gap: float, fields: list[int] | None = None
) -> list[list[list[Digit]]]:
    """Digits as rows (top to bottom) of numbers (left to right) of digits.

    Within a row a new number starts where the gap between neighbours exceeds ``number_gap``
    times their mean height. Digits written in one printed form field (``fields``: each digit's
    field, -1 for none) are one number whatever the gaps; a new field starts a new number.
    """
    if not digits:
        return []
    boxes = np.array([d.box for d in digits], np.float64)
    slope = page_slope(boxes)
    field = np.array(fields if fields is not None else [-1] * len(digits))
    chains = link_rows(boxes, slope, field)
    rows = join_rows(chains, boxes, slope)
    lines = []
    for row in rows:
        numbers = [[digits[row[0]]]]
        for i, j in itertools.pairwise(row):
            left, right = digits[i], digits[j]
            gap = right.box[0] - (left.box[0] + left.box[2])
            apart = gap > number_gap * (left.box[3] + right.box[3]) / 2
            if field[i] >= 0 or field[j] >= 0:
                apart = field[i] != field[j]
            if apart:
                numbers.append([])
            numbers[-1].append(right)
        lines.append(numbers)
    return lines


def centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2


def page_slope(boxes: np.ndarray) -> float:
    """The rows' slope (dy/dx), the median of close neighbours' slopes; 0 if none are close."""
    cx, cy = centres(boxes)
    heights = boxes[:, 3]
    slopes, weights = [], []
    for rows in blocks(len(boxes)):
        # Each digit (a row of the block) against every digit (a column).
        dx = cx - cx[rows]
        gap = boxes[:, 0] - (boxes[rows, 0] + boxes[rows, 2])
        tall = np.maximum(heights, heights[rows])
        ok = (
            (dx > 0)
            & (gap <= SURE_GAP * tall)
            & (np.abs(cy - cy[rows]) <= MAX_SLOPE * dx + 0.2 * tall)
        )
        ok &= tall <= 1.5 * np.minimum(heights, heights[rows])
        found = ok.any(axis=1)
        # The nearest such neighbour on the right (the first, when two are as near).
        nearest = np.argmin(np.where(ok, dx, np.inf), axis=1)[found]
        start = rows[found, 0]
        slopes.extend(((cy[nearest] - cy[start]) / dx[found, nearest]).tolist())
        weights.extend(dx[found, nearest].tolist())
    if len(slopes) < 2:
        return 0.0
    return float(
        np.clip(weighted_median(np.array(slopes), np.array(weights)), -MAX_SLOPE, MAX_SLOPE)
    )


def blocks(count: int) -> list[np.ndarray]:
    """Indices 0..count-1 as columns (k, 1) of at most PAIR_BLOCK, to compare each with all:
    whole pages at once, in bounded memory (a block's pairs are PAIR_BLOCK x count)."""
    return [
        np.arange(start, min(count, start + PAIR_BLOCK))[:, None]
        for start in range(0, count, PAIR_BLOCK)
    ]


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def link_rows(boxes: np.ndarray, slope: float, field: np.ndarray) -> list[list[int]]:
    """Chains of digit indices, left to right: each digit linked to its nearest right neighbour
    on the same line (greedily, nearest links first, each digit with one left and one right).
    Digits of one form ``field`` (-1: none) are on one line however they stray in their boxes."""
    cx, cy = centres(boxes)
    x0, y0, w, h = boxes.T
    # Positions with the page's slope taken out: a slanted row becomes level.
    level = y0 - slope * cx
    links: list[tuple[float, int, int]] = []
    for rows in blocks(len(boxes)):
        # Each digit (a row of the block) against every digit (a column).
        tall = np.maximum(h, h[rows])
        short = np.minimum(h, h[rows])
        gap = x0 - (x0[rows] + w[rows])
        dx = cx - cx[rows]
        drift = np.abs((cy - slope * cx) - (cy[rows] - slope * cx[rows]))
        shared = np.minimum(level + h, level[rows] + h[rows]) - np.maximum(level, level[rows])
        same_line = (drift <= LINK_DRIFT * tall) | (shared >= LINK_OVERLAP * short)
        same_line |= (field == field[rows]) & (field >= 0)
        ok = (
            (dx > 0) & (gap <= MAX_LINK_GAP * tall) & same_line & (tall <= MAX_HEIGHT_RATIO * short)
        )
        # Overlapping boxes side by side (touching digits) are neighbours too.
        ok &= gap >= -0.6 * np.minimum(w, w[rows])
        i, j = np.nonzero(ok)
        cost = np.maximum(0.0, gap[i, j]) / tall[i, j] + 2.0 * drift[i, j] / tall[i, j]
        links.extend(zip(cost.tolist(), rows[i, 0].tolist(), j.tolist(), strict=True))
    links.sort()
    right = [-1] * len(boxes)
    left = [-1] * len(boxes)
    for _, a, b in links:
        if right[a] < 0 and left[b] < 0:
            right[a], left[b] = b, a
    chains = []
    for start in range(len(boxes)):
        if left[start] >= 0:
            continue
        chain, k = [start], right[start]
        while k >= 0:
            chain.append(k)
            k = right[k]
        chains.append(chain)
    return chains


def join_rows(chains: list[list[int]], boxes: np.ndarray, slope: float) -> list[list[int]]:
    """Chains sharing a band (slope taken out) and apart side by side are one row; rows sorted
    top to bottom, each left to right."""
    cx, _ = centres(boxes)
    top = boxes[:, 1] - slope * cx
    bottom = top + boxes[:, 3]

    def band(chain: list[int]) -> tuple[float, float]:
        return statistics.median(top[chain]), statistics.median(bottom[chain])

    def span(chain: list[int]) -> tuple[float, float]:
        return float(boxes[chain, 0].min()), float((boxes[chain, 0] + boxes[chain, 2]).max())

    rows = sorted(chains, key=lambda chain: -len(chain))
    merged: list[list[int]] = []
    # Each merged row's band and span, kept beside it (recomputed only when it grows).
    bands: list[tuple[float, float]] = []
    spans: list[tuple[float, float]] = []
    for chain in rows:
        chain_top, chain_bottom = band(chain)
        chain_left, chain_right = span(chain)
        best, best_overlap = -1, 0.5
        for index, ((row_top, row_bottom), (row_left, row_right)) in enumerate(
            zip(bands, spans, strict=True)
        ):
            shared = min(chain_bottom, row_bottom) - max(chain_top, row_top)
            overlap = shared / max(1.0, min(chain_bottom - chain_top, row_bottom - row_top))
            apart = chain_left >= row_right - 1 or chain_right <= row_left + 1
            if apart and overlap >= best_overlap:
                best, best_overlap = index, overlap
        if best < 0:
            merged.append(list(chain))
            bands.append((chain_top, chain_bottom))
            spans.append((chain_left, chain_right))
        else:
            merged[best].extend(chain)
            bands[best], spans[best] = band(merged[best]), span(merged[best])
    for row in merged:
        row.sort(key=lambda i: cx[i])
    merged.sort(key=lambda row: statistics.median((top[row] + bottom[row]) / 2))
    return merged
