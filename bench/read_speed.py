"""How fast one picture is read in-process: decode + find + classify, after warm-up.

    .venv/bin/python bench/read_speed.py [--model models/model.pt] [--runs 200] [--threads 1]

The picture is 640x480 PNG holding 10 MNIST test digits (two rows of numbers) on paper with a
lighting gradient. Prints median and p90 milliseconds of the whole read and of each stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import DEFAULT_DIGITS, load_digits, paste_digit

from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.images import decode_image, encode_image
from digits_cli.inference import make_classify


def test_picture(digits: Path) -> bytes:
    """A 640x480 PNG with 10 digits, 50 px tall: numbers of 3 and 2 digits, then 2 and 3."""
    images, _ = load_digits(digits)
    alpha = np.zeros((480, 640), np.float32)
    rng = np.random.default_rng(0)
    for y, numbers in ((120, ((60, 3), (300, 2))), (300, ((120, 2), (380, 3)))):
        for x, count in numbers:
            for _ in range(count):
                box = paste_digit(alpha, images[int(rng.integers(len(images)))], x, y, 50)
                x = (box[0] + box[2] if box else x + 30) + 8
    light = (1.0 - 0.3 * np.arange(640) / 640)[None, :, None]
    paper, ink = np.array((0.96, 0.95, 0.9)), 0.1
    page = (paper * (1 - alpha[:, :, None]) + ink * alpha[:, :, None]) * light
    return encode_image(np.clip(page * 255, 0, 255).astype(np.uint8), "png")


def percentiles(samples: list[float]) -> str:
    values = np.array(samples) * 1000
    return f"median {np.median(values):6.2f} ms   p90 {np.percentile(values, 90):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()

    import torch

    from digits_cli.model import load_checkpoint

    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    classify_batch = make_classify(model)
    cfg = load_settings().segment
    data = test_picture(args.digits)
    classify_time = [0.0]

    def classify(crops: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        probabilities = classify_batch(crops)
        classify_time[0] += time.perf_counter() - start
        return probabilities

    stages: dict[str, list[float]] = {"total": [], "decode": [], "find": [], "classify": []}
    reading = None
    for run in range(args.warmup + args.runs):
        classify_time[0] = 0.0
        start = time.perf_counter()
        rgb = decode_image(data, "bench.png", cfg.max_pixels)
        decoded = time.perf_counter()
        reading = read_digits(rgb, classify, cfg)
        done = time.perf_counter()
        if run >= args.warmup:
            stages["total"].append(done - start)
            stages["decode"].append(decoded - start)
            stages["classify"].append(classify_time[0])
            stages["find"].append(done - decoded - classify_time[0])
    assert reading is not None
    print(
        f"640x480 PNG, {len(reading.digits)} digits read as {reading.text!r}; "
        f"{args.runs} runs after {args.warmup} warm-up, torch threads {args.threads}"
    )
    for name, samples in stages.items():
        print(f"  {name:9s} {percentiles(samples)}")


if __name__ == "__main__":
    main()
