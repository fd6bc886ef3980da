"""Write the layout regression pictures of tests/data/layouts/ (bench/layouts.py, seed 7).

    .venv/bin/python bench/regression_pictures.py [--digits data/processed/test.npz]

A few pictures per condition, chosen because the finder before issue 10 failed them (missed
digits, false detections or a wrong reading order) and the finder after reads them whole. They
are drawn without pixel noise and JPEG artefacts (layout, lighting and blur as in the bench), so
they stay small as PNG (grey pages as grey). tests/test_layouts.py reads them back.
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
    ("boxes", 8),
    ("boxes", 11),
    ("askew", 7),
    ("askew", 12),
    ("underline", 4),
    ("underline", 12),
    ("scan", 2),
    ("ruled", 9),
    ("ruled", 13),
    ("touching", 14),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    args = parser.parse_args()
    images, labels = load_digits(args.digits)
    OUT.mkdir(parents=True, exist_ok=True)
    truth = {}
    for condition, index in CHOSEN:
        sample = make_layout(condition, index, SEED, images, labels, noiseless=True)
        image, digits, text = sample.image, sample.digits, sample.text
        name = f"{condition}-{index}.png"
        picture = Image.fromarray(image)
        if np.ptp(image.astype(np.int16), axis=2).max() <= 2:
            picture = picture.convert("L")  # a grey page (black pen, pencil): a third the size
        picture.save(OUT / name, optimize=True)
        truth[name] = {"condition": condition, "text": text, "digits": digits}
    about = (
        f"Noiseless layout pages from bench/layouts.py (seed {SEED}, MNIST test digits), by "
        "bench/regression_pictures.py. Boxes are [x, y, width, height]; text is the reading "
        "(numbers separated by spaces, rows by newlines)."
    )
    (OUT / "ground-truth.json").write_text(
        json.dumps({"about": about, "images": truth}, indent=1) + "\n"
    )
    print(f"wrote {len(truth)} pictures to {OUT}")


if __name__ == "__main__":
    main()
