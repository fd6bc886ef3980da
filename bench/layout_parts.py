"""Parts of the layout pages (bench/layouts.py): fonts, a writer of numbers, baselines, colours,
composing layers, finishing (lighting, blur, noise, JPEG) and the ground truth's text."""

from __future__ import annotations

import io
import math
import subprocess
from collections.abc import Callable
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from synthetic import PAPERS, PENS, Sample, lighting, paste_digit

FORM_LINES = (
    (0.55, 0.55, 0.55),  # grey
    (0.75, 0.75, 0.75),  # light grey
    (0.35, 0.55, 0.85),  # blue
    (0.60, 0.75, 0.95),  # light blue
    (0.85, 0.25, 0.25),  # red
    (0.95, 0.55, 0.55),  # pink-red
    (0.20, 0.20, 0.20),  # black
)
DESKS = ((0.35, 0.22, 0.12), (0.25, 0.25, 0.27), (0.12, 0.12, 0.12), (0.55, 0.45, 0.35))
WORDS = (
    "the", "of", "and", "total", "date", "name", "amount", "invoice", "number", "page", "form",
)  # fmt: skip
Baseline = Callable[[float], float]


# Set while make_layout draws a noiseless picture.
NOISELESS = [False]


@cache
def font_paths() -> tuple[str, ...]:
    """Fonts with digits on this machine (fc-list), sorted; empty if there are none."""
    try:
        listing = subprocess.run(
            ["fc-list", ":", "file"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return ()
    paths = sorted({line.split(":")[0].strip() for line in listing.splitlines()})
    return tuple(
        p for p in paths if p.endswith((".ttf", ".otf")) and "Math" not in p and has_digits(p)
    )


def has_digits(path: str) -> bool:
    """Whether a font draws ten different digits (an icon font draws none, or one box ten
    times)."""
    try:
        glyphs = [printed_glyph(path, str(digit)) for digit in range(10)]
    except (OSError, ValueError):
        return False
    shapes = {(g.shape, g.tobytes()) for g in glyphs if g.size > 1}
    return len(shapes) == 10


@cache
def printed_glyph(path: str, char: str) -> np.ndarray:
    """A character of a font as 0-255 ink on 0, cropped to its ink (like an MNIST digit)."""
    font = ImageFont.truetype(path, 96)
    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((20, 10), char, fill=255, font=font)
    ink = np.asarray(canvas)
    rows, cols = np.nonzero(ink > 0)
    if rows.size == 0:
        return np.zeros((1, 1), np.uint8)
    return np.ascontiguousarray(ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])


class Writer:
    """Writes numbers into an ink layer (alpha) and keeps the ground truth of each digit."""

    def __init__(self, rng: np.random.Generator, images: np.ndarray, labels: np.ndarray):
        self.rng, self.images, self.labels = rng, images, labels

    def glyph(self, printed: str | None) -> tuple[np.ndarray, int]:
        """A random MNIST test digit, or a printed one in font ``printed``: (ink, label)."""
        if printed is None:
            index = int(self.rng.integers(len(self.images)))
            return self.images[index], int(self.labels[index])
        label = int(self.rng.integers(10))
        return printed_glyph(printed, str(label)), label

    def number(
        self,
        alpha: np.ndarray,
        x: float,
        baseline: Baseline,
        height: float,
        count: int,
        gap: tuple[float, float] = (0.08, 0.25),
        printed: str | None = None,
        size_jitter: float = 0.08,
    ) -> tuple[list[dict], float]:
        """``count`` digits from ``x`` standing on ``baseline``; their truth and where it ends."""
        digits = []
        for index in range(count):
            if index:
                x += self.rng.uniform(*gap) * height
            ink, label = self.glyph(printed)
            size = height * self.rng.uniform(1 - size_jitter, 1 + size_jitter)
            if printed is not None and label in (6, 8, 0):
                size = height  # printed digits share one height, apart from font quirks
            middle = x + 0.3 * size
            top = baseline(middle) - size + self.rng.uniform(-0.04, 0.04) * height
            box = paste_digit(alpha, ink, x, top, size)
            if box is None:
                return digits, x
            digits.append({"label": label, "box": box})
            x = box[0] + box[2]
        return digits, x


def baseline_of(
    rng: np.random.Generator, y: float, x0: float, slope_degrees: float, wave: float, width: int
) -> Baseline:
    """A row's baseline: slanted by ``slope_degrees``, waving by up to ``wave`` px."""
    slope = math.tan(math.radians(slope_degrees))
    period, phase = rng.uniform(0.5, 1.5) * width, rng.uniform(0, 2 * math.pi)
    return lambda x: y + slope * (x - x0) + wave * math.sin(2 * math.pi * x / period + phase)


def flat(y: float) -> Baseline:
    return lambda x: y


def colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paper and a pen contrasting with it."""
    paper = np.array(PAPERS[rng.integers(len(PAPERS))], np.float32)
    pen = np.array(PENS[rng.integers(len(PENS))], np.float32)
    if np.sqrt(((paper - pen) ** 2).mean()) < 0.3:
        pen = np.array(PENS[0], np.float32)
    return paper, pen


def compose(size: tuple[int, int], paper: np.ndarray, layers: list) -> np.ndarray:
    """A float page of ``paper`` with each (alpha, colour) layer painted on in turn."""
    width, height = size
    page = np.empty((height, width, 3), np.float32)
    page[:] = paper
    for alpha, colour in layers:
        a = alpha[:, :, None]
        page = page * (1 - a) + np.asarray(colour, np.float32) * a
    return page


def finish(
    rng: np.random.Generator, page: np.ndarray, notes: list[str], mild: bool = False
) -> np.ndarray:
    """Lighting, blur, noise and JPEG artefacts, drawn at random; RGB uint8."""
    height, width = page.shape[:2]
    if not mild:
        page = page * lighting(rng, width, height, notes)[:, :, None]
    if rng.random() < 0.5:
        sigma = float(rng.uniform(0.3, 0.9 if mild else 1.1))
        page = cv2.GaussianBlur(page, (0, 0), sigma)
        notes.append(f"blur {sigma:.1f}")
    noise = float(rng.choice([0.0, 0.01, 0.02] if mild else [0.0, 0.01, 0.02, 0.035]))
    if noise and not NOISELESS[0]:
        page = page + rng.normal(0, noise, page.shape).astype(np.float32)
        notes.append(f"noise {noise}")
    picture = np.clip(page * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4 and not NOISELESS[0]:
        quality = int(rng.integers(45, 92))
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "JPEG", quality=quality)
        picture = np.asarray(Image.open(buffer).convert("RGB"))
        notes.append(f"jpeg q{quality}")
    return picture


def text_of(rows: list[list[list[dict]]]) -> str:
    """Rows of numbers of digits as the text a reader gives."""
    return "\n".join(
        " ".join("".join(str(d["label"]) for d in number) for number in row if number)
        for row in rows
        if any(row)
    )


def sample(
    rng: np.random.Generator,
    page: np.ndarray,
    rows: list[list[list[dict]]],
    notes: list[str],
    mild: bool = False,
) -> Sample:
    """The finished picture with its digits' truth and its text."""
    digits = [digit for row in rows for number in row for digit in number]
    return Sample(finish(rng, page, notes, mild), digits, text_of(rows), notes)


def maybe_font(rng: np.random.Generator, share: float) -> str | None:
    fonts = font_paths()
    return str(fonts[rng.integers(len(fonts))]) if fonts and rng.random() < share else None


def free_rows(
    rng: np.random.Generator,
    writer: Writer,
    alpha: np.ndarray,
    height: float,
    rows: int,
    top: float,
    row_step: float,
    slope: tuple[float, float] = (0.0, 0.0),
    wave: float = 0.0,
    gap: tuple[float, float] = (0.08, 0.25),
    printed_share: float = 0.15,
    left: float | None = None,
) -> list[list[list[dict]]]:
    """Rows of 1-4 numbers of 1-5 digits, each row on its own (slanted, wavy) baseline."""
    width = alpha.shape[1]
    written = []
    for row_index in range(rows):
        x = left if left is not None else rng.uniform(0.03, 0.2) * width
        y = top + row_index * row_step + height
        base = baseline_of(rng, y, x, rng.uniform(*slope), wave * height, width)
        row = []
        for _ in range(int(rng.integers(1, 5))):
            count = int(rng.integers(1, 6))
            if x + count * height * (0.9 + gap[1]) > 0.96 * width:
                break
            number, x = writer.number(
                alpha, x, base, height, count, gap, maybe_font(rng, printed_share)
            )
            row.append(number)
            x += rng.uniform(1.1, 2.5) * height
        written.append(row)
    return written
