"""What the finder gives: the digits read from a picture, in reading order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: width, height, text, digits (label, confidence, box, probabilities)."""
        return {
            "width": self.width,
            "height": self.height,
            "text": self.text,
            "digits": [
                {
                    "label": digit.label,
                    "confidence": digit.confidence,
                    "box": list(digit.box),
                    "probabilities": list(digit.probabilities),
                }
                for digit in self.digits
            ],
        }
