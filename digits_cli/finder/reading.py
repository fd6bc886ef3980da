"""Reading a picture: find, classify (whole or split), keep the sure, put in reading order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digits_cli.config import SegmentSettings
from digits_cli.finder.order import arrange
from digits_cli.finder.regions import Candidate, find_digits
from digits_cli.finder.results import Digit, Reading

SURE = 0.9


def read_digits(
    image: np.ndarray, classify: Callable[[np.ndarray], np.ndarray], cfg: SegmentSettings
) -> Reading:
    """Find, classify and order every digit of ``image``.

    ``classify`` maps crops (N, 28, 28) float32 in [0, 1] to probabilities (N, 10). All regions
    are classified in one batch; wide regions read with less than ``SURE`` confidence may be
    digits touching, and their parts are then classified in a second batch. Digits whose
    confidence is under ``cfg.min_confidence`` are dropped.
    """
    shape = np.shape(image)
    height, width = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
    candidates = find_digits(image, cfg)
    if not candidates:
        return Reading(width, height, "", [])
    by_id = classify_all(candidates, classify)
    unsure = [c for c in candidates if c.splitter is not None and by_id[id(c)].max() < SURE]
    for candidate in unsure:
        candidate.split()
    parts = [part for candidate in unsure for part in with_parts(candidate)[1:]]
    if parts:
        by_id |= classify_all(parts, classify)
    digits = []
    for candidate in candidates:
        for chosen in choose_reading(candidate, by_id)[0]:
            row = by_id[id(chosen)]
            label = int(np.argmax(row))
            if row[label] >= cfg.min_confidence:
                digits.append(Digit(label, float(row[label]), chosen.box, [float(p) for p in row]))
    lines = arrange(digits, cfg.number_gap)
    ordered = [digit for line in lines for number in line for digit in number]
    text = "\n".join(
        " ".join("".join(str(digit.label) for digit in number) for number in line) for line in lines
    )
    return Reading(width, height, text, ordered)


def classify_all(
    candidates: list[Candidate], classify: Callable[[np.ndarray], np.ndarray]
) -> dict[int, np.ndarray]:
    """Probabilities (float64) of every candidate, in one batch, by the candidate's id."""
    probabilities = np.asarray(classify(np.stack([c.crop for c in candidates])), dtype=np.float64)
    return {id(c): row for c, row in zip(candidates, probabilities, strict=True)}


def with_parts(candidate: Candidate) -> list[Candidate]:
    """The candidate and, recursively, its split parts."""
    return [candidate, *(c for part in candidate.parts for c in with_parts(part))]


def choose_reading(
    candidate: Candidate, probabilities: dict[int, np.ndarray]
) -> tuple[list[Candidate], float]:
    """Read a region whole or split, whichever is surer: the pieces and their weakest confidence."""
    whole = float(probabilities[id(candidate)].max())
    if not candidate.parts:
        return [candidate], whole
    pieces, weakest = [], 1.0
    for part in candidate.parts:
        part_pieces, part_weakest = choose_reading(part, probabilities)
        pieces += part_pieces
        weakest = min(weakest, part_weakest)
    return (pieces, weakest) if weakest > whole else ([candidate], whole)
