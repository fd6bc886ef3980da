"""Drawing readings back onto pictures: boxes and tags that stay inside the picture."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from digits_cli.drawing import annotate_image, place_tags, tag_layout
from digits_cli.finder import Digit, Reading


def reading_with(*boxes: tuple[int, int, int, int], confidence: float = 0.97) -> Reading:
    digits = [Digit(7, confidence, box, [0.0] * 10) for box in boxes]
    return Reading(0, 0, "7" * len(digits), digits)


def test_annotating_returns_a_new_picture_and_leaves_the_input_alone() -> None:
    picture = np.full((120, 160, 3), 255, np.uint8)
    before = picture.copy()
    annotated = annotate_image(picture, reading_with((40, 50, 20, 30)))
    assert annotated.shape == picture.shape and annotated.dtype == np.uint8
    assert (picture == before).all()
    assert (annotated != picture).any(axis=2).sum() > 100


def test_the_box_is_drawn_around_the_digit() -> None:
    picture = np.full((120, 160, 3), 255, np.uint8)
    annotated = annotate_image(picture, reading_with((40, 60, 20, 30)))
    changed = (annotated != picture).any(axis=2)
    assert changed[60:90, 40].all() and changed[60:90, 59].all()  # left and right sides
    assert not changed[70:80, 45:55].any()  # the digit itself stays visible


def test_boxes_are_legible_on_white_and_on_black() -> None:
    for shade in (0, 255):
        picture = np.full((100, 100, 3), shade, np.uint8)
        annotated = annotate_image(picture, reading_with((30, 40, 20, 30)))
        side = annotated[45:65, 30].astype(int)
        assert np.abs(side - shade).max() > 100  # a line of contrasting colour on any paper


def test_no_digits_draws_nothing() -> None:
    picture = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    assert (annotate_image(picture, Reading(60, 50, "", [])) == picture).all()


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(12, 2000),
    width=st.integers(12, 2000),
    corner=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    size=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    confidence=st.floats(0, 1),
)
def test_tags_stay_inside_the_picture(
    height: int,
    width: int,
    corner: tuple[float, float],
    size: tuple[float, float],
    confidence: float,
) -> None:
    x, y = int(corner[0] * (width - 1)), int(corner[1] * (height - 1))
    w = max(1, int(size[0] * (width - x)))
    h = max(1, int(size[1] * (height - y)))
    (left, top, right, bottom), *_ = tag_layout(
        f"7 {confidence:.2f}", (x, y, w, h), (height, width)
    )
    assert 0 <= left <= right < width
    assert 0 <= top <= bottom < height


def test_the_tag_goes_above_the_box_when_there_is_room() -> None:
    (left, _, _, bottom), *_ = tag_layout("3 0.99", (100, 200, 30, 40), (480, 640))
    assert bottom < 200 and left == 100


def test_the_tag_goes_below_a_box_at_the_top_edge() -> None:
    (_, top, _, _), *_ = tag_layout("3 0.99", (100, 0, 30, 40), (480, 640))
    assert top >= 40


def test_the_tag_of_a_box_at_the_right_edge_is_shifted_left() -> None:
    (left, _, right, _), *_ = tag_layout("3 0.99", (630, 200, 10, 40), (480, 640))
    assert right <= 639 and left < 630


def grid_reading(rows: int, columns: int, pitch_x: int, pitch_y: int, w: int, h: int) -> Reading:
    boxes = [
        (20 + c * pitch_x, 30 + r * pitch_y, w, h) for r in range(rows) for c in range(columns)
    ]
    return reading_with(*boxes)


def covered_by_tags(annotated: np.ndarray, picture: np.ndarray, box: tuple) -> float:
    """The share of a digit box's inside (its outline left out) that the drawing changed."""
    x, y, w, h = box
    inside = (annotated != picture).any(axis=2)[y + 5 : y + h - 5, x + 5 : x + w - 5]
    return float(inside.mean())


def test_tags_on_a_dense_page_cover_no_digit() -> None:
    # A scanned 10x10 grid: rows closer than a full tag is tall; no digit may be hidden.
    picture = np.full((1000, 1400, 3), 245, np.uint8)
    reading = grid_reading(10, 10, 130, 90, 50, 70)
    annotated = annotate_image(picture, reading)
    for digit in reading.digits:
        assert covered_by_tags(annotated, picture, digit.box) == 0


def test_tags_on_a_dense_page_turn_compact_and_stay_legible() -> None:
    picture = np.full((1000, 1400, 3), 245, np.uint8)
    reading = grid_reading(10, 10, 130, 90, 50, 70)
    _, covering = place_tags(["7 0.97"] * 100, [d.box for d in reading.digits], (1000, 1400))
    assert covering > 10  # full tags would not fit ...
    annotated = annotate_image(picture, reading)
    x, y, w, h = reading.digits[0].box
    beside = (annotated != picture).any(axis=2)[y : y + h, x + w + 2 : x + w + 60]
    rows = np.flatnonzero(beside.any(axis=1))
    assert rows.size and rows[-1] - rows[0] + 1 >= 0.3 * h  # ... so a label tall enough to read


def test_a_sparse_page_keeps_label_and_confidence_tags() -> None:
    tags, covering = place_tags(
        ["3 0.97", "4 0.91"], [(100, 200, 30, 40), (300, 200, 30, 40)], (480, 640)
    )
    assert covering == 0 and [tag[0] for tag in tags] == ["3 0.97", "4 0.91"]
