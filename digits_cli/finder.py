"""Finding every digit in a picture, normalising each the way MNIST was made, reading them in order.

Pure: arrays in, results out; the classifier is passed in as a function, so neither torch nor a
model is needed here. The pipeline, at a working resolution of at most ``segment.max_side`` and in
8-bit colour (exact enough for ink on paper, and several times faster than floats):

1. background: on a thumbnail, a closing or an opening (as the ink is darker or lighter than the
   paper, judged against a local median) wipes out the strokes, so gradients, vignetting and
   coloured paper drop out whatever the ink polarity;
2. contrast: each pixel's colour distance from that background, so dark-on-light, light-on-dark,
   coloured ink and coloured paper all become "ink strength";
3. ink: hysteresis threshold above the picture's own noise level, labelled into components once;
   long thin straight lines (rules, underlines, margins) are cut out, while a lone bar of a
   digit's size stays (it is a 1); fragments of one digit (same colour, stacked closely) joined;
4. each digit: its own ink, scaled so its strokes are as thick as MNIST's, fitted in 20x20 keeping
   the aspect ratio, anti-aliased, and centred by centre of mass in 28x28.
"""

from __future__ import annotations

import itertools
import math
import statistics
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
RENDER_OVERSAMPLE = 2
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
# A vertical line spans this share of the picture's height, or is this many times taller than
# the tallest digit-sized ink; anything shorter is most likely a 1. A lone horizontal bar is
# also this many times longer than the tallest digit (else it may be a 7's or a 5's top).
LINE_SPAN = 0.9
LONG_LINE = 2.5
# Pixels sampled to measure the picture's noise level.
NOISE_SAMPLES = 20_000
# Wider regions (width over height) may be touching digits and are also read split in two,
# recursively up to this depth, when read whole with less confidence than SURE.
SPLIT_FROM = 0.9
MAX_SPLIT_DEPTH = 2
SURE = 0.9
# Beyond this many components the picture is noise; the largest ones are kept.
MAX_COMPONENTS = 400
SQUARE_3 = np.ones((3, 3), np.uint8)
# Weights summing squared 8-bit channel differences so that black on white comes to 1.
CHANNEL_WEIGHTS = np.full((1, 3), 1 / (3 * 255**2), np.float32)


@dataclass
class Candidate:
    """Something that looks like one digit: where it is and its MNIST-style 28x28 crop.

    A region wide enough to be digits touching has a ``splitter``; :meth:`split` makes its
    ``parts`` with it (only when needed: reading it whole proved unsure).
    """

    box: Box  # x, y, width, height in the original picture's pixels
    crop: np.ndarray  # (28, 28) float32 in [0, 1], white ink on black
    # A wide region may be digits touching: its left and right parts, read instead if surer.
    parts: list[Candidate] = field(default_factory=list)
    # For a wide region, makes those parts: only once its whole reading proves unsure.
    splitter: Callable[[], list[Candidate]] | None = field(default=None, repr=False, compare=False)

    def split(self) -> None:
        """Make this region's parts (and theirs), if it is wide enough to have any."""
        if self.splitter is not None and not self.parts:
            self.parts = self.splitter()


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
            row_top = statistics.median([d.box[1] for d in row])
            row_bottom = statistics.median([d.box[1] + d.box[3] for d in row])
            shared = min(bottom, row_bottom) - max(top, row_top)
            overlap = shared / max(1.0, min(bottom - top, row_bottom - row_top))
            if overlap >= best_overlap:
                best, best_overlap = row, overlap
        if best is None:
            rows.append([digit])
        else:
            best.append(digit)
    rows.sort(key=lambda row: statistics.median([d.box[1] + d.box[3] / 2 for d in row]))
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


@dataclass
class Ink:
    """Ink pixels labelled once into 8-connected components, reused by every later step."""

    labels: np.ndarray  # int32 (H, W): each pixel's component, 0 for paper
    boxes: np.ndarray  # int32 (count, 4): x, y, width, height of each component
    real: np.ndarray  # bool (count,): holds a pixel of strong ink (not just faint noise)


@dataclass
class Run:
    """A thin straight run of ink, a kernel long at least: perhaps a drawn line."""

    x: int
    y: int
    inside: np.ndarray  # bool: the run's pixels within its bounding box at (x, y)
    owner: int  # the ink component it lies in
    horizontal: bool

    @property
    def window(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.inside.shape[0]), slice(
            self.x, self.x + self.inside.shape[1]
        )

    @property
    def length(self) -> int:
        return self.inside.shape[1] if self.horizontal else self.inside.shape[0]


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
    smooth = cv2.GaussianBlur(rgb, (3, 3), 0.7)
    background = estimate_background(smooth)
    contrast = colour_distance(smooth, background)
    mask, strong, noise = ink_mask(contrast, cfg.min_contrast)
    ink = label_ink(mask, strong)
    ink, lines = remove_lines(ink, mask, strong, min_height)
    regions = find_regions(ink, lines, smooth, contrast, min_height)
    # Small digits keep their holes only without the blur, which is needed against noise alone.
    clean = noise < CLEAN_NOISE
    candidates = []
    for x, y, w, h, ids in regions:
        window = slice(y, y + h), slice(x, x + w)
        labels = ink.labels[window]
        own = labels == ids[0] if len(ids) == 1 else np.isin(labels, ids)
        own_contrast = (
            colour_distance(rgb[window], background[window]) if clean else contrast[window]
        )
        candidate = make_candidate(own_contrast, own, (x, y), scale, image, min_height)
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

    A region too wide for one digit also gets a splitter making its left and right parts (and
    theirs, down to ``MAX_SPLIT_DEPTH``) as candidates, for when reading it whole proves unsure.
    """
    bounds = ink_bounds(own)
    if bounds is None:
        return None
    top, bottom, left, right = bounds
    own = own[top:bottom, left:right]
    contrast = contrast[top:bottom, left:right]
    x, y = origin[0] + left, origin[1] + top
    h, w = own.shape
    crop = mnist_crop(contrast, own)
    if crop is None:
        return None
    candidate = Candidate(original_box((x, y, w, h), scale, image), crop)
    if depth < MAX_SPLIT_DEPTH and w > SPLIT_FROM * h and w >= 4:

        def split() -> list[Candidate]:
            cut = split_column(own)
            halves = [own.copy(), own.copy()]
            halves[0][:, cut:] = False
            halves[1][:, :cut] = False
            parts = [
                part
                for half in halves
                if (
                    part := make_candidate(
                        contrast, half, (x, y), scale, image, min_height, depth + 1
                    )
                )
                and part.box[3] * scale >= min_height / 2
            ]
            if len(parts) < 2:
                return []
            for part in parts:
                part.split()
            return parts

        candidate.splitter = split
    return candidate


def split_column(own: np.ndarray) -> int:
    """Where touching digits most likely meet: the column with least ink in the middle 60%."""
    width = own.shape[1]
    profile = np.convolve(own.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    low, high = max(1, int(0.2 * width)), min(width - 1, int(0.8 * width) + 1)
    centre_bias = 0.05 * own.shape[0] * np.abs(np.arange(low, high) - width / 2) / width
    return low + int(np.argmin(profile[low:high] + centre_bias))


def working_rgb(image: Any, max_side: int) -> tuple[np.ndarray | None, float]:
    """The picture as RGB uint8, shrunk to at most ``max_side``; (None, 1) if unusable.

    Integer pictures are scaled by 255 or 65535 as their values fit, floats taken as [0, 1] or
    [0, 255] as they fit (else stretched); alpha is composited on white. Eight bits are plenty
    for ink on paper (the weakest ink allowed is ~20 levels) and make every later step faster.
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
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype == np.uint8 and channels in (1, 3):
        if channels == 1:
            return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_GRAY2RGB), scale
        return np.ascontiguousarray(array), scale
    values = unit_range(array)
    if values.ndim == 2:
        values = values[:, :, None]
    colour = values[:, :, :3] if channels >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    if channels in (2, 4):
        alpha = values[:, :, channels - 1 : channels]
        colour = colour * alpha + (1.0 - alpha)
    return np.ascontiguousarray(np.clip(colour * 255 + 0.5, 0, 255), dtype=np.uint8), scale


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
        # Halved first: the range of extreme floats overflows float64 otherwise.
        scaled = (values / 2 - low / 2) / (high / 2 - low / 2)
    else:
        scaled = np.zeros_like(values)
    return scaled.astype(np.float32)


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour (uint8) at every pixel, whatever the ink's polarity or colour.

    On a thumbnail of fixed size, a morphological closing (for ink darker than the paper) or
    opening (lighter) with a window an eighth of the picture wipes out strokes, yet keeps the
    paper inside loops and the slow changes of lighting. Each channel takes its ink's polarity
    (see :func:`ink_polarity`), so chalk on a board and blue ink on yellow paper (darker in red
    and green, lighter in blue) both work; a channel with ink of both polarities takes a median,
    which ignores sparse ink of either.
    """
    import cv2

    height, width = rgb.shape[:2]
    factor = BACKGROUND_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = rgb
    while max(small.shape[:2]) >= 2 * BACKGROUND_SIDE:
        # Halving repeatedly averages the same pixels as one big step, several times faster.
        half = (max(1, small.shape[1] // 2), max(1, small.shape[0] // 2))
        small = cv2.resize(small, half, interpolation=cv2.INTER_AREA)
    small = cv2.resize(
        small, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    )
    # A median this wide is costly: take it at half the thumbnail's size.
    half = (max(1, size[0] // 2), max(1, size[1] // 2))
    shrunk = cv2.resize(small, half, interpolation=cv2.INTER_AREA)
    median = cv2.resize(
        cv2.medianBlur(shrunk, BACKGROUND_WINDOW // 2 | 1), size, interpolation=cv2.INTER_LINEAR
    )
    dark_ink, mixed_ink = ink_polarity(small, median)
    kinds = {
        "mixed" if mixed else bool(dark) for dark, mixed in zip(dark_ink, mixed_ink, strict=True)
    }
    if len(kinds) == 1:  # usually: all channels at once
        paper = paper_colour(small, median, bool(dark_ink[0]), bool(mixed_ink[0]))
    else:
        paper = cv2.merge(
            [
                paper_colour(plane, median_plane, bool(dark), bool(mixed))
                for plane, median_plane, dark, mixed in zip(
                    cv2.split(small), cv2.split(median), dark_ink, mixed_ink, strict=True
                )
            ]
        )
    return cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)


def paper_colour(thumbnail: np.ndarray, median: np.ndarray, dark: bool, mixed: bool) -> np.ndarray:
    """The paper of a thumbnail (its channels sharing one ink polarity), smooth.

    Ink darker than the paper is wiped out by a closing, lighter by an opening; ink of both
    polarities by the ``median`` (at the cost of bold strokes bleeding into it).
    """
    import cv2

    box = (BACKGROUND_WINDOW // 2, BACKGROUND_WINDOW // 2)
    if mixed:
        return cv2.blur(cv2.blur(median, box), box)
    window = np.ones((BACKGROUND_WINDOW, BACKGROUND_WINDOW), np.uint8)
    operation = cv2.MORPH_CLOSE if dark else cv2.MORPH_OPEN
    paper = cv2.morphologyEx(thumbnail, operation, window, borderType=cv2.BORDER_REPLICATE)
    # Smooth the blocky result (two box filters: a cheap near-Gaussian) without letting ink too
    # bold to wipe out bleed into the paper.
    blurred = cv2.blur(cv2.blur(paper, box), box)
    return cv2.max(blurred, paper) if dark else cv2.min(blurred, paper)


def ink_polarity(rgb: np.ndarray, paper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: is the ink darker than the paper, and is there ink of both polarities.

    The polarity is the sign of the strongest departures from the paper, which are ink. The
    paper is the local ``paper`` estimate (right when lighting varies and ink is sparse) if the
    departures from it are one-sided, else the picture's overall colour (right when bold ink
    covers much of the picture). A channel with strong departures both ways all the same
    (black and blue ink on yellow paper, in blue) has both.
    """
    import cv2

    levels = channel_histograms(rgb, 256)
    median = np.argmax(np.cumsum(levels, axis=1) >= levels.sum(axis=1, keepdims=True) / 2, axis=1)
    overall_balance = polarity_balance(levels, np.arange(256)[None, :] - median[:, None])
    departures = channel_histograms(cv2.subtract(rgb, paper, dtype=cv2.CV_16S) + 255, 511)
    local_balance = polarity_balance(departures, np.arange(-255, 256)[None, :])
    one_sided = (1 - MIXED_POLARITY) / (1 + MIXED_POLARITY)
    balance = np.where(np.abs(local_balance) >= one_sided, local_balance, overall_balance)
    mixed = np.abs(balance) < one_sided
    return balance >= 0, mixed


def channel_histograms(image: np.ndarray, bins: int) -> np.ndarray:
    """How many pixels (float64) take each value 0..bins-1, per channel: (3, bins)."""
    return np.stack(
        [np.bincount(image[:, :, channel].ravel(), minlength=bins) for channel in range(3)]
    ).astype(np.float64)


def polarity_balance(counts: np.ndarray, departures: np.ndarray) -> np.ndarray:
    """Per channel, darker minus lighter energy over their sum, in [-1, 1], from ``counts`` of
    pixels departing from the paper by ``departures``; a departure's energy is its cube, so ink
    outweighs noise and shading.
    """
    energy = counts * departures.astype(np.float64) ** 3
    darker = -np.minimum(energy, 0).sum(axis=1)
    lighter = np.maximum(energy, 0).sum(axis=1)
    return (darker - lighter) / np.maximum(darker + lighter, 1e-9)


def colour_distance(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Euclidean RGB distance per pixel (float32), scaled so black on white is 1."""
    import cv2

    difference = cv2.absdiff(rgb, background)
    squared = cv2.multiply(difference, difference, dtype=cv2.CV_32F)
    return cv2.sqrt(cv2.transform(squared, CHANNEL_WEIGHTS))


def ink_mask(contrast: np.ndarray, min_contrast: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Candidate ink (uint8 0/1, above the low threshold), strong ink (bool), and the noise level.

    Hysteresis: candidate ink forms regions, and a region is ink only if some pixel in it is
    strong, so faint stroke edges stay attached while noise does not start ink.
    """
    step = max(1, int(np.sqrt(contrast.size / NOISE_SAMPLES)))
    # On paper the contrast is the size of 3-channel noise, whose first quartile is 0.64 sigma;
    # the first quartile stays on paper even when ink covers most of the picture.
    noise = quantile(contrast[::step, ::step].ravel(), 0.25) / 0.64
    low = max(min_contrast, 3.5 * noise)
    high = max(2.5 * min_contrast, 2 * low)
    return (contrast >= low).view(np.uint8), contrast >= high, noise


def label_ink(mask: np.ndarray, strong: np.ndarray) -> Ink:
    """Label the components of ``mask``, box them, and tell which hold some ``strong`` ink."""
    import cv2

    count, labels = cv2.connectedComponentsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
    boxes = np.zeros((count, 4), np.int32)
    real = np.zeros(count, dtype=bool)
    if count > 1:
        # Boxes from the components' outer outlines: OpenCV's own statistics visit every pixel
        # and cost twice the labelling.
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        outlines = [c for c, h in zip(contours, hierarchy[0], strict=True) if h[3] < 0]
        points = np.concatenate(outlines).reshape(-1, 2)
        starts = np.cumsum([0] + [len(outline) for outline in outlines[:-1]])
        low = np.minimum.reduceat(points, starts, axis=0)
        high = np.maximum.reduceat(points, starts, axis=0)
        ids = labels[points[starts, 1], points[starts, 0]]
        boxes[ids, :2] = low
        boxes[ids, 2:] = high - low + 1
        real[labels[strong]] = True
        real[0] = False
    return Ink(labels, boxes, real)


def remove_lines(
    ink: Ink, mask: np.ndarray, strong: np.ndarray, min_height: int
) -> tuple[Ink, np.ndarray | None]:
    """Cut long straight lines (rules, margins, underlines, strike-throughs) out of the ink.

    A thin straight horizontal run is a line when it is much longer than the ink attached to it
    is tall (a rule under or through digits, while the bar of a 7 or the base of a 2 stays), or,
    alone, when a fifth of the picture wide and much longer than the tallest digit (so a 7's top
    bar drawn apart stays). A vertical run is most likely a 1 (or a stroke of a 4): it is a line
    only when much longer than the tallest digit, or, with no digit about, when it spans nearly
    the whole picture. What is left must again hold ``strong`` ink, so the faint ragged edges
    of a cut line do not become digits. Returns the ink without the lines, and the lines (None
    if there were none).
    """
    height, width = mask.shape
    across = thin_runs(ink, mask, (1, 3 * min_height))
    down = thin_runs(ink, mask, (max(4 * min_height, height // 5), 1))
    if not across and not down:
        return ink, None
    runs = np.zeros_like(mask)
    for run in across + down:
        runs[run.window][run.inside] = 1
    lines = np.zeros_like(mask)
    # Ink that is mostly one vertical run (a rule, or a 1) does not tell how tall digits are.
    bars = {run.owner for run in down if run.length >= 0.8 * ink.boxes[run.owner, 3]}
    tallest = tallest_digit(ink, bars, min_height, height)
    for run in across:
        x, y, w, h = (int(v) for v in ink.boxes[run.owner])
        attached = (ink.labels[y : y + h, x : x + w] == run.owner) & (
            runs[y : y + h, x : x + w] == 0
        )
        rows = np.flatnonzero(attached.any(axis=1))
        extent = int(rows[-1] - rows[0] + 1) if rows.size else 0
        # A bar's own rounded ends and soft edges are not ink attached to it.
        if extent <= 2 * run.inside.shape[0] + 2:
            extent = 0
        long = 2 * extent if extent else max(width // 5, LONG_LINE * tallest)
        if run.length >= long:
            cut_run(run, lines)
    for run in down:
        if run.length >= LINE_SPAN * height or (tallest and run.length >= LONG_LINE * tallest):
            cut_run(run, lines)
    if not lines.any():
        return ink, None
    kept = ink.real[ink.labels]
    kept[lines.view(bool)] = False
    return label_ink(kept.view(np.uint8), strong & kept), lines


def thin_runs(ink: Ink, mask: np.ndarray, kernel: tuple[int, int]) -> list[Run]:
    """Thin straight runs of real ink at least ``kernel`` long (one row or one column)."""
    import cv2

    rows, cols = kernel
    horizontal = cols > rows
    length = cols if horizontal else rows
    if mask.shape[0] <= rows or mask.shape[1] <= cols:
        return []
    # Only components at least that long can hold such a run: look just around them.
    extent = ink.boxes[:, 2 if horizontal else 3]
    long = np.flatnonzero(ink.real & (extent >= length))
    if long.size == 0:
        return []
    boxes = ink.boxes[long]
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    runs = cv2.morphologyEx(
        mask[y0:y1, x0:x1],
        cv2.MORPH_OPEN,
        np.ones(kernel, np.uint8),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if not cv2.countNonZero(runs):
        return []
    found = []
    contours, _ = cv2.findContours(runs, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        span = w if horizontal else h
        # Thin runs only: a bold stroke of a big digit is not a drawn line. The outline tells
        # a piece's area closely enough (pixels = enclosed area + half the outline) without
        # labelling every piece.
        area = cv2.contourArea(contour) + cv2.arcLength(contour, True) / 2 + 1
        if span * span < LINE_ELONGATION * area:
            continue
        col, row = (int(v) for v in contour[0, 0])
        window = runs[y : y + h, x : x + w]
        _, pieces = cv2.connectedComponents(window, connectivity=8)
        inside = pieces == pieces[row - y, col - x]
        owner = int(ink.labels[y0 + row, x0 + col])
        if ink.real[owner]:
            found.append(Run(x0 + x, y0 + y, inside, owner, horizontal))
    return found


def tallest_digit(ink: Ink, bars: set[int], min_height: int, height: int) -> int:
    """The height of the tallest digit-sized component but ``bars`` (0 if none)."""
    widths, heights = ink.boxes[:, 2], ink.boxes[:, 3]
    tall = (heights >= min_height) & (widths <= MAX_WIDTH_RATIO * heights)
    tall &= ink.real & (heights < LINE_SPAN * height)
    tall[list(bars)] = False
    return int(heights[tall].max()) if tall.any() else 0


def cut_run(run: Run, lines: np.ndarray) -> None:
    """Mark a run as line, except where it is thicker than the line (a digit's stroke on it)."""
    thickness = run.inside.sum(axis=0 if run.horizontal else 1)
    thin = thickness <= np.median(thickness) + 1
    cut = run.inside & (thin[None, :] if run.horizontal else thin[:, None])
    lines[run.window][cut] = 1


def find_regions(
    ink: Ink, lines: np.ndarray | None, rgb: np.ndarray, contrast: np.ndarray, min_height: int
) -> list[tuple[int, int, int, int, np.ndarray]]:
    """Digit-like regions of the ink: (x, y, w, h, component ids) each.

    Specks are dropped; fragments of one digit are joined (see :func:`join_fragments`); regions
    too small, too wide or as large as the whole picture are dropped.
    """
    ids = np.flatnonzero(ink.real)
    boxes = ink.boxes[ids].astype(np.int64)
    speck = max(2, int(0.35 * min_height))
    keep = np.maximum(boxes[:, 2], boxes[:, 3]) >= speck
    boxes, ids = boxes[keep], ids[keep]
    if len(ids) > MAX_COMPONENTS:
        areas = np.bincount(ink.labels.ravel(), minlength=len(ink.real))[ids]
        largest = np.argsort(-areas)[:MAX_COMPONENTS]
        boxes, ids = boxes[largest], ids[largest]
    if len(ids) == 0:
        return []

    def colour(index: int) -> np.ndarray:
        return ink_colour(ink, int(ids[index]), rgb, contrast)

    groups = join_fragments(boxes, colour, lines)
    height, width = ink.labels.shape
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
        regions.append((x0, y0, w, h, ids[members]))
    return regions


def ink_colour(ink: Ink, component: int, rgb: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """A component's ink colour in [0, 1]: its mean colour weighted towards its strongest pixels."""
    x, y, w, h = (int(v) for v in ink.boxes[component])
    window = slice(y, y + h), slice(x, x + w)
    inside = ink.labels[window] == component
    weight = contrast[window][inside].astype(np.float64) ** 4
    total = weight.sum() + 1e-12
    return (rgb[window][inside] * weight[:, None]).sum(axis=0) / (255 * total)


def join_fragments(
    boxes: np.ndarray, colour: Callable[[int], np.ndarray], lines: np.ndarray | None
) -> list[np.ndarray]:
    """Group indices of components that are pieces of one digit (union-find over joined pairs).

    Two components are joined when they share columns, are stacked with a small gap (or
    overlap), have the same ink colour (``colour(index)``, asked only for such pairs), and either
    the smaller is a flat bar on top of the other and no wider than a digit (a 5's or a 7's top
    drawn apart) or a removed line ran between them or through both. A small digit written just
    above another (a label), a bar under a digit (an underline) and a line under several digits
    stay apart.
    """
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    widths, heights = boxes[:, 2], boxes[:, 3]
    shared_columns = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
    gap = np.maximum(y0[:, None], y0[None]) - np.minimum(y1[:, None], y1[None])
    taller = np.maximum(heights[:, None], heights[None])
    stacked = (shared_columns >= 0.5 * np.minimum(widths[:, None], widths[None])) & (
        gap <= 0.15 * taller + 1
    )
    parent = np.arange(len(boxes))
    colours: dict[int, np.ndarray] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(stacked, k=1)), strict=True):
        smaller = i if heights[i] < heights[j] else j
        other = j if smaller == i else i
        # A top bar (a 5's or a 7's) no wider than a digit; a bar below is an underline.
        size = max(widths[other], heights[other])
        flat = 1.5 * heights[smaller] <= widths[smaller] <= 1.2 * size and y0[smaller] < y0[other]
        left, right = max(x0[i], x0[j]), min(x1[i], x1[j])
        # The rows between them, or, where they overlap, the rows they share.
        facing = sorted((min(y1[i], y1[j]), max(y0[i], y0[j])))
        top, bottom = facing[0] - 1, facing[1] + 1
        bridged = lines is not None and bool(lines[max(0, top) : bottom, left:right].any())
        if not (flat or bridged):
            continue
        for k in (int(i), int(j)):
            if k not in colours:
                colours[k] = colour(k)
        if np.sqrt(((colours[int(i)] - colours[int(j)]) ** 2).mean()) <= 0.2:
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

    values = contrast[own]
    if values.size == 0:
        return None
    peak = quantile(values, 0.9)
    if peak <= 0:
        return None
    # Faint anti-aliased edges just outside the threshold belong to the digit; other ink does not.
    fringe = cv2.dilate(own.view(np.uint8), SQUARE_3)
    ink = np.minimum(cv2.multiply(contrast, fringe, scale=1 / peak, dtype=cv2.CV_32F), 1)
    height, width = own.shape
    factor = MNIST_BOX * RENDER_OVERSAMPLE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    ink = cv2.resize(ink, size, interpolation=interpolation)
    # Resizing dims thin strokes and spreads edges; restore a saturated pen line with crisp edges.
    visible = ink[ink > 0.05]
    if visible.size == 0:
        return None
    ink = smoothstep(ink / np.float32(quantile(visible, 0.9)), 0.2, 0.7)
    stroke = stroke_width(ink >= 0.5)
    change = round(MNIST_STROKE * RENDER_OVERSAMPLE - stroke)
    if change >= 2 or change <= -3:
        margin = abs(change)
        ink = cv2.copyMakeBorder(ink, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=0)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin + 1, margin + 1))
        ink = cv2.dilate(ink, kernel) if change > 0 else cv2.erode(ink, kernel)
        bounds = ink_bounds(ink > 0.05)
        if bounds is None:
            return None
        top, bottom, left, right = bounds
        ink = ink[top:bottom, left:right]
    factor = MNIST_BOX / max(ink.shape)
    size = (max(1, round(ink.shape[1] * factor)), max(1, round(ink.shape[0] * factor)))
    digit = cv2.resize(ink, size, interpolation=cv2.INTER_AREA)
    return centre_by_mass(digit)


def ink_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Top, bottom, left, right (exclusive) of a boolean mask's True pixels; None if none.

    Not cv2.boundingRect: OpenCV takes an array two columns wide for a list of points.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


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

    contours, _ = cv2.findContours(core.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    outline = sum(cv2.arcLength(c, True) for c in contours)
    return max(1.0, 2.0 * float(np.count_nonzero(core)) / outline) if outline > 0 else 1.0


def centre_by_mass(digit: np.ndarray) -> np.ndarray | None:
    """Place a digit of at most 20x20 in a 28x28 frame with its centre of mass at the centre."""
    total = float(digit.sum())
    if total <= 0:
        return None
    centre_y = float(digit.sum(axis=1) @ np.arange(digit.shape[0])) / total
    centre_x = float(digit.sum(axis=0) @ np.arange(digit.shape[1])) / total
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
    x0 = min(width - 1, max(0, math.floor(x / scale)))
    y0 = min(height - 1, max(0, math.floor(y / scale)))
    x1 = min(width, max(x0 + 1, math.ceil((x + w) / scale)))
    y1 = min(height, max(y0 + 1, math.ceil((y + h) / scale)))
    return (x0, y0, x1 - x0, y1 - y0)
