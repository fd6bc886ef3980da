"""What the finder gives: the digits read from a picture, in reading order."""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[int, int, int, int]


@dataclass
class Digit:
    """One digit read from a picture."""

    label: int
    confidence: float
    box: Box
    probabilities: list[float]


@dataclass
class Reading:
    """Every digit read from a picture, in reading order, and the text they spell."""

    width: int
    height: int
    text: str
    digits: list[Digit]
