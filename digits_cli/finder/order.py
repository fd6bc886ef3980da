"""Reading order: digits as rows of numbers."""

from __future__ import annotations

import itertools
import statistics

from digits_cli.finder.results import Digit


def arrange(digits: list[Digit], number_gap: float) -> list[list[list[Digit]]]:
    """Digits as rows (top to bottom) of numbers (left to right) of digits.

    A digit joins the row whose vertical band it overlaps most, by at least half the smaller
    height, so slightly sloping or uneven rows stay together. Within a row a new number starts
    where the gap between neighbours exceeds ``number_gap`` times their mean height.
    """
    rows: list[list[Digit]] = []
    for digit in sorted(digits, key=lambda d: d.box[1] + d.box[3] / 2):
        top, bottom = digit.box[1], digit.box[1] + digit.box[3]
        best, best_overlap = None, 0.5
        for row in rows:
            row_top = statistics.median([d.box[1] for d in row])
            row_bottom = statistics.median([d.box[1] + d.box[3] for d in row])
            shared = min(bottom, row_bottom) - max(top, row_top)
            overlap = shared / max(1.0, min(bottom - top, row_bottom - row_top))
            if overlap >= best_overlap:
                best, best_overlap = row, overlap
        if best is None:
            rows.append([digit])
        else:
            best.append(digit)
    rows.sort(key=lambda row: statistics.median([d.box[1] + d.box[3] / 2 for d in row]))
    lines = []
    for row in rows:
        row.sort(key=lambda d: d.box[0] + d.box[2] / 2)
        numbers = [[row[0]]]
        for left, right in itertools.pairwise(row):
            gap = right.box[0] - (left.box[0] + left.box[2])
            if gap > number_gap * (left.box[3] + right.box[3]) / 2:
                numbers.append([])
            numbers[-1].append(right)
        lines.append(numbers)
    return lines
