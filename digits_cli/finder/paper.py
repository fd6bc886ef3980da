"""The paper and the ink: the picture as 8-bit RGB, its background, ink strength, the ink mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from digits_cli.finder.crop import SQUARE_3, median, quantile
from digits_cli.finder.results import Check, no_check

# Long side of the thumbnail on which the background is estimated (backgrounds vary slowly),
# and the window wiping out strokes there: wider than the boldest stroke of a digit as tall as
# the picture (MNIST strokes are ~11% of the digit's height).
BACKGROUND_SIDE = 160
BACKGROUND_WINDOW = 45
# A channel whose weaker polarity carries this share of the stronger's energy has both.
MIXED_POLARITY = 0.1
# A sheet on a desk covers this share of the picture, and is brighter than the desk (and at its
# border) by this many grey levels.
SHEET_SHARE = (0.2, 0.985)
SHEET_STEP = 45
# A dim photograph's sheet (paper at 70-80 grey levels) may step less at its border, yet
# sharply: at least this many levels, and half the sheet-to-desk step (a lighting gradient
# shows a tenth of it over those few pixels).
SHEET_EDGE_MIN, SHEET_EDGE_SHARE = 30, 0.5
# Canny's thresholds for a sheet's border on the grey thumbnail.
SHEET_CANNY = (40, 80)
# At least this share of the picture's border shows the desk.
SHEET_BORDER = 0.1
# Pixels sampled to measure the picture's noise level.
NOISE_SAMPLES = 20_000
# Weights summing squared 8-bit channel differences so that black on white comes to 1.
CHANNEL_WEIGHTS = np.full((1, 3), 1 / (3 * 255**2), np.float32)
DISTANCE_ROWS = 256  # rows of colour distance worked out at once


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


def estimate_background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The paper's colour (uint8) at every pixel, whatever the ink's polarity or colour, and
    where the sheet is when it lies on a darker desk (bool, None when it fills the picture).

    On a thumbnail of fixed size, a morphological closing (for ink darker than the paper) or
    opening (lighter) with a window about 28% of the picture's longer side (BACKGROUND_WINDOW of
    the thumbnail's BACKGROUND_SIDE pixels) wipes out strokes, yet keeps the paper inside loops
    and the slow changes of lighting. Each channel takes its ink's polarity
    (see :func:`ink_polarity`), so chalk on a board and blue ink on yellow paper (darker in red
    and green, lighter in blue) both work; a channel with ink of both polarities takes a median,
    which ignores sparse ink of either. A sheet on a desk (see :func:`find_sheet`) is judged by
    itself: the desk is no paper, and the ink is not its polarity.
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
    sheet = find_sheet(small)
    if sheet is not None:
        small = off_the_sheet(small, sheet)
    # A median this wide is costly: take it at half the thumbnail's size.
    half = (max(1, size[0] // 2), max(1, size[1] // 2))
    shrunk = cv2.resize(small, half, interpolation=cv2.INTER_AREA)
    local_median = cv2.resize(
        cv2.medianBlur(shrunk, BACKGROUND_WINDOW // 2 | 1), size, interpolation=cv2.INTER_LINEAR
    )
    dark_ink, mixed_ink = ink_polarity(small, local_median)
    kinds = {
        "mixed" if mixed else bool(dark) for dark, mixed in zip(dark_ink, mixed_ink, strict=True)
    }
    if len(kinds) == 1:  # usually: all channels at once
        paper = paper_colour(small, local_median, bool(dark_ink[0]), bool(mixed_ink[0]))
    else:
        paper = cv2.merge(
            [
                paper_colour(plane, median_plane, bool(dark), bool(mixed))
                for plane, median_plane, dark, mixed in zip(
                    cv2.split(small), cv2.split(local_median), dark_ink, mixed_ink, strict=True
                )
            ]
        )
    paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)
    if sheet is None:
        return paper, None
    # Off the sheet by a margin, so its border (blurred on the thumbnail) is not ink either.
    inside = cv2.erode(sheet.view(np.uint8), SQUARE_3, iterations=2)
    return paper, cv2.resize(inside, (width, height), interpolation=cv2.INTER_NEAREST) > 0


def off_the_sheet(thumbnail: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """The thumbnail with the desk around the ``sheet`` (bool) painted in the colour of the
    sheet's nearest pixel, a little inside its (blurred) border.

    The desk is no paper, and must not bleed into it. Nor may one colour for all of it (the
    sheet's median, say): where lighting darkens the sheet towards an edge, a brighter desk
    spreads across the sheet in the closing, lifting the paper there above the ink's level.
    """
    import cv2

    inside = cv2.erode(sheet.view(np.uint8), SQUARE_3, iterations=2)
    if not inside.any():
        inside = sheet.view(np.uint8)
    # Each pixel labelled by the nearest pixel of the sheet's inside (in raster order).
    _, nearest = cv2.distanceTransformWithLabels(
        (inside == 0).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    rows, cols = np.nonzero(inside)
    return thumbnail[rows[nearest - 1], cols[nearest - 1]]


def find_sheet(thumbnail: np.ndarray) -> np.ndarray | None:
    """Where a sheet of paper lies on a clearly darker desk, on the thumbnail (bool), or None.

    The sheet is the largest bright region (Otsu's threshold on grey), its ink filled in by
    taking its convex hull; it must leave some desk in view, be much brighter than the desk,
    and end in a sharp step (a lighting gradient or a coloured patch of paper is not a desk).
    When lighting darkens part of the sheet below the threshold, the bright region is grown up
    to the edges around it.
    """
    import cv2

    grey = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2GRAY)
    _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # A desk shows at the picture's border: if the border is all bright, there is none.
    border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    if border.mean() > 1 - SHEET_BORDER:
        return None
    # Nor when the picture's bright and dark halves differ less than a sheet and a desk.
    bright_mean, dark_mean = cv2.mean(grey, bright)[0], cv2.mean(grey, 1 - bright)[0]
    if bright_mean - dark_mean < SHEET_STEP:
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
    if count < 2:
        return None
    seed = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    sheet = hull(seed)
    if not is_sheet(grey, sheet):
        # Otsu's threshold split a sheet that the lighting darkens on one side, and the hull's
        # border runs across the paper there: the sheet ends where its edges are instead.
        grown = within_edges(grey, seed)
        if grown is None or not is_sheet(grey, grown):
            return None
        sheet = grown
    return sheet > 0


def hull(region: np.ndarray) -> np.ndarray:
    """The convex hull of a bool ``region`` (uint8 0/1; all 0 when the region is empty)."""
    import cv2

    outline, _ = cv2.findContours(
        region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    filled = np.zeros(region.shape, np.uint8)
    if outline:
        cv2.fillPoly(filled, [cv2.convexHull(np.concatenate(outline))], 1)
    return filled


def within_edges(grey: np.ndarray, seed: np.ndarray) -> np.ndarray | None:
    """The hull of the part of ``grey`` free of edges that holds most of ``seed`` (uint8 0/1),
    or None: a smooth change of lighting has no edges, a sheet's border has."""
    import cv2

    edges = cv2.dilate(cv2.Canny(grey, SHEET_CANNY[0], SHEET_CANNY[1]), SQUARE_3)
    free = (edges == 0).astype(np.uint8)
    count, parts = cv2.connectedComponents(free, connectivity=4)
    overlap = np.bincount(parts[seed & (free > 0)], minlength=count)
    overlap[0] = 0  # the edges themselves
    if count < 2 or overlap.max() == 0:
        return None
    # Grown back by the pixel the edges were widened by.
    return cv2.dilate(hull(parts == int(np.argmax(overlap))), SQUARE_3)


def is_sheet(grey: np.ndarray, sheet: np.ndarray) -> bool:
    """Whether ``sheet`` (uint8 0/1) covers a sheet's share of the picture, is much brighter
    than the rest, and ends in a sharp step."""
    import cv2

    if not SHEET_SHARE[0] <= float(sheet.mean()) <= SHEET_SHARE[1]:
        return False
    desk = sheet == 0
    step = float(median(grey[sheet > 0])) - float(median(grey[desk]))
    if step < SHEET_STEP:
        return False
    # A sharp border: two pixels in and out of it differ as much as the sheet and the desk do
    # (or, on a dim picture, by half that step).
    ring_in = (sheet > 0) & (cv2.erode(sheet, SQUARE_3, iterations=2) == 0)
    ring_out = desk & (cv2.dilate(sheet, SQUARE_3, iterations=2) > 0)
    edge = float(median(grey[ring_in])) - float(median(grey[ring_out]))
    return edge >= min(SHEET_STEP, max(SHEET_EDGE_MIN, SHEET_EDGE_SHARE * step))


def paper_colour(thumbnail: np.ndarray, median: np.ndarray, dark: bool, mixed: bool) -> np.ndarray:
    """The paper of a thumbnail (its channels sharing one ink polarity), smooth.

    Ink darker than the paper is wiped out by a closing, lighter by an opening (after thin lines
    of the other polarity are wiped out by a small opening or closing); ink of both polarities
    by the ``median`` (at the cost of bold strokes bleeding into it).
    """
    import cv2

    box = (BACKGROUND_WINDOW // 2, BACKGROUND_WINDOW // 2)
    if mixed:
        return cv2.blur(cv2.blur(median, box), box)
    window = np.ones((BACKGROUND_WINDOW, BACKGROUND_WINDOW), np.uint8)
    operation = cv2.MORPH_CLOSE if dark else cv2.MORPH_OPEN
    # Thin lines of the other polarity go first (a blue rule is lighter than yellow paper, in
    # blue): the closing would spread them over the paper, far above its own level.
    against = cv2.MORPH_OPEN if dark else cv2.MORPH_CLOSE
    thumbnail = cv2.morphologyEx(thumbnail, against, SQUARE_3, borderType=cv2.BORDER_REPLICATE)
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
    # Departures -255..255 from two 8-bit histograms (darker, lighter; each saturates the other
    # at 0): a third of the time of one 511-bin histogram of 16-bit values. A departure of 0
    # weighs nothing.
    darker = channel_histograms(cv2.subtract(paper, rgb), 256)
    lighter = channel_histograms(cv2.subtract(rgb, paper), 256)
    departures = np.concatenate([darker[:, :0:-1], np.zeros((3, 1)), lighter[:, 1:]], axis=1)
    local_balance = polarity_balance(departures, np.arange(-255, 256)[None, :])
    one_sided = (1 - MIXED_POLARITY) / (1 + MIXED_POLARITY)
    balance = np.where(np.abs(local_balance) >= one_sided, local_balance, overall_balance)
    mixed = np.abs(balance) < one_sided
    return balance >= 0, mixed


def channel_histograms(image: np.ndarray, bins: int) -> np.ndarray:
    """How many pixels (float64) take each value 0..bins-1, per channel: (3, bins).

    ``image`` is (H, W, 3) uint8. OpenCV's histogram, not np.bincount of each channel:
    a tenth of the time (no strided copies), and exact (float32 counts up to 2**24 pixels of a
    thumbnail).
    """
    import cv2

    return np.stack(
        [cv2.calcHist([image], [channel], None, [bins], [0, bins]).ravel() for channel in range(3)]
    ).astype(np.float64)


def polarity_balance(counts: np.ndarray, departures: np.ndarray) -> np.ndarray:
    """Per channel, darker minus lighter energy over their sum, in [-1, 1], from ``counts`` of
    pixels departing from the paper by ``departures``; a departure's energy is its cube, so ink
    outweighs noise and shading.
    """
    departures = departures.astype(np.float64)
    energy = counts * (departures * departures * departures)  # not ** 3: numpy's pow, 7x slower
    darker = -np.minimum(energy, 0).sum(axis=1)
    lighter = np.maximum(energy, 0).sum(axis=1)
    return (darker - lighter) / np.maximum(darker + lighter, 1e-9)


def colour_distance(rgb: np.ndarray, background: np.ndarray, check: Check = no_check) -> np.ndarray:
    """Euclidean RGB distance per pixel (float32), scaled so black on white is 1.

    A band of rows at a time, ``check`` called before each: the float temporaries stay small
    (a 2000x2000 page's were 64 MB) and a deadline is noticed within the step.
    """
    import cv2

    height = rgb.shape[0]
    distance = np.empty(rgb.shape[:2], np.float32)
    for top in range(0, height, DISTANCE_ROWS):
        check()
        rows = slice(top, min(height, top + DISTANCE_ROWS))
        difference = cv2.absdiff(rgb[rows], background[rows])
        squared = cv2.multiply(difference, difference, dtype=cv2.CV_32F)
        distance[rows] = cv2.sqrt(cv2.transform(squared, CHANNEL_WEIGHTS)).reshape(
            difference.shape[:2]
        )
    return distance


def ink_mask(
    contrast: np.ndarray, min_contrast: float, sheet: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Candidate ink (uint8 0/1, above the low threshold), strong ink (bool), and the noise level.

    Hysteresis: candidate ink forms regions, and a region is ink only if some pixel in it is
    strong, so faint stroke edges stay attached while noise does not start ink. The noise is
    measured on the ``sheet`` if there is one.
    """
    step = max(1, int(np.sqrt(contrast.size / NOISE_SAMPLES)))
    # On paper the contrast is the size of 3-channel noise, whose first quartile is 0.64 sigma;
    # the first quartile stays on paper even when ink covers most of the picture.
    sample = contrast[::step, ::step]
    if sheet is not None and sheet[::step, ::step].any():
        sample = sample[sheet[::step, ::step]]  # the paper is on the sheet, not the desk
    noise = quantile(sample.ravel(), 0.25) / 0.64
    low, high = ink_thresholds(min_contrast, noise)
    return (contrast >= low).view(np.uint8), contrast >= high, noise


def ink_thresholds(min_contrast: float, noise: float) -> tuple[float, float]:
    """The low (candidate ink) and high (strong ink) contrast thresholds for a noise level."""
    low = max(min_contrast, 3.5 * noise)
    return low, max(2.5 * min_contrast, 2 * low)


def line_colour(
    rgb: np.ndarray, background: np.ndarray, lines: np.ndarray | None
) -> np.ndarray | None:
    """The median departure from the paper (RGB, paper minus ink) of the lines taken out, or
    None if none were."""
    if lines is None:
        return None
    on_lines = lines > 0
    if not on_lines.any():
        return None
    departures = background[on_lines].astype(np.int16) - rgb[on_lines]
    return np.asarray(median(departures, axis=0), np.float64)
