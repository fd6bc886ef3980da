"""Drawing what was read back onto the picture: a box and a "label confidence" tag per digit.

Boxes are two-tone (a bright line on a dark outline) and tags are bright with dark text and a
dark outline, so both stay legible on white paper, dark boards and anything between. Tags sit
above their box, or below or inside it near an edge, and are always kept inside the picture.
"""

from __future__ import annotations

import numpy as np

from digits_cli.finder import Reading

CONFIDENT = (60, 230, 60)  # green: confidence >= 0.9
UNSURE = (255, 170, 0)  # amber
OUTLINE = (0, 0, 0)
TEXT = (0, 0, 0)
CONFIDENT_FROM = 0.9
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX, without importing cv2 at module level
MIN_FONT_SCALE = 0.25


def annotate_image(rgb: np.ndarray, reading: Reading) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3 uint8) with each digit's box and its label and confidence."""
    import cv2

    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    line = max(1, round(max(height, width) / 500))
    for digit in reading.digits:
        colour = CONFIDENT if digit.confidence >= CONFIDENT_FROM else UNSURE
        x, y, w, h = digit.box
        right, bottom = min(width - 1, x + w - 1), min(height - 1, y + h - 1)
        cv2.rectangle(canvas, (x, y), (right, bottom), OUTLINE, line + 2, cv2.LINE_AA)
        cv2.rectangle(canvas, (x, y), (right, bottom), colour, line, cv2.LINE_AA)
        draw_tag(canvas, f"{digit.label} {digit.confidence:.2f}", (x, y, w, h), colour)
    return canvas


def draw_tag(canvas: np.ndarray, text: str, box: tuple[int, int, int, int], colour: tuple) -> None:
    """A filled, outlined tag holding ``text`` next to ``box``, inside the picture."""
    import cv2

    (left, top, right, bottom), scale, thickness, pad = tag_layout(text, box, canvas.shape[:2])
    cv2.rectangle(canvas, (left, top), (right, bottom), colour, cv2.FILLED)
    cv2.rectangle(canvas, (left, top), (right, bottom), OUTLINE, 1)
    (_, text_h), _ = cv2.getTextSize(text, FONT, scale, thickness)
    origin = (left + pad, top + pad + text_h)
    cv2.putText(canvas, text, origin, FONT, scale, TEXT, thickness, cv2.LINE_AA)


def tag_layout(
    text: str, box: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[tuple[int, int, int, int], float, int, int]:
    """Where a tag goes: (left, top, right, bottom) inclusive, font scale, stroke, padding.

    The font grows with the picture and shrinks until the tag fits; the tag sits above the box,
    else below it, else inside it, and is shifted sideways to stay in the picture.
    """
    import cv2

    height, width = shape
    scale = float(np.clip(max(height, width) / 1400, 0.35, 1.6))
    while True:
        thickness = max(1, round(scale * 1.6))
        pad = max(1, round(scale * 4))
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
        tag_w, tag_h = text_w + 2 * pad, text_h + baseline + 2 * pad
        if (tag_w <= width and tag_h <= height) or scale <= MIN_FONT_SCALE:
            break
        scale = max(MIN_FONT_SCALE, scale * 0.8)
    x, y, _, h = box
    if y - tag_h >= 0:
        top = y - tag_h  # above the box
    elif y + h + tag_h <= height:
        top = y + h  # below it
    else:
        top = max(0, min(y, height - tag_h))  # inside it, at its top
    left = max(0, min(x, width - tag_w))
    right, bottom = min(width, left + tag_w) - 1, min(height, top + tag_h) - 1
    return (left, top, right, bottom), scale, thickness, pad
