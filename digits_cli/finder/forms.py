"""Printed form fields: rows of boxes, and combs (a base line with ticks), one digit per cell.

A field is found from its lines: a horizontal line with upright walls standing on it that reach
another horizontal line (boxes), or with three or more ticks of one length at a regular pitch
rising from it (a comb). Walls and ticks are as thin as the field's lines and straight, which a
handwritten 1 seldom is; a field's lines are cut out whole (walls too), so a box is never a digit,
and strokes crossing them stay (see :func:`ink.cut_run`).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from digits_cli.finder.crop import median, percentile
from digits_cli.finder.ink import Ink, Run, thin_runs
from digits_cli.finder.results import CHECK_EVERY, Box, Check, no_check

# A field's line is at least this many times as long as its ink (walls, digits) is tall.
FIELD_LENGTH = 1.3
# A line this share of the page wide is squared paper's, not a form field's.
PAGE_WIDE = 0.9
# An upright run meets a horizontal line when it ends within this many pixels of it.
REACH = 2
# Walls and ticks are at most this many times as thick as the field's line (plus a pixel).
WALL_THICKNESS = 1.6
# A comb has at least this many ticks, their lengths within this ratio, their pitch within
# this share of its mean.
MIN_TICKS = 3
TICK_LENGTHS = 1.35
TICK_PITCH = 0.2
# A tick leans by at most this many pixels across for each pixel up (11 degrees).
TICK_SLANT = 0.2
# A wall is inked along this share of the rows between its field's lines.
WALL_COVER = 0.84
# An upright as long as this share of the smallest digit may be a wall or a tick.
MIN_UPRIGHT = 0.5


def find_fields(
    ink: Ink, mask: np.ndarray, across: list[Run], min_height: int, check: Check = no_check
) -> tuple[list[Run], list[Run], list[Box]]:
    """The walls and ticks of form fields, the fields' horizontal lines, and each field's box
    (x, y, w, h at working resolution: where its digits are written)."""

    # A field's line is long for the ink it holds (two cells at least), or spans the page
    # (squared paper); a digit's stroke is neither.
    page_width = mask.shape[1]
    across = [
        run
        for run in across
        if run.length >= FIELD_LENGTH * ink.boxes[run.owner, 3] or run.length >= page_width / 2
    ]
    if not across:
        return [], [], []
    owners = {run.owner for run in across}
    # Which horizontal run is where (index + 1); uprights are looked for without them, else a
    # thick line survives an upright opening and walls and lines are one piece.
    index = np.zeros(mask.shape, np.int32)
    for k, run in enumerate(across):
        index[run.window][run.inside] = k + 1
    shortest = max(3, round(MIN_UPRIGHT * min_height))
    without = mask.copy()
    without[index > 0] = 0
    uprights = thin_runs(ink, without, (shortest, 1), owners, elongation=3)
    if not uprights:
        return [], [], []

    def line_at(row: int, cols: slice) -> int:
        """The line (index + 1, 0: none) within REACH of a row's columns, so ends just short of
        a line still meet it (what dilating the index map would give there, at that point)."""
        near = index[
            max(0, row - REACH) : row + REACH + 1, max(0, cols.start - REACH) : cols.stop + REACH
        ]
        return int(near.max()) if near.size else 0

    # A line's thickness as its area over its length (a slightly tilted line's columns are
    # thinner than it); a pen line of at least two pixels, blur and all.
    thickness = [max(2.0, run.inside.sum() / run.inside.shape[1]) for run in across]
    walls: dict[int, list[Run]] = defaultdict(list)  # by the run they stand on
    ticks: dict[int, list[Run]] = defaultdict(list)
    tops: dict[int, set[int]] = defaultdict(set)  # the lines a base's walls reach up to
    for count, upright in enumerate(uprights):
        if count % CHECK_EVERY == 0:
            check()
        rows, cols = upright.window
        top = line_at(rows.start, cols)
        bottom = line_at(rows.stop - 1, cols)
        base = bottom or top
        if not base:
            continue
        # Thin along most of its length (a digit touching a wall thickens it only there).
        width = percentile(upright.inside.sum(axis=1), 25)
        thickest = WALL_THICKNESS * thickness[base - 1] + 1
        if width > thickest:
            continue  # a bold stroke, not a printed line
        # A tick is straight: no wider than it is thick, but for a slant (a digit's curved
        # stroke standing on an underline has thin rows too, across a wide window).
        straight = upright.inside.shape[1] <= thickest + TICK_SLANT * upright.inside.shape[0]
        upright = wall_core(upright, width)
        if top and bottom and top != bottom:
            walls[bottom].append(upright)
            tops[bottom].add(top)
        elif bottom and not top and straight:
            ticks[bottom].append(upright)
    field_walls: list[Run] = []
    field_lines: set[int] = set()
    fields: list[Box] = []
    for base, standing in walls.items():
        if len(standing) < 2:
            continue
        field_lines |= {base, *tops[base]}
        line = across[base - 1]
        # Between the lines, as most walls tell (a digit's stroke beyond a line lengthens some).
        top = round(float(median([w.y for w in standing])))
        bottom = round(float(median([w.y + w.inside.shape[0] for w in standing])))
        field = (line.x, top, line.inside.shape[1], bottom - top)
        if line.length < PAGE_WIDE * page_width:
            fields.append(field)  # squared paper's cells hold digits of many numbers
        # Every wall of the field, touched by a digit or not: columns inked nearly all the way
        # between its lines (a digit's stroke seldom is).
        thickest = WALL_THICKNESS * thickness[base - 1] + 1
        places = wall_places([w.x + w.inside.shape[1] / 2 for w in standing], field, thickest)
        every = columns_inked(without, field, line.owner, thickest, places)
        field_walls += [every] if every is not None else standing
    for base, rising in ticks.items():
        # Ticks share one length (a stroke touching one makes it longer: it is left out) and
        # one pitch (a tick hidden by a stroke makes a double step).
        typical = float(median([t.inside.shape[0] for t in rising]))
        standing = [
            t
            for t in rising
            if typical / TICK_LENGTHS <= t.inside.shape[0] <= typical * TICK_LENGTHS
        ]
        if len(standing) < MIN_TICKS:
            continue
        lengths = [t.inside.shape[0] for t in standing]
        xs = np.sort([t.x for t in standing])
        steps = np.diff(xs)
        pitch = float(np.min(steps))
        multiples = steps / max(1.0, pitch)
        if pitch <= 0 or np.abs(multiples - np.round(multiples)).max() > TICK_PITCH:
            continue
        field_lines.add(base)
        field_walls += standing
        line = across[base - 1]
        # The digits stand on the base line, about a pitch tall.
        tall = round(max(pitch, 2.0 * max(lengths)))
        bottom = max(t.y + t.inside.shape[0] for t in standing)
        if line.length < PAGE_WIDE * page_width:
            fields.append((line.x, bottom - tall, line.inside.shape[1], tall))
    unique = list({id(w): w for w in field_walls}.values())
    # Walls are cut as found (their cores); the lines through cut_run.
    return unique, [across[k - 1] for k in sorted(field_lines)], fields


def wall_core(upright: Run, width: float) -> Run:
    """The upright's line alone: the pixels along its straight centre line, as thick as its thin
    rows, so a stroke touching it keeps its own pixels."""
    inside = upright.inside
    widths = inside.sum(axis=1)
    rows = np.flatnonzero((widths > 0) & (widths <= width + 1))
    if rows.size < 2:
        return upright
    cols = np.arange(inside.shape[1])
    centres = (inside[rows] * cols).sum(axis=1) / widths[rows]
    slope, offset = np.polyfit(rows, centres, 1)
    every = np.arange(inside.shape[0])[:, None]
    core = np.abs(cols[None, :] - (offset + slope * every)) <= width / 2 + 0.5
    return Run(upright.x, upright.y, inside & core, upright.owner, upright.horizontal)


def wall_places(centres: list[float], field: Box, thickest: float) -> np.ndarray:
    """Where a field's walls stand (columns from its left), from those found: at one pitch."""
    x, _, w, _ = field
    xs = np.sort(np.array(centres)) - x
    steps = np.diff(xs)
    steps = steps[steps > 2 * thickest]
    if steps.size == 0:
        return xs
    smallest = float(steps.min())
    pitch = float(np.mean(steps / np.maximum(1, np.round(steps / smallest))))
    first = xs[0] - pitch * np.floor(xs[0] / pitch)
    return np.arange(first, w + pitch / 2, pitch)


def columns_inked(
    without: np.ndarray, field: Box, owner: int, thickest: float, places: np.ndarray
) -> Run | None:
    """The field's walls as one run: the columns of ink (lines left out) spanning nearly all the
    rows between its lines, with a neighbouring column half inked (a blurred wall's edge), in
    groups no more than ``thickest`` wide (a bolder upright is a digit's stroke), where walls
    stand (``places``, columns from the field's left: a 1 written in a box is no wall)."""
    x, y, w, h = field
    band = without[y : y + h, x : x + w].astype(bool)
    if band.size == 0:
        return None
    cover = band.mean(axis=0)
    near = np.abs(np.arange(w)[:, None] - places[None, :]).min(axis=1) <= thickest / 2 + 2
    wall = (cover >= WALL_COVER) & near
    if not wall.any():
        return None
    edge = (cover >= 0.5) & near
    wall |= edge & (np.roll(wall, 1) | np.roll(wall, -1))
    # Groups of consecutive wall columns: too wide a group is a stroke, not a printed wall.
    change = np.flatnonzero(np.diff(np.concatenate([[0], wall.view(np.int8), [0]])))
    for start, stop in zip(change[::2], change[1::2], strict=True):
        if stop - start > thickest:
            wall[start:stop] = False
    if not wall.any():
        return None
    return Run(x, y, band & wall[None, :], owner, False)
