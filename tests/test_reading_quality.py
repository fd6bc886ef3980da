"""The shipped model's reading quality, checked on every CI run (`.ci/run` runs `make run` first):
every digit of the shared real pictures found and read right, and nothing else detected.

The champion is models/champion/model.onnx (``$DIGITS_CHAMPION`` overrides it); without it, as in a
clone where `make run` has not run, these tests skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REAL_IMAGES

from digits_cli.config import Settings
from digits_cli.inference import DigitReader, load_model

CHAMPION = Path(
    os.environ.get("DIGITS_CHAMPION", Path(__file__).parents[1] / "models/champion/model.onnx")
)
TRUTH: dict[str, list[dict]] = json.loads((REAL_IMAGES / "ground-truth.json").read_text())["images"]

pytestmark = pytest.mark.champion


@pytest.fixture(scope="module")
def reader() -> DigitReader:
    if not CHAMPION.is_file():
        pytest.skip(f"{CHAMPION} not found: run `make run` to test the shipped model")
    settings = Settings()
    return DigitReader(load_model(str(CHAMPION), settings), settings.segment)


def matched(
    found: list[tuple[int, tuple[int, int, int, int]]], truth: list[dict]
) -> tuple[list[tuple[int, int | None]], list]:
    """(true label, label read) for each true digit (None where nothing was found in it), and the
    detections left over. ground-truth.json's rule: a detection belongs to a true digit when its
    centre is inside the digit's box grown by 20% each side; one detection to each digit, the
    nearest centre, smallest true boxes first (a small label may sit inside a big digit's margin).
    """
    left = list(found)
    read: dict[int, int | None] = {}
    for index in sorted(range(len(truth)), key=lambda i: truth[i]["box"][2] * truth[i]["box"][3]):
        x, y, w, h = truth[index]["box"]

        def centre(detection: tuple[int, tuple[int, int, int, int]]) -> tuple[float, float]:
            fx, fy, fw, fh = detection[1]
            return fx + fw / 2, fy + fh / 2

        inside = [
            d
            for d in left
            if x - 0.2 * w <= centre(d)[0] <= x + 1.2 * w
            and y - 0.2 * h <= centre(d)[1] <= y + 1.2 * h
        ]
        hit = min(
            inside,
            key=lambda d: (centre(d)[0] - x - w / 2) ** 2 + (centre(d)[1] - y - h / 2) ** 2,
            default=None,
        )
        if hit is not None:
            left.remove(hit)
        read[index] = None if hit is None else hit[0]
    return [(true["label"], read[i]) for i, true in enumerate(truth)], left


def test_the_shared_real_pictures_hold_31_labelled_digits() -> None:
    assert sum(len(digits) for digits in TRUTH.values()) == 31


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_every_digit_of_a_real_picture_is_read_right_and_nothing_else_is_found(
    name: str, reader: DigitReader
) -> None:
    _, reading = reader.read_file(REAL_IMAGES / name)
    found = [(digit.label, tuple(digit.box)) for digit in reading.digits]
    pairs, extra = matched(found, TRUTH[name])
    assert pairs == [(true["label"], true["label"]) for true in TRUTH[name]]
    assert extra == [], "false detections"
