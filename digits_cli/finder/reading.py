"""Reading a picture: find, classify (whole or split), keep the sure, put in reading order."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from digits_cli.config import SegmentSettings
from digits_cli.finder.crop import median
from digits_cli.finder.order import arrange
from digits_cli.finder.regions import Candidate, find_digits
from digits_cli.finder.results import CHECK_EVERY, Check, Digit, Reading, no_check

SURE = 0.9
# Every piece of a region too wide for one digit is read this surely, or none is kept.
WIDE_SURE = 0.5
# A region read as the surest row of pieces between likely cut columns: its weakest piece this sure.
CUT_SURE = 0.8
# The page's digits, to judge clutter by, are the regions read this surely.
REFERENCE_CONFIDENCE = 0.8
# Clutter: ink fainter than this share of the page's digits; a solid blob (its strong ink
# filling this share of its convex hull, this wide for its height; if of full strength, its
# stroke this thick for its height, unless that core spans under this share of its height)
# under half their height; a lone region under this share of their height, or a lone bar
# under this share; a line under this share of their strokes' width and this share of their
# strength (a hair). Strokes are measured on this many of the page's digits.
FAINT = 0.4
BLOB_SOLIDITY = 0.9
BLOB_THICKNESS = 0.35
BLOB_ASPECT = 0.45
CORE_SHARE = 0.6
# A blob under this share of the digits' height: its core filling this share of its hull.
SPECK_BLOB_HEIGHT, SPECK_SOLIDITY = 0.25, 0.85
SPECK_HEIGHT = 0.1
HAIR_STROKE = 0.35
HAIR_STRENGTH = 0.75
STROKE_SAMPLE = 15
BAR_HEIGHT = 0.35
# A form's printed lines and the pen differ by at least this (degrees between their departures
# from the paper, see angle) for the colour of a piece of ink to tell which it is.
PRINTED_APART = 7.0
# A piece of a wall or a tick is this narrow for its height at most.
WALL_ASPECT = 0.6
# Crops classified at once: a page of hundreds of regions is classified in a few batches, so a
# deadline is noticed between them.
CLASSIFY_BATCH = 64


def read_digits(
    image: np.ndarray,
    classify: Callable[[np.ndarray], np.ndarray],
    cfg: SegmentSettings,
    check: Check = no_check,
) -> Reading:
    """Find, classify and order every digit of ``image``.

    ``classify`` maps crops (N, 28, 28) float32 in [0, 1] to probabilities (N, 10). All regions
    are classified in one batch; wide regions read with less than ``SURE`` confidence may be
    digits touching, and their parts are then classified in a second batch. Digits whose
    confidence is under ``cfg.min_confidence`` are dropped. ``check`` is called between the
    steps and in their loops, and may raise to stop the work.
    """
    shape = np.shape(image)
    height, width = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
    read = read_candidates(image, classify, cfg, check)
    check()
    read = plausible(read)
    check()
    digits = [
        Digit(int(np.argmax(row)), float(row.max()), chosen.box, [float(p) for p in row])
        for chosen, row in read
    ]
    lines = arrange(digits, cfg.number_gap, [chosen.field for chosen, _ in read])
    ordered = [digit for line in lines for number in line for digit in number]
    text = "\n".join(
        " ".join("".join(str(digit.label) for digit in number) for number in line) for line in lines
    )
    return Reading(width, height, text, ordered)


def read_candidates(
    image: np.ndarray,
    classify: Callable[[np.ndarray], np.ndarray],
    cfg: SegmentSettings,
    check: Check = no_check,
) -> list[tuple[Candidate, np.ndarray]]:
    """Every region read (whole or split, whichever is surer) at ``cfg.min_confidence`` or more,
    with its probabilities."""
    candidates = find_digits(image, cfg, check)
    if not candidates:
        return []
    by_id = classify_all(candidates, classify, check)
    check()
    unsure = [
        c
        for c in candidates
        if c.splitter is not None and (c.too_wide or by_id[id(c)].max() < SURE)
    ]
    for count, candidate in enumerate(unsure):
        if count % CHECK_EVERY == 0:
            check()
        candidate.split()
    # Several touching digits: also pieces between likely cut columns, read as the surest row.
    lattices = {id(c): pieces_of(c) for c in unsure if c.cut_at_once}
    parts = [part for candidate in unsure for part in with_parts(candidate)[1:]]
    parts += [piece for pieces in lattices.values() for piece in pieces.values()]
    if parts:
        by_id |= classify_all(parts, classify, check)
    # Narrower regions (two digits touching?) whose halving read unsure too: cut them as well.
    narrow = [
        c
        for c in unsure
        if c.cutter is not None
        and id(c) not in lattices
        and choose_reading(c, by_id)[1] < cfg.min_confidence
    ]
    if narrow:
        more = {id(c): pieces_of(c) for c in narrow}
        lattices |= more
        pieces = [piece for found in more.values() for piece in found.values()]
        if pieces:
            by_id |= classify_all(pieces, classify, check)
    for candidate in unsure:
        surest(candidate, best_cut(lattices.get(id(candidate), {}), by_id), by_id)
    read = []
    for candidate in candidates:
        whole = None
        chosen_pieces = choose_reading(candidate, by_id)[0]
        if candidate.too_wide and not chosen_pieces:
            # Digits touching in a row that no cut reads surely as a whole: its pieces read
            # surely are still digits (the others are lost, not guessed).
            chosen_pieces = [p for p in leaves(candidate) if by_id[id(p)].max() >= CUT_SURE]
        for chosen in chosen_pieces:
            if by_id[id(chosen)].max() >= cfg.min_confidence:
                if chosen is not candidate:
                    # The region as found, without its parts: no reference cycle (which would
                    # keep a picture's arrays alive until the collector's next full sweep).
                    whole = whole or dataclasses.replace(
                        candidate, parts=[], splitter=None, cutter=None
                    )
                    chosen.whole = whole
                read.append((chosen, by_id[id(chosen)]))
    return read


def pieces_of(candidate: Candidate) -> dict[tuple[int, int], Candidate]:
    """A region's pieces between likely cut columns (its cutter's), none if it has no cutter."""
    return candidate.cutter() if candidate.cutter is not None else {}


def plausible(read: list[tuple[Candidate, np.ndarray]]) -> list[tuple[Candidate, np.ndarray]]:
    """The regions that look like ink written on purpose, judged against the page's own digits.

    A confident label is not enough: faint ink beside the page's digits (show-through, faint
    print), a small solid blob (dust, a speck), a lone region much smaller than the page's
    digits with no neighbour of its size (specks of any shape), a bar or blob cut by the
    picture's border (a scanner's dark edge) and a box's outline are clutter.
    """
    if len(read) < 2:
        return read
    confident = [c for c, p in read if p.max() >= REFERENCE_CONFIDENCE] or [c for c, _ in read]
    height = float(median([c.box[3] for c in confident]))
    strength = float(median([c.looks.strength for c in confident]))
    # Stroke widths (working pixels) of a few of the page's digits.
    sample = confident[:: max(1, len(confident) // STROKE_SAMPLE)]
    stroke = float(median([stroke_pixels(c) for c in sample]))
    printed = printed_colour(read, sample)
    clean = []
    for candidate, probabilities in read:
        looks = candidate.looks
        _, _, w, h = candidate.box
        aspect = w / max(1, h)
        faint = looks.strength < FAINT * strength
        cut = looks.edge and (aspect >= 2 or aspect <= 0.5 or looks.fill >= 0.6)
        # A box (a form's, a grid's cell) is never a digit; a bar fills its box, a box does not.
        box = looks.fill < 0.5 and looks.framed
        # A hair or a fibre: a line much thinner than the page's strokes, and weaker.
        hair = looks.strength < HAIR_STRENGTH * strength and (
            stroke_pixels(candidate) < HAIR_STROKE * stroke
        )
        # A piece of a blob (dust cut apart as if digits touched) is part of that blob.
        whole = candidate.whole or candidate
        blob = is_blob(candidate, height, strength) or (
            whole is not candidate and is_blob(whole, height, strength)
        )
        # A bar in the colour of the form's printed lines, not the pen's: a piece of a box's
        # wall or a comb's tick left over.
        wall = printed is not None and w < WALL_ASPECT * h and in_colour(candidate, *printed)
        if not (faint or cut or box or hair or blob or wall):
            clean.append((candidate, probabilities))
    if not clean:
        return clean
    # Then, among what is left, specks: lone regions far smaller than the page's digits. A bar
    # (a 1, or a scratch) this short for the page is a scratch.
    boxes = np.array([c.box for c, _ in clean], np.float64)
    regions = np.array([id(c.whole or c) for c, _ in clean])
    kept = []
    for index, (candidate, probabilities) in enumerate(clean):
        _, _, w, h = candidate.box
        short = h < (BAR_HEIGHT if w < BLOB_ASPECT * h else SPECK_HEIGHT) * height
        # The pieces of one region split apart (a speck of dust cut in two) are no neighbours.
        apart = regions != regions[index]
        if not (short and not has_neighbour(boxes, index, apart)):
            kept.append((candidate, probabilities))
    return kept


def printed_colour(
    read: list[tuple[Candidate, np.ndarray]], sample: list[Candidate]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The colours of the page's printed lines and of its pen (the ``sample`` of its digits),
    when they differ clearly; else None (a black pen on a black form: colour tells nothing)."""
    lines = next(
        (found.lines_colour for c, _ in read if (found := c.whole or c).lines_colour is not None),
        None,
    )
    pens = [colour for c in sample if (colour := c.looks.colour) is not None]
    if lines is None or not pens:
        return None
    pen = np.asarray(median(np.array(pens), axis=0), np.float64)
    return (lines, pen) if angle(lines, pen) >= PRINTED_APART else None


def in_colour(candidate: Candidate, lines: np.ndarray, pen: np.ndarray) -> bool:
    """Whether a region's ink is of the printed lines' colour rather than the pen's."""
    colour = candidate.looks.colour
    return colour is not None and angle(colour, lines) < 0.5 * angle(colour, pen)


def angle(first: np.ndarray, second: np.ndarray) -> float:
    """The angle (degrees) between two colours' departures from the paper: how different the
    inks are, whatever share of each pixel they cover (a thin stroke departs less)."""
    norms = float(np.linalg.norm(first) * np.linalg.norm(second))
    if norms <= 0:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(first @ second) / norms))))


def stroke_pixels(candidate: Candidate) -> float:
    """A region's mean stroke width, in working pixels."""
    return candidate.looks.thickness * candidate.box[3] * candidate.scale


def is_blob(candidate: Candidate, height: float, strength: float) -> bool:
    """Whether a region's strong ink is a small solid blob (dust, a blot), faint ink around it
    or not (dust on show-through), beside the page's digits ``height`` tall."""
    looks = candidate.looks
    _, _, _, h = candidate.box
    full = looks.strength >= 0.85 * strength
    if h >= 0.5 * height and full:
        return False  # a digit-sized region of full-strength ink: measure no further
    solid, share, aspect = looks.core
    # Small, but drawn in strokes: a small digit, its strong ink spanning it. (A speck of dust
    # with faint ink around it looks thin-stroked as a whole, its solid core far shorter.)
    if (
        full
        and looks.thickness < BLOB_THICKNESS
        and not (solid >= BLOB_SOLIDITY and share < CORE_SHARE)
    ):
        return False
    # A speck far smaller than the digits, pixelated, fills its hull less than a larger blob.
    solidity = SPECK_SOLIDITY if h < SPECK_BLOB_HEIGHT * height else BLOB_SOLIDITY
    return solid >= solidity and share * h < 0.5 * height and aspect >= BLOB_ASPECT


def has_neighbour(boxes: np.ndarray, index: int, among: np.ndarray | None = None) -> bool:
    """Whether a region of about the same height lies beside region ``index`` on its line,
    among the regions ``among`` marks (default: all)."""
    x, y, w, h = boxes[index]
    others = np.ones(len(boxes), bool) if among is None else among.copy()
    others[index] = False
    ox, oy, ow, oh = boxes[others].T
    similar = (oh >= 0.6 * h) & (oh <= 1.6 * h)
    gap = np.maximum(ox - (x + w), x - (ox + ow))
    level = np.abs((oy + oh / 2) - (y + h / 2)) <= h
    return bool((similar & (gap <= 3 * h) & level).any())


def classify_all(
    candidates: list[Candidate],
    classify: Callable[[np.ndarray], np.ndarray],
    check: Check = no_check,
) -> dict[int, np.ndarray]:
    """Probabilities (float64) of every candidate by the candidate's id, in batches of at most
    CLASSIFY_BATCH (one for most pictures), ``check`` called before each."""
    found: dict[int, np.ndarray] = {}
    for start in range(0, len(candidates), CLASSIFY_BATCH):
        check()
        batch = candidates[start : start + CLASSIFY_BATCH]
        probabilities = np.asarray(classify(np.stack([c.crop for c in batch])), dtype=np.float64)
        found |= {id(c): row for c, row in zip(batch, probabilities, strict=True)}
    return found


def best_cut(
    pieces: dict[tuple[int, int], Candidate], by_id: dict[int, np.ndarray]
) -> list[Candidate]:
    """The row of two or more ``pieces`` (keyed by their columns) spanning the region whose
    weakest piece is read surest, ties to the surer product; none if there is no such row."""
    if not pieces:
        return []
    end = max(right for _, right in pieces)
    # best[column]: (weakest confidence, sum of log confidences, pieces) of a row up to it.
    best: dict[int, tuple[float, float, list[Candidate]]] = {0: (1.0, 0.0, [])}
    for left, right in sorted(pieces, key=lambda columns: (columns[1], columns[0])):
        if left not in best:
            continue
        confidence = float(by_id[id(pieces[left, right])].max())
        weakest, logs, row = best[left]
        found = (
            min(weakest, confidence),
            logs + math.log(max(confidence, 1e-9)),
            [*row, pieces[left, right]],
        )
        if right not in best or found[:2] > best[right][:2]:
            best[right] = found
    row = best.get(end, (0.0, 0.0, []))[2]
    return row if len(row) >= 2 else []


def surest(candidate: Candidate, cut: list[Candidate], by_id: dict[int, np.ndarray]) -> None:
    """Read a region of touching digits as its ``cut`` (best_cut's row of pieces; none: keep
    its halving) when that is surer than its halving: the cut's pieces replace its parts."""
    if not cut or any(piece.too_wide for piece in cut):
        return
    _, halved = choose_reading(candidate, by_id)
    # Many rows of pieces were tried: the surest must be sure enough on its own too, else one
    # of them passes by chance (a scribble or a box's remains read as digits).
    if min(float(by_id[id(piece)].max()) for piece in cut) > max(halved, CUT_SURE):
        for piece in cut:
            piece.field = candidate.field
        candidate.parts = cut


def leaves(candidate: Candidate) -> list[Candidate]:
    """The pieces a region is split into, all the way down (itself if it has no parts)."""
    if not candidate.parts:
        return [candidate]
    return [leaf for part in candidate.parts for leaf in leaves(part)]


def with_parts(candidate: Candidate) -> list[Candidate]:
    """The candidate and, recursively, its split parts."""
    return [candidate, *(c for part in candidate.parts for c in with_parts(part))]


def choose_reading(
    candidate: Candidate, probabilities: dict[int, np.ndarray]
) -> tuple[list[Candidate], float]:
    """Read a region whole or split, whichever is surer: the pieces and their weakest confidence.

    A region too wide for a digit is read split only, and only if every piece is sure enough
    (else it is no row of digits, but a scribble, a word or a line): no pieces then.
    """
    whole = float(probabilities[id(candidate)].max())
    if not candidate.parts:
        return ([], 0.0) if candidate.too_wide else ([candidate], whole)
    pieces, weakest = [], 1.0
    for part in candidate.parts:
        part_pieces, part_weakest = choose_reading(part, probabilities)
        if not part_pieces:
            return ([], 0.0) if candidate.too_wide else ([candidate], whole)
        pieces += part_pieces
        weakest = min(weakest, part_weakest)
    if candidate.too_wide:
        return (pieces, weakest) if weakest >= WIDE_SURE else ([], 0.0)
    return (pieces, weakest) if weakest > whole else ([candidate], whole)
