"""A hard synthetic test set for the digit finder: MNIST test digits on real-looking pages.

Each picture holds rows of numbers written with MNIST **test** digits (never seen in training) on
paper or board backgrounds with lighting gradients and vignetting, coloured ink and paper,
light-on-dark boards, noise, blur, JPEG artefacts, ruled lines and underlines, at digit heights
from ~10 to ~200 px; some pictures hold no digit at all. Ground truth: every digit's label and box,
and the text the picture reads as (numbers separated by spaces, rows by newlines).

    .venv/bin/python bench/synthetic.py OUT_DIR [--count 200] [--seed 0]

writes the pictures and ``ground-truth.json`` (same layout as tests/data/real/) for inspection;
bench/finder_quality.py builds the same set in memory.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFAULT_DIGITS = Path("data/processed/test.npz")
SIZES = ((640, 480), (480, 640), (800, 600), (1024, 768), (400, 300))
PAPERS = (
    (0.97, 0.97, 0.95),  # white
    (0.95, 0.93, 0.85),  # cream
    (0.99, 0.95, 0.55),  # yellow note
    (0.80, 0.90, 0.98),  # light blue
    (0.88, 0.96, 0.86),  # light green
    (0.75, 0.75, 0.75),  # grey card
    (0.96, 0.80, 0.85),  # pink
)
PENS = (
    (0.05, 0.05, 0.05),  # black
    (0.10, 0.15, 0.60),  # blue
    (0.75, 0.10, 0.10),  # red
    (0.10, 0.45, 0.15),  # green
    (0.40, 0.40, 0.40),  # pencil grey
    (0.90, 0.45, 0.05),  # orange
    (0.45, 0.10, 0.55),  # purple
)
BOARDS = ((0.10, 0.22, 0.15), (0.08, 0.08, 0.10), (0.10, 0.12, 0.30), (0.30, 0.30, 0.32))
CHALKS = ((0.95, 0.95, 0.92), (0.98, 0.92, 0.40), (0.70, 0.90, 0.98), (0.98, 0.70, 0.75))


@dataclass
class Sample:
    """One synthetic picture (RGB uint8), its digits (label, [x, y, w, h]) and what it reads."""

    image: np.ndarray
    digits: list[dict] = field(default_factory=list)
    text: str = ""
    notes: list[str] = field(default_factory=list)


def load_digits(path: Path = DEFAULT_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test images (N, 28, 28) uint8 and labels (N,)."""
    with np.load(path) as npz:
        return npz["images"], npz["labels"]


def make_set(
    count: int, seed: int, images: np.ndarray, labels: np.ndarray, blank_fraction: float = 0.08
) -> list[Sample]:
    """``count`` pictures; the same seed always gives the same set."""
    rng = np.random.default_rng(seed)
    return [
        make_sample(rng, images, labels, blank=rng.random() < blank_fraction) for _ in range(count)
    ]


def make_sample(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, blank: bool = False
) -> Sample:
    """One picture with random layout, colours, lighting and degradations."""
    width, height = SIZES[rng.integers(len(SIZES))]
    notes: list[str] = []
    dark_board = rng.random() < 0.25
    if dark_board:
        paper = np.array(BOARDS[rng.integers(len(BOARDS))])
        ink = np.array(CHALKS[rng.integers(len(CHALKS))])
        notes.append("light-on-dark")
    else:
        paper = np.array(PAPERS[rng.integers(len(PAPERS))])
        ink = np.array(PENS[rng.integers(len(PENS))])
        if np.sqrt(((paper - ink) ** 2).mean()) < 0.3:
            ink = np.array(PENS[0])
    page = np.ones((height, width, 3), np.float32) * paper.astype(np.float32)
    page += rng.normal(0, 0.01, 3).astype(np.float32)  # paper tint varies
    alpha = np.zeros((height, width), np.float32)
    if rng.random() < 0.15:
        notes.append("ruled")
        rule_ink = np.array((0.55, 0.70, 0.90)) if not dark_board else np.array((0.5, 0.5, 0.5))
        spacing = int(rng.integers(25, 60))
        for y in range(int(rng.integers(5, spacing)), height, spacing):
            cv2.line(page, (0, y), (width - 1, y), rule_ink.tolist(), 1, cv2.LINE_AA)
    digits: list[dict] = []
    rows: list[list[str]] = []
    if not blank:
        digits, rows = place_digits(rng, images, labels, alpha, notes)
    page = page * (1 - alpha[:, :, None]) + ink.astype(np.float32) * alpha[:, :, None]
    page *= lighting(rng, width, height, notes)[:, :, None]
    if rng.random() < 0.6:
        sigma = float(rng.uniform(0.3, 1.2))
        page = np.asarray(cv2.GaussianBlur(page, (0, 0), sigma), np.float32)
        notes.append(f"blur {sigma:.1f}")
    noise = float(rng.choice([0.0, 0.01, 0.02, 0.04]))
    if noise:
        page += rng.normal(0, noise, page.shape).astype(np.float32)
        notes.append(f"noise {noise}")
    picture = np.clip(page * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        quality = int(rng.integers(35, 90))
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "JPEG", quality=quality)
        picture = np.asarray(Image.open(buffer).convert("RGB"))
        notes.append(f"jpeg q{quality}")
    text = "\n".join(" ".join(row) for row in rows)
    return Sample(picture, digits, text, notes)


def place_digits(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    alpha: np.ndarray,
    notes: list[str],
) -> tuple[list[dict], list[list[str]]]:
    """Draw rows of numbers into ``alpha`` (ink coverage); return the digits and rows' numbers."""
    height, width = alpha.shape
    row_count = int(rng.integers(1, 4))
    tallest = min(200.0, height / (row_count * 1.8))
    digit_height = float(np.exp(rng.uniform(np.log(10), np.log(tallest))))
    layout = plan_rows(rng, row_count, digit_height, width)
    if layout is None:
        return [], []
    row_step = digit_height * rng.uniform(1.5, 1.9)
    top = rng.uniform(0.05 * height, max(0.05 * height, height - row_step * row_count))
    digits, rows = [], []
    underline = rng.random() < 0.1
    if underline:
        notes.append("underlined")
    for row_index, row in enumerate(layout):
        x = rng.uniform(0.03 * width, max(0.03 * width, width - row_width(row, digit_height)))
        y = top + row_index * row_step
        row_texts = []
        for number_index, number in enumerate(row):
            if number_index:
                x += rng.uniform(1.0, 1.6) * digit_height
            text, number_start = "", x
            for digit_index, index in enumerate(number):
                if digit_index:
                    x += rng.uniform(0.08, 0.25) * digit_height
                size = digit_height * rng.uniform(0.92, 1.08)
                jitter = rng.uniform(-0.06, 0.06) * digit_height
                box = paste_digit(alpha, images[index], x, y + jitter + (digit_height - size), size)
                if box is None:
                    continue
                digits.append({"label": int(labels[index]), "box": box})
                text += str(int(labels[index]))
                x = box[0] + box[2]
            if underline and text:
                base = int(y + digit_height * 1.08)
                thickness = max(1, round(digit_height / 25))
                cv2.line(alpha, (int(number_start), base), (int(x), base), 1.0, thickness)
            if text:
                row_texts.append(text)
        if row_texts:
            rows.append(row_texts)
    return digits, rows


def plan_rows(
    rng: np.random.Generator, row_count: int, digit_height: float, width: int
) -> list[list[list[int]]] | None:
    """Rows of numbers of MNIST indices that fit in ``width``; None if not even one digit fits."""
    rows = []
    for _ in range(row_count):
        row: list[list[int]] = []
        for _ in range(int(rng.integers(1, 4))):
            number = [int(i) for i in rng.integers(0, 10_000, int(rng.integers(1, 5)))]
            if row_width([*row, number], digit_height) > 0.92 * width:
                break
            row.append(number)
        if not row:
            return None
        rows.append(row)
    return rows


def row_width(row: list[list[int]], digit_height: float) -> float:
    """An upper bound on a row's width: digits at most 0.9 h wide, the widest gaps."""
    digits = sum(len(number) for number in row)
    return digit_height * (digits * (0.9 + 0.25) + (len(row) - 1) * 1.6)


def paste_digit(
    alpha: np.ndarray, digit: np.ndarray, x: float, y: float, size: float
) -> list[int] | None:
    """Scale an MNIST digit's ink to ``size`` px tall at (x, y); return its ink box or None."""
    rows, cols = np.nonzero(digit > 0)
    ink = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32) / 255
    factor = size / ink.shape[0]
    new_size = (max(1, round(ink.shape[1] * factor)), max(1, round(ink.shape[0] * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    ink = np.clip(cv2.resize(ink, new_size, interpolation=interpolation), 0, 1)
    x0, y0 = round(x), round(y)
    height, width = alpha.shape
    if x0 < 0 or y0 < 0 or x0 + ink.shape[1] > width or y0 + ink.shape[0] > height:
        return None
    region = alpha[y0 : y0 + ink.shape[0], x0 : x0 + ink.shape[1]]
    np.maximum(region, ink, out=region)
    rows, cols = np.nonzero(ink > 0.25)
    if rows.size == 0:
        return None
    return [
        int(x0 + cols.min()),
        int(y0 + rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]


def lighting(rng: np.random.Generator, width: int, height: int, notes: list[str]) -> np.ndarray:
    """A multiplicative light field: a linear gradient in a random direction and a vignette."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height) + 0.5
    strength = float(rng.choice([0.0, 0.2, 0.4, 0.55]))
    light = 1.0 - strength * np.clip(ramp, 0, 1.2)
    if rng.random() < 0.4:
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        radius = ((xs - cx) ** 2 + (ys - cy) ** 2) / (width**2 + height**2)
        light *= 1.0 - 0.6 * np.clip(radius, 0, 1)
        notes.append("vignette")
    if strength:
        notes.append(f"gradient {strength}")
    return light.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    args = parser.parse_args()
    images, labels = load_digits(args.digits)
    args.out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index, sample in enumerate(make_set(args.count, args.seed, images, labels)):
        name = f"synthetic-{index:04d}.png"
        Image.fromarray(sample.image).save(args.out / name)
        truth[name] = {"text": sample.text, "notes": sample.notes, "digits": sample.digits}
    (args.out / "ground-truth.json").write_text(json.dumps({"images": truth}, indent=1) + "\n")
    print(f"wrote {args.count} pictures and ground-truth.json to {args.out}")


if __name__ == "__main__":
    main()
