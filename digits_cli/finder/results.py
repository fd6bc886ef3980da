"""What the finder gives: the digits read from a picture, in reading order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Box = tuple[int, int, int, int]
# Called between the finder's steps and every few items of its loops; raises to stop the work
# (a server's deadline). The finder stays pure: the caller decides what stopping means.
Check = Callable[[], None]
# Loops call their check once every this many items.
CHECK_EVERY = 16


def no_check() -> None:
    """Never stops the work."""


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
