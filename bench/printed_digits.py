"""How well printed digits are read: every font on this machine, at print sizes, by family.

    .venv/bin/python bench/printed_digits.py [--model MODEL] [--heights 12 16 24 40 64]

Each picture is one row of ten digits (0-9 in a shuffled order) printed in one font at one digit
height, dark grey on off-white, letter-spaced a third of the height, with a little blur and
noise. Reported per font family (fc-list's fonts, those that draw ten digits) and per digit
height: digits found with the right label, false detections, and rows read exactly. The
classifier is trained on MNIST's handwriting alone: every font here is one it never saw.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finder_quality import match
from layout_parts import font_paths, printed_glyph

from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.inference import load_model


def family(path: str) -> str:
    """The font's family from its file name: LiberationSerif-Bold.ttf -> LiberationSerif."""
    return Path(path).stem.split("-")[0]


def printed_row(path: str, height: int, order: list[int], rng: np.random.Generator):
    """A picture of the digits ``order`` printed ``height`` px tall in the font at ``path``, and
    the truth (label and box per digit)."""
    import cv2

    glyphs = []
    for digit in order:
        ink = printed_glyph(path, str(digit))
        scale = height / printed_glyph(path, "8").shape[0]  # digits share the 8's height
        size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
        glyphs.append(cv2.resize(ink, size, interpolation=cv2.INTER_AREA))
    gap, margin = max(2, height // 3), height
    width = sum(g.shape[1] for g in glyphs) + gap * (len(glyphs) - 1) + 2 * margin
    alpha = np.zeros((height + 2 * margin, width), np.float32)
    truth, x = [], margin
    for digit, ink in zip(order, glyphs, strict=True):
        top = margin + height - ink.shape[0]  # digits stand on one baseline
        alpha[top : top + ink.shape[0], x : x + ink.shape[1]] = ink / 255
        truth.append({"label": digit, "box": [x, top, ink.shape[1], ink.shape[0]]})
        x += ink.shape[1] + gap
    paper, pen = np.array((0.95, 0.94, 0.9)), np.array((0.15, 0.15, 0.2))
    page = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    page = cv2.GaussianBlur(page, (0, 0), 0.6) + rng.normal(0, 0.015, page.shape)
    return np.clip(page * 255, 0, 255).astype(np.uint8), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="as digits predict --model (default: the champion)")
    parser.add_argument("--heights", type=int, nargs="+", default=[12, 16, 24, 40, 64])
    parser.add_argument("--rows", type=int, default=2, help="rows per font and height")
    args = parser.parse_args()
    settings = load_settings()
    model = load_model(args.model, settings)
    fonts = font_paths()
    if not fonts:
        raise SystemExit("no fonts with digits on this machine (fc-list)")
    rng = np.random.default_rng(0)
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_height: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in fonts:
        for height in args.heights:
            for _ in range(args.rows):
                order = [int(d) for d in rng.permutation(10)]
                picture, truth = printed_row(path, height, order, rng)
                reading = read_digits(picture, model.classify, settings.segment)
                counts = match(reading.digits, truth)
                exact = int(reading.text == "".join(map(str, order)))
                for group in (totals[family(path)], by_height[height], totals["all"]):
                    for key, value in counts.items():
                        group[key] += value
                    group["rows"] += 1
                    group["exact"] += exact
    print(f"printed digits, model {model.name} v{model.version} ({model.uri}), heights "
          f"{args.heights} px, {args.rows} rows of 10 per font and height:")  # fmt: skip
    print("  family                  digits  found+right  false  exact rows")
    for name, group in [*sorted((n, g) for n, g in totals.items() if n != "all"),
                        ("all", totals["all"])]:  # fmt: skip
        print(f"  {name:22s} {group['digits']:7d}  {group['right'] / group['digits']:10.1%}  "
              f"{group['false']:5d}  {group['exact'] / group['rows']:10.1%}")  # fmt: skip
    print("  by digit height:")
    for height, group in sorted(by_height.items()):
        print(f"  {height:4d} px {group['digits']:21d}  {group['right'] / group['digits']:10.1%}  "
              f"{group['false']:5d}  {group['exact'] / group['rows']:10.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
