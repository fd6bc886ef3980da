"""Synthetic pages with real-world layouts, one generator per condition, for the digit finder.

Conditions (issue 10): digits in form boxes and comb fields, pages photographed askew on a desk,
numbers underlined by hand, small digits, a 200-dpi scan of a 10x10 grid with drifting rows and
scanner clutter, ruled notebook paper, digits touching each other, mixed digit sizes. Digits are
MNIST **test** digits (never seen in training) and, for some numbers, printed digits in the
machine's fonts. Every picture has ground truth per digit (label, [x, y, w, h]) and per picture
(its text in reading order: numbers separated by spaces, rows by newlines).

    .venv/bin/python bench/layouts.py OUT_DIR [--count 20] [--seed 0] [--condition boxes ...]

writes the pictures and ``ground-truth.json`` for inspection; bench/finder_quality.py builds the
same pictures in memory. Everything (layout, colours, sizes, slant, clutter) is drawn from the
seed, and varied widely on purpose: the finder is judged on harder unseen pictures.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from layout_parts import (
    DESKS,
    FORM_LINES,
    NOISELESS,
    WORDS,
    Writer,
    baseline_of,
    colours,
    compose,
    flat,
    font_paths,
    free_rows,
    maybe_font,
    sample,
)
from PIL import Image, ImageDraw, ImageFont
from synthetic import DEFAULT_DIGITS, PENS, Sample, load_digits, paste_digit

CONDITIONS = ("boxes", "askew", "underline", "small", "scan", "ruled", "touching", "mixed")


def boxes(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Form fields: digits written one per printed box, or in a comb field (ticks on a line)."""
    width, height = (int(v) for v in rng.choice([(800, 600), (1024, 768), (640, 480), (1200, 900)]))
    paper, pen = colours(rng)
    line_colour = FORM_LINES[rng.integers(len(FORM_LINES))]
    if np.sqrt(((paper - np.array(line_colour)) ** 2).mean()) < 0.2:
        line_colour = FORM_LINES[0]  # a form's boxes are printed to be seen
    notes.append("line colour " + ",".join(f"{c:.2f}" for c in line_colour))
    alpha, lines = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(18, min(70, height / 9)))
    cell_h = digit_height * rng.uniform(1.15, 1.6)
    cell_w = cell_h * rng.uniform(0.75, 1.1)
    thickness = int(rng.integers(1, 4))
    fields = int(rng.integers(1, 5))
    row_step = cell_h * rng.uniform(1.6, 2.6)
    top = rng.uniform(0.05, 0.2) * height
    rows = []
    for index in range(fields):
        y0 = top + index * row_step
        if y0 + cell_h > 0.95 * height:
            break
        row, x0 = [], rng.uniform(0.03, 0.3) * width
        for _ in range(int(rng.integers(1, 3))):
            cells = int(rng.integers(2, 9))
            if x0 + cells * cell_w > 0.97 * width:
                break
            comb = rng.random() < 0.35
            draw_field(lines, x0, y0, cells, cell_w, cell_h, thickness, comb, rng)
            filled = cells - int(rng.integers(0, 3)) if rng.random() < 0.3 else cells
            printed = maybe_font(rng, 0.15)
            number = []
            for cell in range(max(1, filled)):
                size = digit_height * rng.uniform(0.85, 1.1)
                ink, label = writer.glyph(printed)
                rows_, cols_ = np.nonzero(ink)
                wide = size * (np.ptp(cols_) + 1) / (np.ptp(rows_) + 1)
                # Written in the cell, often straying onto its lines (or over the top); printed
                # digits are set in the middle.
                stray = 0.04 if printed else 0.15
                dx = (cell_w - wide) / 2 + rng.uniform(-stray, stray) * cell_w
                dy = (cell_h - size) / 2 + rng.uniform(-stray, stray) * cell_h
                box = paste_digit(alpha, ink, x0 + cell * cell_w + dx, y0 + dy, size)
                if box is not None:
                    number.append({"label": label, "box": box})
            row.append(number)
            x0 += cells * cell_w + rng.uniform(1.5, 4) * cell_w
        rows.append(row)
    page = compose((width, height), paper, [(lines, line_colour), (alpha, pen)])
    return sample(rng, page, rows, notes)


def draw_field(
    lines: np.ndarray,
    x0: float,
    y0: float,
    cells: int,
    cell_w: float,
    cell_h: float,
    thickness: int,
    comb: bool,
    rng: np.random.Generator,
) -> None:
    """A row of ``cells`` boxes (or a comb: a base line with ticks) drawn into ``lines``."""
    x1, y1 = x0 + cells * cell_w, y0 + cell_h
    tilt = rng.uniform(-0.012, 0.012)  # a form is printed straight, photographed nearly so

    def point(x: float, y: float) -> tuple[int, int]:
        return round(x), round(y + tilt * (x - x0))

    def segment(a: tuple[float, float], b: tuple[float, float]) -> None:
        cv2.line(lines, point(*a), point(*b), 1.0, thickness, cv2.LINE_AA)

    segment((x0, y1), (x1, y1))
    if comb:
        tick = cell_h * rng.uniform(0.25, 0.5)
        for cell in range(cells + 1):
            segment((x0 + cell * cell_w, y1 - tick), (x0 + cell * cell_w, y1))
        return
    segment((x0, y0), (x1, y0))
    for cell in range(cells + 1):
        segment((x0 + cell * cell_w, y0), (x0 + cell * cell_w, y1))


def askew(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """A page with rows of numbers, photographed 3-8 degrees askew on a desk, edges in view."""
    width, height = (int(v) for v in rng.choice([(800, 600), (1024, 768), (1280, 960), (640, 480)]))
    angle = float(rng.uniform(3, 8) * rng.choice([-1, 1]))
    notes.append(f"angle {angle:.1f}")
    paper, pen = colours(rng)
    page_w, page_h = int(width * rng.uniform(0.7, 0.9)), int(height * rng.uniform(0.75, 0.92))
    alpha = np.zeros((page_h, page_w), np.float32)
    digit_height = float(rng.uniform(18, min(70, page_h / 8)))
    row_count = int(rng.integers(2, 6))
    row_step = digit_height * rng.uniform(1.5, 2.2)
    row_count = max(1, min(row_count, int((page_h * 0.85) / row_step)))
    rows = free_rows(rng, writer, alpha, digit_height, row_count, 0.06 * page_h, row_step,
                     slope=(-1.5, 1.5), wave=0.04)  # fmt: skip
    sheet = compose((page_w, page_h), paper, [(alpha, pen)])
    desk = np.array(DESKS[rng.integers(len(DESKS))], np.float32)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = desk
    texture = rng.normal(0, 0.03, (height, width, 1)).astype(np.float32)
    canvas += 0 if NOISELESS[0] else texture  # the desk's grain
    ox, oy = (width - page_w) / 2 + rng.uniform(-0.05, 0.05) * width, (height - page_h) / 2
    matrix = cv2.getRotationMatrix2D((page_w / 2, page_h / 2), angle, 1.0)
    matrix[:, 2] += (ox, oy)
    warped = cv2.warpAffine(sheet, matrix, (width, height), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones((page_h, page_w), np.float32), matrix, (width, height))
    canvas = canvas * (1 - cover[:, :, None]) + warped * cover[:, :, None]
    for number in (n for r in rows for n in r):
        for digit in number:
            digit["box"] = rotated_box(digit["box"], matrix)
    return sample(rng, canvas, rows, notes)


def rotated_box(box: list[int], matrix: np.ndarray) -> list[int]:
    """The bounding box of ``box`` moved by an affine ``matrix``, a little tighter than the hull."""
    x, y, w, h = box
    # Shrink a little first: a rotated box's corners are outside the ink.
    corners = np.array(
        [[x + 0.1 * w, y + 0.1 * h], [x + 0.9 * w, y + 0.1 * h],
         [x + 0.1 * w, y + 0.9 * h], [x + 0.9 * w, y + 0.9 * h]]
    )  # fmt: skip
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    (x0, y0), (x1, y1) = moved.min(axis=0), moved.max(axis=0)
    grow_w, grow_h = 0.1 * w, 0.1 * h
    return [
        round(x0 - grow_w),
        round(y0 - grow_h),
        round(x1 - x0 + 2 * grow_w),
        round(y1 - y0 + 2 * grow_h),
    ]


def underline(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Numbers underlined by hand: a wavy stroke touching (or crossing) the digits' feet."""
    width, height = (int(v) for v in rng.choice([(640, 480), (800, 600), (1024, 768)]))
    paper, pen = colours(rng)
    alpha = np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(16, min(90, height / 6)))
    row_step = digit_height * rng.uniform(1.8, 2.5)
    row_count = max(1, min(int(rng.integers(1, 5)), int(0.85 * height / row_step)))
    rows = free_rows(rng, writer, alpha, digit_height, row_count, 0.06 * height, row_step,
                     slope=(-3, 3), wave=0.03)  # fmt: skip
    same_pen = rng.random() < 0.7
    marks = np.zeros_like(alpha)
    for number in (n for r in rows for n in r):
        if not number or rng.random() < 0.15:
            continue
        xs = [d["box"][0] for d in number] + [d["box"][0] + d["box"][2] for d in number]
        feet = [(d["box"][0] + d["box"][2] / 2, d["box"][1] + d["box"][3]) for d in number]
        x0 = min(xs) - rng.uniform(0, 0.4) * digit_height
        x1 = max(xs) + rng.uniform(0, 0.4) * digit_height
        # Touching the feet: from a little above the lowest foot to a little below it.
        offset = rng.uniform(-0.08, 0.06) * digit_height
        ys = np.interp([x0, x1], [f[0] for f in feet] if len(feet) > 1 else [x0, x1],
                       [f[1] for f in feet] if len(feet) > 1 else [feet[0][1]] * 2)  # fmt: skip
        steps = 12
        points = []
        for k in range(steps + 1):
            t = k / steps
            px = x0 + t * (x1 - x0)
            py = ys[0] + t * (ys[1] - ys[0]) + offset + rng.normal(0, 0.02) * digit_height
            points.append((round(px), round(py)))
        thickness = max(1, round(digit_height * rng.uniform(0.04, 0.12)))
        cv2.polylines(alpha if same_pen else marks, [np.array(points, np.int32)], False, 1.0,
                      thickness, cv2.LINE_AA)  # fmt: skip
        if rng.random() < 0.15:  # a double underline
            shifted = [(px, py + 3 * thickness + 2) for px, py in points]
            cv2.polylines(alpha if same_pen else marks, [np.array(shifted, np.int32)], False,
                          1.0, thickness, cv2.LINE_AA)  # fmt: skip
    other = np.array(PENS[rng.integers(len(PENS))], np.float32)
    page = compose((width, height), paper, [(marks, other), (alpha, pen)])
    return sample(rng, page, rows, notes)


def small(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Many numbers with digits 10-16 px tall."""
    width, height = (int(v) for v in rng.choice([(640, 480), (800, 600), (480, 360)]))
    paper, pen = colours(rng)
    alpha = np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(10, 16))
    row_step = digit_height * rng.uniform(1.6, 3.5)
    row_count = max(1, min(int(rng.integers(2, 10)), int(0.85 * height / row_step)))
    rows = free_rows(rng, writer, alpha, digit_height, row_count, 0.05 * height, row_step,
                     slope=(-2, 2), gap=(0.12, 0.3), printed_share=0.1)  # fmt: skip
    page = compose((width, height), paper, [(alpha, pen)])
    return sample(rng, page, rows, notes, mild=True)


def scan(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """A 200-dpi A4 scan: a 10x10 grid of digits in drifting rows, a dark scanner edge, dust and
    mirrored printed words showing through from the back."""
    width, height = int(rng.integers(1580, 1700)), int(rng.integers(2200, 2340))
    if rng.random() < 0.3:
        width, height = height, width  # scanned sideways
    paper = np.array((0.96, 0.96, 0.94), np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    pen = np.array(PENS[rng.choice([0, 1, 4])], np.float32)
    alpha = np.zeros((height, width), np.float32)
    through = np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(45, 100))
    pitch_x = (0.84 * width) / 10
    drift = rng.uniform(-5, 5)  # the sheet lay askew on the glass; each row strays a little more
    rise = math.tan(math.radians(abs(drift) + 1)) * 0.9 * width
    # Lone digits, clearly apart (a gap of at least a digit's height) and rows clearly apart.
    digit_height = min(digit_height, (0.9 * height - rise) / 19, pitch_x / 2.1)
    pitch_y = min((0.9 * height - rise - digit_height) / 10, digit_height * 3)
    left = rng.uniform(0.05, 0.1) * width
    top = rng.uniform(0.03, 0.05) * height + (rise if drift < 0 else 0)
    rows = []
    for row_index in range(10):
        y = top + row_index * pitch_y + digit_height
        slope = drift + rng.uniform(-0.75, 0.75)
        base = baseline_of(rng, y, left, slope, rng.uniform(0, 0.12) * digit_height, width)
        row = []
        for column in range(10):
            x = left + column * pitch_x + rng.uniform(-0.06, 0.06) * pitch_x
            number, _ = writer.number(alpha, x, base, digit_height, 1)
            row.append(number)
        rows.append(row)
    # Show-through: mirrored printed lines from the back of the sheet.
    fonts = font_paths()
    if fonts:
        sheet = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(sheet)
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(28, 60)))
        for line_y in range(int(rng.integers(40, 200)), height, int(rng.integers(70, 160))):
            words = " ".join(rng.choice(WORDS, int(rng.integers(3, 10))))
            draw.text((int(rng.integers(40, 300)), line_y), words, fill=255, font=font)
        through = cv2.GaussianBlur(np.asarray(sheet, np.float32)[:, ::-1] / 255, (0, 0), 1.5)
        through *= float(rng.uniform(0.08, 0.22))
    dust = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(10, 60))):
        radius = float(np.exp(rng.uniform(np.log(1), np.log(8))))
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (max(1, round(radius)), max(1, round(radius * rng.uniform(0.4, 1.2))))
        cv2.ellipse(
            dust, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.5, 1)), -1
        )
    for _ in range(int(rng.integers(0, 4))):  # hairs and fibres
        start = np.array((rng.integers(width), rng.integers(height)), np.float64)
        points = [start + np.cumsum(rng.normal(0, 6, (12, 2)), axis=0)]
        cv2.polylines(dust, [points[0].astype(np.int32)], False, 0.8, 1, cv2.LINE_AA)
    page = compose(
        (width, height), paper, [(through, (0.2, 0.2, 0.2)), (dust, (0.1, 0.1, 0.1)), (alpha, pen)]
    )
    edge = int(rng.integers(8, 60))
    shade = float(rng.uniform(0.05, 0.35))
    side = int(rng.integers(4))
    ramp = np.linspace(shade, 0.9, edge, dtype=np.float32)[:, None]
    if side == 0:
        page[:, :edge] *= ramp.T[:, :, None]
    elif side == 1:
        page[:, -edge:] *= ramp[::-1].T[:, :, None]
    elif side == 2:
        page[:edge] *= ramp[:, :, None]
    else:
        page[-edge:] *= ramp[::-1][:, :, None]
    notes.append(f"edge {edge}px side {side}")
    return sample(rng, page, rows, notes, mild=True)


def ruled(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Notebook paper: digits written on (and touching) ruled lines, perhaps a margin line."""
    width, height = (int(v) for v in rng.choice([(640, 480), (800, 600), (1024, 768), (480, 640)]))
    paper, pen = colours(rng)
    alpha, rules = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(14, 60))
    spacing = digit_height * rng.uniform(1.2, 2.0)
    start = rng.uniform(0.5, 2) * spacing
    tilt = rng.uniform(-0.02, 0.02)
    grid = rng.random() < 0.2  # squared paper
    thickness = int(rng.integers(1, 3))
    for y in np.arange(start, height + abs(tilt) * width, spacing):
        cv2.line(
            rules, (0, round(y)), (width - 1, round(y + tilt * width)), 1.0, thickness, cv2.LINE_AA
        )
    if grid:
        for x in np.arange(rng.uniform(0, spacing), width, spacing):
            cv2.line(
                rules,
                (round(x), 0),
                (round(x - tilt * height), height - 1),
                1.0,
                thickness,
                cv2.LINE_AA,
            )
    margin = None
    if rng.random() < 0.5:
        margin = rng.uniform(0.08, 0.15) * width
        cv2.line(
            rules, (round(margin), 0), (round(margin), height - 1), 1.0, thickness + 1, cv2.LINE_AA
        )
    notes.append("squared" if grid else "ruled")
    rule_colour = np.array(((0.55, 0.70, 0.90), (0.7, 0.7, 0.7), (0.6, 0.8, 0.95))[rng.integers(3)])
    written = []
    lines = [start + k * spacing for k in range(int((height - start) / spacing) + 1)]
    chosen = sorted(rng.choice(len(lines), min(len(lines), int(rng.integers(1, 6))), replace=False))
    for index in chosen:
        y = lines[index]
        if y - digit_height < 2:
            continue
        x = (margin or 0) + rng.uniform(0.02, 0.1) * width
        sink = rng.uniform(-0.05, 0.08) * digit_height  # feet on, above or through the line
        base = lambda px, y=y, sink=sink: y + tilt * px + sink  # noqa: E731
        row = []
        for _ in range(int(rng.integers(1, 4))):
            count = int(rng.integers(1, 6))
            if x + count * 1.15 * digit_height > 0.96 * width:
                break
            number, x = writer.number(
                alpha, x, base, digit_height, count, printed=maybe_font(rng, 0.1)
            )
            row.append(number)
            x += rng.uniform(1.1, 2.5) * digit_height
        written.append(row)
    page = compose((width, height), paper, [(rules, rule_colour), (alpha, pen)])
    return sample(rng, page, written, notes)


def touching(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Numbers whose digits touch or overlap their neighbours."""
    width, height = (int(v) for v in rng.choice([(640, 480), (800, 600), (1024, 768)]))
    paper, pen = colours(rng)
    alpha = np.zeros((height, width), np.float32)
    digit_height = float(rng.uniform(20, min(110, height / 5)))
    row_step = digit_height * rng.uniform(1.5, 2.2)
    row_count = max(1, min(int(rng.integers(1, 4)), int(0.85 * height / row_step)))
    rows = free_rows(rng, writer, alpha, digit_height, row_count, 0.06 * height, row_step,
                     slope=(-2, 2), gap=(-0.12, 0.02), printed_share=0.0)  # fmt: skip
    page = compose((width, height), paper, [(alpha, pen)])
    return sample(rng, page, rows, notes)


def mixed(rng: np.random.Generator, writer: Writer, notes: list[str]) -> Sample:
    """Rows and numbers of very different digit sizes on one page."""
    width, height = (int(v) for v in rng.choice([(800, 600), (1024, 768), (1280, 960)]))
    paper, pen = colours(rng)
    alpha = np.zeros((height, width), np.float32)
    y, rows = rng.uniform(0.03, 0.08) * height, []
    while True:
        # One row's numbers vary in size too (a price tag: small cents by big euros).
        row_height = float(np.exp(rng.uniform(np.log(14), np.log(min(160, height / 4)))))
        if y + row_height * 1.1 > 0.97 * height:
            break
        x, row = rng.uniform(0.02, 0.15) * width, []
        bottom = y + row_height
        for _ in range(int(rng.integers(1, 4))):
            size = row_height * (1.0 if not row else rng.uniform(0.4, 1.0))
            count = int(rng.integers(1, 5))
            if x + count * size * 1.2 > 0.96 * width:
                break
            number, x = writer.number(
                alpha, x, flat(bottom), size, count, printed=maybe_font(rng, 0.15)
            )
            row.append(number)
            x += rng.uniform(1.0, 2.0) * row_height
        rows.append(row)
        y = bottom + row_height * rng.uniform(0.4, 1.0)
    page = compose((width, height), paper, [(alpha, pen)])
    return sample(rng, page, rows, notes)


GENERATORS: dict[str, Callable[[np.random.Generator, Writer, list[str]], Sample]] = {
    "boxes": boxes,
    "askew": askew,
    "underline": underline,
    "small": small,
    "scan": scan,
    "ruled": ruled,
    "touching": touching,
    "mixed": mixed,
}


def make_layout(
    condition: str,
    index: int,
    seed: int,
    images: np.ndarray,
    labels: np.ndarray,
    noiseless: bool = False,
) -> Sample:
    """Picture ``index`` of ``condition``: the same arguments always give the same picture.

    ``noiseless`` leaves out the pixel noise, the desk's grain and JPEG artefacts (the layout,
    lighting and blur stay): such pictures compress well (tests/data/layouts/).
    """
    rng = np.random.default_rng([seed, CONDITIONS.index(condition), index])
    notes = [condition]
    NOISELESS[0] = noiseless
    try:
        return GENERATORS[condition](rng, Writer(rng, images, labels), notes)
    finally:
        NOISELESS[0] = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=20, help="pictures per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--condition", nargs="*", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    args = parser.parse_args()
    images, labels = load_digits(args.digits)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for condition in args.condition:
        for index in range(args.count):
            sample = make_layout(condition, index, args.seed, images, labels)
            name = f"{condition}-{index:03d}.png"
            Image.fromarray(sample.image).save(args.out / name)
            truth[name] = {"text": sample.text, "notes": sample.notes, "digits": sample.digits}
    (args.out / "ground-truth.json").write_text(json.dumps({"images": truth}, indent=1) + "\n")
    print(f"wrote {len(truth)} pictures and ground-truth.json to {args.out}")


if __name__ == "__main__":
    main()
