"""MNIST-style crops: a region's ink scaled, stroke-adjusted, fitted in 20x20, centred in 28x28."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

MNIST_SIZE = 28
MNIST_BOX = 20
# Median stroke width of MNIST test digits in the 28x28 frame (2 * ink area / contour length).
MNIST_STROKE = 2.25
# Oversampling of the 20x20 box while stroke widths are adjusted, so adjustments are sub-pixel.
RENDER_OVERSAMPLE = 2
SQUARE_3 = np.ones((3, 3), np.uint8)


def ink_strength(contrast: np.ndarray, own: np.ndarray) -> float:
    """A region's ink strength: the 90th percentile of its ``contrast`` over its ink ``own``."""
    values = contrast[own]
    return quantile(values, 0.9) if values.size else 0.0


def mnist_crop(contrast: np.ndarray, own: np.ndarray, peak: float) -> np.ndarray | None:
    """The region's ink as MNIST draws digits: (28, 28) float32, white on black, or None if empty.

    The ink is scaled to its own strength (cores saturate like MNIST's pen), its strokes thickened
    or thinned to MNIST's width at the final size, fitted in 20x20 keeping the aspect ratio with
    area averaging, then shifted so its centre of mass is the centre of the 28x28 frame.
    ``peak`` is the region's :func:`ink_strength`.
    """
    import cv2

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


# From this many values on, quantile looks for a run of equal values at either end first.
LONG_SAMPLE = 4096


def quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a non-empty 1-d array (nearest rank; faster than np.percentile)."""
    rank = min(len(values) - 1, int(q * len(values)))
    if len(values) >= LONG_SAMPLE:
        # np.partition slows down ten-fold when the rank falls in a long run of equal values:
        # 2.6 ms for the noise sample of a clean picture (34,000 contrasts, 98% of them 0, the
        # paper's), a fifth of its whole reading. Such runs lie at the ends, where a count
        # finds the answer in microseconds.
        lowest = values.min()
        if np.count_nonzero(values == lowest) > rank:
            return float(lowest)
        highest = values.max()
        if np.count_nonzero(values == highest) >= len(values) - rank:
            return float(highest)
    return float(np.partition(values, rank)[rank])


def median(values: ArrayLike, axis: int | None = None) -> Any:
    """np.median (the mean of the two middle values of an even count) without its NaN check,
    whose first call imports numpy.ma: 30-45 ms of a cold `digits predict`."""
    array = np.asarray(values)
    if axis is None:
        array, axis = array.ravel(), 0
    half = array.shape[axis] // 2
    if array.shape[axis] % 2:
        middle = np.partition(array, half, axis=axis).take(half, axis=axis)
        return middle.astype(np.float64) if array.dtype.kind in "iub" else middle
    middle = np.partition(array, [half - 1, half], axis=axis).take([half - 1, half], axis=axis)
    return np.mean(middle, axis=axis)


def percentile(values: ArrayLike, q: float) -> float:
    """np.percentile(values, q) (linear interpolation) of a non-empty array, in float64 (as
    numpy's for integers), without the np.unique call that imports numpy.ma on first use: 45 ms
    of a cold read of a form."""
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=None)
    position = (len(ordered) - 1) * (q / 100)  # as numpy rounds it
    below = int(position)
    low, high = ordered[below], ordered[min(below + 1, len(ordered) - 1)]
    fraction = position - below
    # numpy's lerp: from the nearer end, so that the ends are exact.
    if fraction >= 0.5:
        return float(high - (high - low) * (1 - fraction))
    return float(low + (high - low) * fraction)


def smoothstep(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, a smooth S-curve between."""
    t = (values - low) / (high - low)
    # np.clip, by its two ufuncs in place (the wrapper costs more than the work on a crop).
    np.minimum(np.maximum(t, 0, out=t), 1, out=t)
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
    return np.minimum(np.maximum(frame, 0, out=frame), 1, out=frame)  # np.clip, in place
