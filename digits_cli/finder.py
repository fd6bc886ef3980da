"""Finding every digit in a picture, normalising each the way MNIST was made, reading them in order.

Pure: arrays in, results out; the classifier is passed in as a function, so neither torch nor a
model is needed here. The pipeline, at a working resolution of at most ``segment.max_side``:

1. background: a coarse median of the picture, refined by averaging only the pixels that are not
   ink, so gradients, vignetting and coloured paper drop out whatever the ink polarity;
2. contrast: each pixel's colour distance from that background, so dark-on-light, light-on-dark,
   coloured ink and coloured paper all become "ink strength";
3. ink: hysteresis threshold above the picture's own noise level; long thin straight lines (rules,
   underlines, margins) are cut out; fragments of one digit (same colour, stacked closely) joined;
4. each digit: its own ink, scaled so its strokes are as thick as MNIST's, fitted in 20x20 keeping
   the aspect ratio, anti-aliased, and centred by centre of mass in 28x28.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digits_cli.config import SegmentSettings

Box = tuple[int, int, int, int]

MNIST_SIZE = 28
MNIST_BOX = 20
# Median stroke width of MNIST test digits in the 28x28 frame (2 * ink area / contour length).
MNIST_STROKE = 2.25
# Oversampling of the 20x20 box while stroke widths are adjusted, so adjustments are sub-pixel.
RENDER_OVERSAMPLE = 3
# Long side of the thumbnail on which the background is estimated (backgrounds vary slowly),
# and the window wiping out strokes there: wider than the boldest stroke of a digit as tall as
# the picture (MNIST strokes are ~11% of the digit's height).
BACKGROUND_SIDE = 160
BACKGROUND_WINDOW = 45
# A channel whose weaker polarity carries this share of the stronger's energy has both.
MIXED_POLARITY = 0.1
# A component is at most this many times wider than tall (wide handwritten 2s reach ~1.9).
MAX_WIDTH_RATIO = 2.2
# Below this noise level (contrast units) crops are cut from the unblurred picture.
CLEAN_NOISE = 0.01
# A line is at least this many times longer than thick.
LINE_ELONGATION = 10
# Wider regions (width over height) may be touching digits and are also read split in two,
# recursively up to this depth.
SPLIT_FROM = 0.9
MAX_SPLIT_DEPTH = 2
# Beyond this many components the picture is noise; the largest ones are kept.
MAX_COMPONENTS = 400


@dataclass
class Candidate:
    """Something that looks like one digit: where it is and its MNIST-style 28x28 crop."""

    box: Box  # x, y, width, height in the original picture's pixels
    crop: np.ndarray  # (28, 28) float32 in [0, 1], white ink on black
    # A wide region may be digits touching: its left and right parts, read instead if surer.
    parts: list[Candidate] = field(default_factory=list)


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


# --- reading ----------------------------------------------------------------------------------


def read_digits(
    image: np.ndarray, classify: Callable[[np.ndarray], np.ndarray], cfg: SegmentSettings
) -> Reading:
    """Find, classify (in one batch) and order every digit of ``image``.

    ``classify`` maps crops (N, 28, 28) float32 in [0, 1] to probabilities (N, 10). Digits whose
    confidence is under ``cfg.min_confidence`` are dropped.
    """
    shape = np.shape(image)
    height, width = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
    candidates = find_digits(image, cfg)
    if not candidates:
        return Reading(width, height, "", [])
    everything = [c for candidate in candidates for c in with_parts(candidate)]
    probabilities = np.asarray(classify(np.stack([c.crop for c in everything])), dtype=np.float64)
    by_id = {id(c): row for c, row in zip(everything, probabilities, strict=True)}
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


def arrange(digits: list[Digit], number_gap: float) -> list[list[list[Digit]]]:
    """Digits as rows (top to bottom) of numbers (left to right) of digits.

    A digit joins the row whose vertical band it overlaps most, by at least half the smaller
    height, so slightly sloping or uneven rows stay together. Within a row a new number starts
    where the gap between neighbours exceeds ``number_gap`` times their mean height.
    """
    rows: list[list[Digit]] = []
    for digit in sorted(digits, key=lambda d: d.box[1] + d.box[3] / 2):
        top, bottom = digit.box[1], digit.box[1] + digit.box[3]
        best, best_overlap = None, 0.5
        for row in rows:
            row_top = float(np.median([d.box[1] for d in row]))
            row_bottom = float(np.median([d.box[1] + d.box[3] for d in row]))
            shared = min(bottom, row_bottom) - max(top, row_top)
            overlap = shared / max(1.0, min(bottom - top, row_bottom - row_top))
            if overlap >= best_overlap:
                best, best_overlap = row, overlap
        if best is None:
            rows.append([digit])
        else:
            best.append(digit)
    rows.sort(key=lambda row: float(np.median([d.box[1] + d.box[3] / 2 for d in row])))
    lines = []
    for row in rows:
        row.sort(key=lambda d: d.box[0] + d.box[2] / 2)
        numbers = [[row[0]]]
        for left, right in itertools.pairwise(row):
            gap = right.box[0] - (left.box[0] + left.box[2])
            if gap > number_gap * (left.box[3] + right.box[3]) / 2:
                numbers.append([])
            numbers[-1].append(right)
        lines.append(numbers)
    return lines


# --- finding ----------------------------------------------------------------------------------


def find_digits(image: np.ndarray, cfg: SegmentSettings) -> list[Candidate]:
    """Every digit-like region of ``image`` with its MNIST-style crop; never raises.

    Accepts (H, W), (H, W, 1), grey+alpha, RGB or RGBA arrays of any numeric dtype; anything
    else, or a picture without digits, gives an empty list.
    """
    import cv2

    rgb, scale = working_rgb(image, cfg.max_side)
    if rgb is None:
        return []
    height, width = rgb.shape[:2]
    min_height = max(4, round(cfg.min_digit_height * scale))
    if max(height, width) < min_height:
        return []
    smooth = cv2.GaussianBlur(rgb, (0, 0), 0.7)
    background = estimate_background(smooth)
    contrast = colour_distance(smooth, background)
    mask, noise = ink_mask(contrast, cfg.min_contrast)
    # Small digits keep their holes only without the blur, which is needed against noise alone.
    source = rgb if noise < CLEAN_NOISE else smooth
    mask, lines = remove_lines(mask, min_height)
    regions = find_regions(mask, lines, smooth, contrast, min_height)
    candidates = []
    for x, y, w, h, ids, labels in regions:
        own = np.isin(labels[y : y + h, x : x + w], ids)
        crop_contrast = colour_distance(
            source[y : y + h, x : x + w], background[y : y + h, x : x + w]
        )
        candidate = make_candidate(crop_contrast, own, (x, y), scale, image, min_height)
        if candidate is not None:
            candidates.append(candidate)
    return candidates


def make_candidate(
    contrast: np.ndarray,
    own: np.ndarray,
    origin: tuple[int, int],
    scale: float,
    image: Any,
    min_height: int,
    depth: int = 0,
) -> Candidate | None:
    """A candidate for the ink ``own`` with its ``contrast`` (same shape, placed at ``origin``).

    A wide region also gets its left and right parts as candidates.
    """
    rows, cols = np.nonzero(own)
    if rows.size == 0:
        return None
    top, left = int(rows.min()), int(cols.min())
    own = own[top : rows.max() + 1, left : cols.max() + 1]
    contrast = contrast[top : rows.max() + 1, left : cols.max() + 1]
    x, y = origin[0] + left, origin[1] + top
    h, w = own.shape
    crop = mnist_crop(contrast, own)
    if crop is None:
        return None
    candidate = Candidate(original_box((x, y, w, h), scale, image), crop)
    if depth < MAX_SPLIT_DEPTH and w > SPLIT_FROM * h and w >= 4:
        cut = split_column(own)
        halves = [own.copy(), own.copy()]
        halves[0][:, cut:] = False
        halves[1][:, :cut] = False
        parts = [
            make_candidate(contrast, half, (x, y), scale, image, min_height, depth + 1)
            for half in halves
        ]
        if all(part is not None and part.box[3] * scale >= min_height / 2 for part in parts):
            candidate.parts = parts  # type: ignore[assignment]
    return candidate


def split_column(own: np.ndarray) -> int:
    """Where touching digits most likely meet: the column with least ink in the middle 60%."""
    width = own.shape[1]
    profile = np.convolve(own.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    low, high = max(1, int(0.2 * width)), min(width - 1, int(0.8 * width) + 1)
    centre_bias = 0.05 * own.shape[0] * np.abs(np.arange(low, high) - width / 2) / width
    return low + int(np.argmin(profile[low:high] + centre_bias))


def working_rgb(image: Any, max_side: int) -> tuple[np.ndarray | None, float]:
    """The picture as RGB float32 in [0, 1], shrunk to at most ``max_side``; (None, 1) if unusable.

    Integer pictures are scaled by 255 or 65535 as their values fit, floats taken as [0, 1] or
    [0, 255] as they fit (else stretched); alpha is composited on white.
    """
    import cv2

    try:
        array = np.asarray(image)
    except (TypeError, ValueError):
        return None, 1.0
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or array.size == 0 or array.dtype.kind not in "biufc":
        return None, 1.0
    if array.ndim == 3:
        array = array[:, :, :4]
    if array.dtype.kind == "c":
        array = array.real
    scale = min(1.0, max_side / max(array.shape[:2]))
    if scale < 1.0:
        # Shrink before converting so a huge picture is never held as full-size floats.
        if array.dtype == np.bool_:
            array = array.astype(np.uint8) * np.uint8(255)
        elif array.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
            array = array.astype(np.float64)
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        shrunk = cv2.resize(np.ascontiguousarray(array), size, interpolation=cv2.INTER_AREA)
        array = shrunk.reshape(size[1], size[0], *array.shape[2:])
    values = unit_range(array)
    if values.ndim == 2:
        return cv2.cvtColor(values, cv2.COLOR_GRAY2RGB), scale
    channels = values.shape[2]
    colour = values[:, :, :3] if channels >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    if channels in (2, 4):
        alpha = values[:, :, channels - 1 : channels]
        colour = colour * alpha + (1.0 - alpha)
    return np.ascontiguousarray(colour, dtype=np.float32), scale


def unit_range(array: np.ndarray) -> np.ndarray:
    """Pixel values as float32 in [0, 1]."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1 / 255)
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, 0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1 and array.dtype.kind == "f":
        scaled = values
    elif low >= 0 and high <= 255:
        scaled = values / 255
    elif low >= 0 and high <= 65535 and array.dtype.kind in "ui":
        scaled = values / 65535
    elif high > low:
        scaled = (values - low) / (high - low)
    else:
        scaled = np.zeros_like(values)
    return scaled.astype(np.float32)


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour at every pixel, whatever the ink's polarity or colour.

    On a thumbnail of fixed size, a morphological closing (for ink darker than the paper) or
    opening (lighter) with a window an eighth of the picture wipes out strokes, yet keeps the
    paper inside loops and the slow changes of lighting. Each channel takes the polarity of its
    strongest departures from a local median, so chalk on a board and blue ink on yellow paper
    (darker in red and green, lighter in blue) both work.
    """
    import cv2

    height, width = rgb.shape[:2]
    factor = BACKGROUND_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    window = cv2.getStructuringElement(cv2.MORPH_RECT, (BACKGROUND_WINDOW, BACKGROUND_WINDOW))
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, window, borderType=cv2.BORDER_REPLICATE)
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, window, borderType=cv2.BORDER_REPLICATE)
    # Polarity per channel: the sign of the strongest departures from the paper's overall colour,
    # which are ink. A channel with strong departures both ways (black and blue ink on yellow
    # paper, in blue) falls back to a median, which ignores sparse ink of either polarity.
    departure = (small - np.median(small.reshape(-1, 3), axis=0)).reshape(-1, 3).astype(np.float64)
    lighter = (np.clip(departure, 0, None) ** 3).sum(axis=0)
    darker = (np.clip(-departure, 0, None) ** 3).sum(axis=0)
    dark_ink = darker >= lighter
    mixed = np.minimum(lighter, darker) > MIXED_POLARITY * np.maximum(lighter, darker)
    paper = np.where(dark_ink, closed, opened).astype(np.float32)
    if mixed.any():
        small8 = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
        median = cv2.medianBlur(small8, BACKGROUND_WINDOW).astype(np.float32) / np.float32(255)
        paper = np.where(mixed, median, paper)
    # Smooth the blocky result without letting ink too bold to wipe out bleed into the paper.
    box = (BACKGROUND_WINDOW // 2, BACKGROUND_WINDOW // 2)
    blurred = cv2.blur(cv2.blur(paper, box), box)  # two box filters: a cheap near-Gaussian
    paper = np.where(
        mixed, blurred, np.where(dark_ink, np.maximum(blurred, paper), np.minimum(blurred, paper))
    )
    return cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)


def colour_distance(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance per pixel, scaled so black on white is 1."""
    import cv2

    difference = cv2.subtract(rgb, background)
    squared = cv2.multiply(difference, difference)
    mean = cv2.transform(squared, np.full((1, 3), 1 / 3, dtype=np.float32))
    return cv2.sqrt(mean)


def ink_mask(contrast: np.ndarray, min_contrast: float) -> tuple[np.ndarray, float]:
    """Ink pixels (uint8 0/1) by hysteresis above the picture's noise level, and that level.

    Pixels above the low threshold form regions; a region is kept only if some pixel in it is
    above the high threshold, so faint stroke edges stay attached while noise does not start ink.
    """
    import cv2

    sample = contrast[::2, ::2] if contrast.size > 40_000 else contrast
    # On paper the contrast is the size of 3-channel noise, whose first quartile is 0.64 sigma;
    # the first quartile stays on paper even when ink covers most of the picture.
    noise = quantile(sample.ravel(), 0.25) / 0.64
    low = max(min_contrast, 3.5 * noise)
    high = max(2.5 * min_contrast, 2 * low)
    weak = (contrast >= low).astype(np.uint8)
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    strong = np.zeros(count, dtype=bool)
    strong[labels[contrast >= high]] = True
    strong[0] = False
    return strong[labels].astype(np.uint8), noise


def remove_lines(mask: np.ndarray, min_height: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut long straight horizontal and vertical lines (rules, margins, underlines) out of the ink.

    A straight run is a line when it is thin (see ``LINE_ELONGATION``) and much longer than the
    ink attached to it is tall (for a vertical run: wide), e.g. a rule under or through digits,
    while the bar of a 7 or the base of a 2 stays. Alone, a horizontal run a fifth of the picture
    wide is a line; a vertical one (which could be a 1) only when it spans nearly the whole
    picture. Returns the ink without the lines, and the lines.
    """
    height, width = mask.shape
    lines = np.zeros_like(mask)
    cut_runs(mask, lines, (1, 3 * min_height), alone=width // 5, factor=2)
    cut_runs(mask, lines, (max(4 * min_height, height // 5), 1), alone=int(0.9 * height), factor=3)
    return mask, lines


def cut_runs(
    mask: np.ndarray, lines: np.ndarray, kernel: tuple[int, int], alone: int, factor: float
) -> None:
    """Move straight runs at least ``kernel`` long that are lines from ``mask`` to ``lines``."""
    import cv2

    rows, cols = kernel
    if mask.shape[0] <= rows or mask.shape[1] <= cols:
        return
    runs = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones(kernel, np.uint8))
    if not runs.any():
        return
    horizontal = cols > rows
    _, pieces, stats, _ = cv2.connectedComponentsWithStats(runs, connectivity=8)
    lengths = stats[1:, cv2.CC_STAT_WIDTH if horizontal else cv2.CC_STAT_HEIGHT]
    # Thin runs only: a bold stroke of a big digit is not a drawn line.
    thin = np.flatnonzero(lengths * lengths >= LINE_ELONGATION * stats[1:, cv2.CC_STAT_AREA]) + 1
    if thin.size == 0:
        return
    _, owners, owner_stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    for piece in thin:
        x, y, w, h = (int(v) for v in stats[piece, :4])
        length = w if horizontal else h
        inside = pieces[y : y + h, x : x + w] == piece
        owner = int(owners[y : y + h, x : x + w][inside][0])
        ox, oy, ow, oh = (int(v) for v in owner_stats[owner, :4])
        attached = (owners[oy : oy + oh, ox : ox + ow] == owner) & (
            runs[oy : oy + oh, ox : ox + ow] == 0
        )
        # How far the attached ink reaches across the line: a digit's height for a rule.
        across = np.flatnonzero(attached.any(axis=1 if horizontal else 0))
        extent = int(across[-1] - across[0] + 1) if across.size else 0
        if length >= (factor * extent if extent else alone):
            # Where the run is thicker than the line (a digit's own stroke lies on it), keep it.
            thickness = inside.sum(axis=0 if horizontal else 1)
            thin = thickness <= np.median(thickness) + 1
            cut = inside & (thin[None, :] if horizontal else thin[:, None])
            mask[y : y + h, x : x + w][cut] = 0
            lines[y : y + h, x : x + w][cut] = 1


def find_regions(
    mask: np.ndarray,
    lines: np.ndarray,
    rgb: np.ndarray,
    contrast: np.ndarray,
    min_height: int,
) -> list[tuple[int, int, int, int, np.ndarray, np.ndarray]]:
    """Digit-like regions of the ink: (x, y, w, h, component ids, label image) each.

    Specks are dropped; fragments of one digit are joined (see :func:`join_fragments`); regions
    too small, too wide or as large as the whole picture are dropped.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    boxes = stats[1:, :4].astype(np.int64)
    ids = np.arange(1, count)
    speck = max(2, int(0.35 * min_height))
    keep = np.maximum(boxes[:, 2], boxes[:, 3]) >= speck
    boxes, ids = boxes[keep], ids[keep]
    if len(ids) > MAX_COMPONENTS:
        largest = np.argsort(-stats[ids, cv2.CC_STAT_AREA])[:MAX_COMPONENTS]
        boxes, ids = boxes[largest], ids[largest]
    if len(ids) == 0:
        return []
    colours = ink_colours(labels, mask, rgb, contrast, count)[ids]
    groups = join_fragments(boxes, colours, lines)
    height, width = mask.shape
    regions = []
    for members in groups:
        x0 = int(boxes[members, 0].min())
        y0 = int(boxes[members, 1].min())
        x1 = int((boxes[members, 0] + boxes[members, 2]).max())
        y1 = int((boxes[members, 1] + boxes[members, 3]).max())
        w, h = x1 - x0, y1 - y0
        if h < min_height or w > MAX_WIDTH_RATIO * h:
            continue
        if h >= 0.95 * height and w >= 0.95 * width and min(height, width) > 2 * MNIST_SIZE:
            continue  # a frame or a page edge, not a digit
        regions.append((x0, y0, w, h, ids[members], labels))
    return regions


def ink_colours(
    labels: np.ndarray, mask: np.ndarray, rgb: np.ndarray, contrast: np.ndarray, count: int
) -> np.ndarray:
    """Each component's ink colour (count, 3): mean colour weighted towards its strongest pixels."""
    inside = mask.astype(bool)
    owner = labels[inside]
    distance = contrast[inside].astype(np.float64)
    weight = distance**4
    total = np.bincount(owner, weights=weight, minlength=count) + 1e-12
    return np.stack(
        [
            np.bincount(owner, weights=weight * rgb[:, :, channel][inside], minlength=count) / total
            for channel in range(3)
        ],
        axis=1,
    )


def join_fragments(boxes: np.ndarray, colours: np.ndarray, lines: np.ndarray) -> list[np.ndarray]:
    """Group indices of components that are pieces of one digit (union-find over joined pairs).

    Two components are joined when they share columns, are stacked with a small gap, have the
    same ink colour, and either the smaller is a flat bar no wider than the other (a 5's detached
    top) or a removed line ran through the gap between them. A small digit written just above
    another (a label) and a line under several digits stay apart.
    """
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    widths, heights = boxes[:, 2], boxes[:, 3]
    shared_columns = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    gap = np.maximum(y0[:, None], y0[None]) - np.minimum(y1[:, None], y1[None])
    taller = np.maximum(heights[:, None], heights[None])
    difference = np.sqrt(((colours[:, None] - colours[None]) ** 2).mean(axis=2))
    close = (
        (shared_columns >= 0.5 * np.minimum(widths[:, None], widths[None]))
        & (gap <= 0.15 * taller + 1)
        & (difference <= 0.2)
    )
    parent = np.arange(len(boxes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(close, k=1)), strict=True):
        smaller = i if heights[i] < heights[j] else j
        other = j if smaller == i else i
        flat = 1.5 * heights[smaller] <= widths[smaller] <= 1.2 * widths[other]
        left, right = max(x0[i], x0[j]), min(x1[i], x1[j])
        top, bottom = min(y1[i], y1[j]) - 1, max(y0[i], y0[j]) + 1
        bridged = bool(lines[max(0, top) : bottom, left:right].any())
        if flat or bridged:
            parent[root(int(i))] = root(int(j))
    roots = np.array([root(i) for i in range(len(boxes))])
    return [np.nonzero(roots == r)[0] for r in np.unique(roots)]


def mnist_crop(contrast: np.ndarray, own: np.ndarray) -> np.ndarray | None:
    """The region's ink as MNIST draws digits: (28, 28) float32, white on black, or None if empty.

    The ink is scaled to its own strength (cores saturate like MNIST's pen), its strokes thickened
    or thinned to MNIST's width at the final size, fitted in 20x20 keeping the aspect ratio with
    area averaging, then shifted so its centre of mass is the centre of the 28x28 frame.
    """
    import cv2

    if not own.any():
        return None
    # Faint anti-aliased edges just outside the threshold belong to the digit; other ink does not.
    fringe = cv2.dilate(own.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    peak = quantile(contrast[own], 0.9)
    if peak <= 0:
        return None
    ink = np.clip(contrast / np.float32(peak), 0, 1) * fringe
    height, width = own.shape
    factor = MNIST_BOX * RENDER_OVERSAMPLE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    ink = cv2.resize(ink.astype(np.float32), size, interpolation=interpolation)
    # Resizing dims thin strokes and spreads edges; restore a saturated pen line with crisp edges.
    visible = ink[ink > 0.05]
    if visible.size == 0:
        return None
    ink = smoothstep(ink / np.float32(quantile(visible, 0.9)), 0.2, 0.7)
    stroke = stroke_width(ink >= 0.5)
    wanted = MNIST_STROKE * RENDER_OVERSAMPLE
    change = round(wanted - stroke)
    if change >= 2 or change <= -3:
        ink = np.pad(ink, abs(change))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(change) + 1, abs(change) + 1))
        ink = cv2.dilate(ink, kernel) if change > 0 else cv2.erode(ink, kernel)
        rows, cols = np.nonzero(ink > 0.05)
        if rows.size == 0:
            return None
        ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    factor = MNIST_BOX / max(ink.shape)
    size = (max(1, round(ink.shape[1] * factor)), max(1, round(ink.shape[0] * factor)))
    digit = cv2.resize(ink, size, interpolation=cv2.INTER_AREA)
    return centre_by_mass(digit)


def quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a non-empty 1-d array (nearest rank; faster than np.percentile)."""
    rank = min(len(values) - 1, int(q * len(values)))
    return float(np.partition(values, rank)[rank])


def smoothstep(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, a smooth S-curve between."""
    t = np.clip((values - low) / (high - low), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def stroke_width(core: np.ndarray) -> float:
    """Mean stroke width of a binary shape: twice its area over its outline length."""
    import cv2

    contours, _ = cv2.findContours(core.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    return max(1.0, 2.0 * float(core.sum()) / outline) if outline > 0 else 1.0


def centre_by_mass(digit: np.ndarray) -> np.ndarray | None:
    """Place a digit of at most 20x20 in a 28x28 frame with its centre of mass at the centre."""
    total = float(digit.sum())
    if total <= 0:
        return None
    rows, cols = np.indices(digit.shape)
    centre_y = float((rows * digit).sum()) / total
    centre_x = float((cols * digit).sum()) / total
    top = round(MNIST_SIZE / 2 - 0.5 - centre_y)
    left = round(MNIST_SIZE / 2 - 0.5 - centre_x)
    frame = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    src_y0, src_x0 = max(0, -top), max(0, -left)
    dst_y0, dst_x0 = max(0, top), max(0, left)
    h = min(digit.shape[0] - src_y0, MNIST_SIZE - dst_y0)
    w = min(digit.shape[1] - src_x0, MNIST_SIZE - dst_x0)
    frame[dst_y0 : dst_y0 + h, dst_x0 : dst_x0 + w] = digit[
        src_y0 : src_y0 + h, src_x0 : src_x0 + w
    ]
    return np.clip(frame, 0, 1)


def original_box(box: Box, scale: float, image: Any) -> Box:
    """A working-resolution box in the original picture's pixels, clipped to the picture."""
    height, width = np.shape(image)[:2]
    x, y, w, h = box
    x0 = min(width - 1, max(0, int(np.floor(x / scale))))
    y0 = min(height - 1, max(0, int(np.floor(y / scale))))
    x1 = min(width, max(x0 + 1, int(np.ceil((x + w) / scale))))
    y1 = min(height, max(y0 + 1, int(np.ceil((y + h) / scale))))
    return (x0, y0, x1 - x0, y1 - y0)
