"""Where digits touching each other meet: the columns to cut a region of them at, and the
pieces cut from it cleaned of their neighbours' strokes."""

from __future__ import annotations

import numpy as np

# Touching digits are also cut at likely columns (see cut_points): where even cuts into up to
# this many parts of these widths (shares of the height) would fall, and the deepest minima
# of the ink profile; pieces between them are this wide.
MAX_CUT_PARTS = 8
CUT_PITCH = (0.4, 1.0)
MAX_MINIMA = 8
PIECE_WIDTH = (0.2, 1.1)
# Ink on a cut part's edge smaller than this share of its largest piece is a neighbour's.
SLIVER = 0.3


def cut_points(own: np.ndarray) -> list[int]:
    """Columns where touching digits may meet, the region's ends included: where even cuts into
    k parts would fall (moved to the column with least ink within a third of a part's width),
    for the k its width allows (a digit 0.4-1.0 times as wide as tall), and the deepest local
    minima of its ink profile."""
    height, width = own.shape
    profile = ink_profile(own)
    points = {0, width}
    for count in range(2, MAX_CUT_PARTS + 1):
        pitch = width / count
        if not CUT_PITCH[0] * height <= pitch <= CUT_PITCH[1] * height:
            continue
        for index in range(1, count):
            centre = index * pitch
            low, high = max(1, int(centre - pitch / 3)), min(width - 1, int(centre + pitch / 3) + 1)
            bias = 0.1 * height * np.abs(np.arange(low, high) - centre) / pitch
            points.add(low + int(np.argmin(profile[low:high] + bias)))
    inner = profile[2:-2]
    minima = (
        np.flatnonzero((inner <= profile[1:-3]) & (inner <= profile[3:-1]) & (inner < profile[:-4]))
        + 2
    )
    deepest = minima[np.argsort(profile[minima], kind="stable")[:MAX_MINIMA]]
    points.update(int(column) for column in deepest)
    return sorted(points)


def ink_profile(own: np.ndarray) -> np.ndarray:
    """The ink in each column of ``own``, smoothed over three columns."""
    return np.convolve(own.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")


def without_slivers(piece: np.ndarray) -> np.ndarray:
    """A part cut from touching digits without the bits of its neighbours' strokes the cut left
    in it: small pieces of ink on its left or right edge."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        piece.view(np.uint8), None, None, None, 8
    )
    if count <= 2:
        return piece
    areas = stats[1:, cv2.CC_STAT_AREA]
    left = stats[1:, cv2.CC_STAT_LEFT]
    right = left + stats[1:, cv2.CC_STAT_WIDTH]
    on_edge = (left == 0) | (right == piece.shape[1])
    sliver = on_edge & (areas < SLIVER * areas.max())
    return piece & ~np.isin(labels, np.flatnonzero(sliver) + 1)


def split_column(own: np.ndarray) -> int:
    """Where touching digits most likely meet: the column with least ink in the middle 60%."""
    width = own.shape[1]
    profile = ink_profile(own)
    low, high = max(1, int(0.2 * width)), min(width - 1, int(0.8 * width) + 1)
    centre_bias = 0.05 * own.shape[0] * np.abs(np.arange(low, high) - width / 2) / width
    return low + int(np.argmin(profile[low:high] + centre_bias))
