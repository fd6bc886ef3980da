"""Drawing what was read back onto the picture: a box and a "label confidence" tag per digit.

Boxes are two-tone (a bright line on a dark outline) and tags are bright with dark text and a
dark outline, so both stay legible on white paper, dark boards and anything between. A tag goes
where it covers no other digit and no other tag: above its box, else below, beside or inside it,
always inside the picture. When digits are too close for that (a scanned grid, a form), every tag
turns compact: just the label, sized to the digits, so the page stays readable.
"""

from __future__ import annotations

import numpy as np

from digits_cli.finder import Reading
from digits_cli.finder.crop import median

CONFIDENT = (60, 230, 60)  # green: confidence >= 0.9
UNSURE = (255, 170, 0)  # amber
OUTLINE = (0, 0, 0)
TEXT = (0, 0, 0)
CONFIDENT_FROM = 0.9
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX, without importing cv2 at module level
MIN_FONT_SCALE = 0.25
# Compact tags when more than this share of full tags would cover another digit or tag.
CROWDED = 0.1
# A compact tag's text is this share of its digit's height (and no larger than a full tag's).
COMPACT_HEIGHT = 0.4

Rect = tuple[int, int, int, int]  # left, top, right, bottom, inclusive


def annotate_image(rgb: np.ndarray, reading: Reading) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3 uint8) with each digit's box and its label and confidence."""
    import cv2

    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    if not reading.digits:
        return canvas
    line = max(1, round(max(height, width) / 500))
    boxes = [digit.box for digit in reading.digits]
    colours = [CONFIDENT if d.confidence >= CONFIDENT_FROM else UNSURE for d in reading.digits]
    full = [f"{d.label} {d.confidence:.2f}" for d in reading.digits]
    tags, covering = place_tags(full, boxes, (height, width))
    if covering > CROWDED * len(boxes):
        # Dense: the label alone, in a font sized to the digits.
        typical = float(median([box[3] for box in boxes]))
        tags, _ = place_tags(
            [str(d.label) for d in reading.digits], boxes, (height, width), typical
        )
    for box, colour in zip(boxes, colours, strict=True):
        x, y, w, h = box
        right, bottom = min(width - 1, x + w - 1), min(height - 1, y + h - 1)
        cv2.rectangle(canvas, (x, y), (right, bottom), OUTLINE, line + 2, cv2.LINE_AA)
        cv2.rectangle(canvas, (x, y), (right, bottom), colour, line, cv2.LINE_AA)
    for tag, colour in zip(tags, colours, strict=True):
        draw_tag(canvas, tag, colour)
    return canvas


Tag = tuple[str, Rect, float, int, int]  # text, where, font scale, stroke, padding


def place_tags(
    texts: list[str],
    boxes: list[tuple[int, int, int, int]],
    shape: tuple[int, int],
    digit_height: float | None = None,
) -> tuple[list[Tag], int]:
    """Where each tag goes, covering no digit's box nor an earlier tag if it can; and how many
    could not help covering something. ``digit_height`` sizes the font to the digits (compact)."""
    rects = np.array([(x, y, x + w - 1, y + h - 1) for x, y, w, h in boxes], np.int64)
    placed = np.zeros((0, 4), np.int64)
    tags: list[Tag] = []
    covering = 0
    for text, box in zip(texts, boxes, strict=True):
        scale = font_scale(text, shape, digit_height)
        options = tag_options(text, box, shape, scale)
        if digit_height is not None:
            # Compact tags go beside their digit first: above or below, between two rows, a
            # tag could be taken for the other row's.
            options = [options[2], options[3], options[0], options[1], options[4]]
        others = np.concatenate([rects, placed])  # its own digit too: a tag is beside it
        covers = [int(overlap(option[0], others).sum()) for option in options]
        best = int(np.argmin(covers))  # the first of the least covering
        covering += covers[best] > 0
        placed = np.concatenate([placed, np.array([options[best][0]], np.int64)])
        tags.append((text, *options[best]))
    return tags, covering


def overlap(a: Rect, others: np.ndarray) -> np.ndarray:
    """The area an inclusive rectangle shares with each of ``others`` (k, 4)."""
    w = np.minimum(a[2], others[:, 2]) - np.maximum(a[0], others[:, 0]) + 1
    h = np.minimum(a[3], others[:, 3]) - np.maximum(a[1], others[:, 1]) + 1
    return np.maximum(0, w) * np.maximum(0, h)


def draw_tag(canvas: np.ndarray, tag: Tag, colour: tuple) -> None:
    """A filled, outlined tag holding its text, inside the picture."""
    import cv2

    text, (left, top, right, bottom), scale, thickness, pad = tag
    cv2.rectangle(canvas, (left, top), (right, bottom), colour, cv2.FILLED)
    cv2.rectangle(canvas, (left, top), (right, bottom), OUTLINE, 1)
    (_, text_h), _ = cv2.getTextSize(text, FONT, scale, thickness)
    origin = (left + pad, top + pad + text_h)
    cv2.putText(canvas, text, origin, FONT, scale, TEXT, thickness, cv2.LINE_AA)


def font_scale(text: str, shape: tuple[int, int], digit_height: float | None = None) -> float:
    """The font grows with the picture (or, compact, with the digits) and shrinks until the tag
    fits in the picture."""
    import cv2

    height, width = shape
    scale = float(np.clip(max(height, width) / 1400, 0.35, 1.6))
    if digit_height is not None:
        # Hershey simplex digits are 22 units tall at scale 1.
        scale = float(np.clip(COMPACT_HEIGHT * digit_height / 22, MIN_FONT_SCALE + 0.1, scale))
    while scale > MIN_FONT_SCALE:
        thickness, pad = stroke_and_pad(scale)
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
        if text_w + 2 * pad <= width and text_h + baseline + 2 * pad <= height:
            break
        scale = max(MIN_FONT_SCALE, scale * 0.8)
    return scale


def stroke_and_pad(scale: float) -> tuple[int, int]:
    return max(1, round(scale * 1.6)), max(1, round(scale * 4))


def tag_options(
    text: str, box: tuple[int, int, int, int], shape: tuple[int, int], scale: float
) -> list[tuple[Rect, float, int, int]]:
    """Where a tag may go, in order of preference: above the box, below it, right of it, left
    of it, inside it at its top; each shifted to stay in the picture."""
    import cv2

    height, width = shape
    thickness, pad = stroke_and_pad(scale)
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    tag_w, tag_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    x, y, w, h = box
    spots = [(x, y - tag_h), (x, y + h), (x + w, y), (x - tag_w, y), (x, y)]
    options = []
    for left, top in spots:
        left = max(0, min(left, width - tag_w))
        top = max(0, min(top, height - tag_h))
        right, bottom = min(width, left + tag_w) - 1, min(height, top + tag_h) - 1
        options.append(((left, top, right, bottom), scale, thickness, pad))
    return options


def tag_layout(
    text: str, box: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[tuple[int, int, int, int], float, int, int]:
    """Where a lone tag goes: (left, top, right, bottom) inclusive, font scale, stroke, padding.

    The font grows with the picture and shrinks until the tag fits; the tag sits above the box,
    else below it, else inside it, and is shifted sideways to stay in the picture.
    """
    height = shape[0]
    scale = font_scale(text, shape)
    above, below, *_, inside = tag_options(text, box, shape, scale)
    _, y, _, h = box
    tag_h = above[0][3] - above[0][1] + 1
    if y - tag_h >= 0:
        return above
    if y + h + tag_h <= height:
        return below
    return inside
