"""Write the layout regression pictures of tests/data/layouts/ (bench/layouts.py, seed 7).

    .venv/bin/python bench/regression_pictures.py [--digits data/processed/test.npz]

A few pictures per condition, chosen because the finder before issue 10 failed them (missed
digits, false detections or a wrong reading order) and the finder after reads them whole. They
are drawn without pixel noise and JPEG artefacts (layout, lighting and blur as in the bench), so
they stay small as PNG (grey pages as grey). tests/test_layouts.py reads them back.

A picture already written is kept, with its ground truth, unless ``--overwrite``: the
generators have changed since the first ones were written (sessions 5 and 6), and a regression
picture must stay the one it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from layouts import make_layout
from PIL import Image
from synthetic import DEFAULT_DIGITS, load_digits

OUT = Path(__file__).resolve().parents[1] / "tests/data/layouts"
SEED = 7
CHOSEN = (
    ("boxes", 4),  # printed in a colour apart from the pen's: leftover walls are no 1s (session 7)
    ("boxes", 8),
    ("boxes", 35),  # a comb's ticks in the form's colour, as narrow as a 1 is (session 7)
    ("boxes", 11),
    ("askew", 7),
    ("askew", 12),
    ("askew", 3),  # the sheet darker towards an edge: its desk no brighter than it (session 10)
    ("askew", 9),
    ("underline", 1),  # digits standing on an underline are no comb's ticks (session 8)
    ("underline", 4),
    ("underline", 12),
    ("scan", 2),
    ("ruled", 9),
    ("ruled", 13),
    ("touching", 14),
)
# Windows of scan pages (x, y, width, height), each holding whole digits and a speck of dust
# lying on show-through (its box in the window): the finder of session 6 read the speck, with
# the faint print around it, as a digit.
DUST = (
    (3, (1340, 1180, 34, 23), (794, 943, 640, 480)),
    (18, (1559, 1451, 45, 28), (1004, 1099, 640, 480)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    parser.add_argument("--overwrite", action="store_true", help="write every picture again")
    args = parser.parse_args()
    images, labels = load_digits(args.digits)
    OUT.mkdir(parents=True, exist_ok=True)
    written = OUT / "ground-truth.json"
    before = {} if args.overwrite or not written.exists() else json.loads(written.read_text())
    truth, dust = dict(before.get("images", {})), dict(before.get("dust", {}))
    for condition, index in CHOSEN:
        if f"{condition}-{index}.png" in truth:
            continue
        sample = make_layout(condition, index, SEED, images, labels, noiseless=True)
        image, digits, text = sample.image, sample.digits, sample.text
        name = f"{condition}-{index}.png"
        picture = Image.fromarray(image)
        if np.ptp(image.astype(np.int16), axis=2).max() <= 2:
            picture = picture.convert("L")  # a grey page (black pen, pencil): a third the size
        picture.save(OUT / name, optimize=True)
        truth[name] = {"condition": condition, "text": text, "digits": digits}
    for index, (x, y, w, h), (left, top, width, height) in DUST:
        if f"scan-{index}-dust.png" in dust:
            continue
        page = make_layout("scan", index, SEED, images, labels, noiseless=True).image
        name = f"scan-{index}-dust.png"
        Image.fromarray(np.ascontiguousarray(page[top : top + height, left : left + width])).save(
            OUT / name, optimize=True
        )
        dust[name] = {"dust": [x - left, y - top, w, h]}
    about = (
        f"Noiseless layout pages from bench/layouts.py (seed {SEED}, MNIST test digits), by "
        "bench/regression_pictures.py. Boxes are [x, y, width, height]; text is the reading "
        "(numbers separated by spaces, rows by newlines). 'dust': windows of scan pages and the "
        "box of the speck of dust in each."
    )
    written.write_text(json.dumps({"about": about, "images": truth, "dust": dust}, indent=1) + "\n")
    print(f"{len(truth) + len(dust)} pictures in {OUT}")


if __name__ == "__main__":
    main()
