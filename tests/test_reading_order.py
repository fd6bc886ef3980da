"""Reading order: rows followed as chains of neighbours, whatever their slant, drift or wave."""

from __future__ import annotations

import math

import pytest

from digits_cli.finder import Digit, arrange
from digits_cli.finder.order import PAIR_BLOCK


def digit_at(x: float, y: float, label: int, w: int = 20, h: int = 30) -> Digit:
    return Digit(label, 0.99, (round(x), round(y), w, h), [0.0] * 10)


def labels(lines: list[list[list[Digit]]]) -> list[list[list[int]]]:
    return [[[d.label for d in number] for number in line] for line in lines]


def grid(degrees: float, rows: int = 10, columns: int = 10, pitch: float = 60, step: float = 52):
    """A grid of lone digits (each its own number), every row rising or falling by ``degrees``."""
    slope = math.tan(math.radians(degrees))
    digits = []
    for row in range(rows):
        for column in range(columns):
            x = 20 + column * pitch
            wave = 4 * math.sin(column / 1.7 + row)
            digits.append(digit_at(x, 400 + row * step + slope * x + wave, (row + column) % 10))
    return digits


@pytest.mark.parametrize("degrees", [-10, -6, -3, 3, 6, 10])
def test_slanted_rows_of_a_grid_are_read_row_by_row(degrees: float) -> None:
    lines = arrange(grid(degrees), number_gap=0.6)
    assert labels(lines) == [[[(r + c) % 10] for c in range(10)] for r in range(10)]


def test_a_page_of_more_digits_than_one_block_of_pairs_is_read_row_by_row() -> None:
    # 40 rows of 10: digits are compared with all others PAIR_BLOCK at a time; rows straddle
    # the blocks' boundaries.
    assert PAIR_BLOCK < 40 * 10
    lines = arrange(grid(5, rows=40), number_gap=0.6)
    assert labels(lines) == [[[(r + c) % 10] for c in range(10)] for r in range(40)]


def test_numbers_on_a_slanted_line_stay_one_row_and_keep_their_grouping() -> None:
    slope = math.tan(math.radians(8))
    xs = [10, 32, 54, 130, 152, 250]  # 3 digits, 2 digits, 1 digit
    first = [
        digit_at(x, 100 + slope * x, label) for x, label in zip(xs, [1, 2, 3, 4, 5, 6], strict=True)
    ]
    second = [
        digit_at(x, 150 + slope * x, label) for x, label in zip(xs, [7, 8, 9, 0, 1, 2], strict=True)
    ]
    lines = arrange(second + first, number_gap=0.6)
    assert labels(lines) == [[[1, 2, 3], [4, 5], [6]], [[7, 8, 9], [0, 1], [2]]]


def test_small_digits_beside_big_ones_on_one_baseline_are_one_row() -> None:
    # Price-tag style: big digits, then small ones sharing the baseline, then big again.
    big = [digit_at(10, 100, 1, 40, 80), digit_at(55, 100, 2, 40, 80)]
    small = [digit_at(190, 150, 3, 15, 30), digit_at(208, 150, 4, 15, 30)]
    later = [digit_at(330, 100, 5, 40, 80)]
    lines = arrange(later + small + big, number_gap=0.6)
    assert labels(lines) == [[[1, 2], [3, 4], [5]]]
