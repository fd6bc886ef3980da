"""How fast one picture is read in-process: decode + find + classify, after warm-up.

    .venv/bin/python bench/read_speed.py [--model MODEL] [--runs 200] [--threads 1]

The picture is 640x480 PNG holding 10 MNIST test digits (two rows of numbers) on paper with a
lighting gradient. The model (default: the champion, as `digits predict` picks it) runs on ONNX
Runtime with one thread; OpenCV on ``--threads`` threads (1, as `digits serve` does).
Prints median and p90 milliseconds of the whole read and of each stage, wall-clock and CPU time
of this process (other work on a shared machine inflates the first more than the second), and
the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import DEFAULT_DIGITS, load_digits, paste_digit

from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.images import decode_image, encode_image
from digits_cli.inference import load_model


def test_picture(digits: Path, seed: int = 0) -> bytes:
    """A 640x480 PNG with 10 digits, 50 px tall: numbers of 3 and 2 digits, then 2 and 3
    (``seed`` picks the digits)."""
    images, _ = load_digits(digits)
    alpha = np.zeros((480, 640), np.float32)
    rng = np.random.default_rng(seed)
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
    return f"median {np.median(values):6.2f} ms  p90 {np.percentile(values, 90):6.2f} ms"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="as digits predict --model (default: the champion)"
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(args.threads)
    settings = load_settings()
    model = load_model(args.model, settings)
    classify_batch = model.classify  # ONNX Runtime, one thread (digits_cli.runtime)
    cfg = settings.segment
    data = test_picture(args.digits)
    classify_time = np.zeros(2)  # wall, CPU

    def classify(crops: np.ndarray) -> np.ndarray:
        start = np.array([time.perf_counter(), time.process_time()])
        probabilities = classify_batch(crops)
        classify_time[:] += np.array([time.perf_counter(), time.process_time()]) - start
        return probabilities

    names = ("total", "decode", "find", "classify")
    stages: dict[str, list[np.ndarray]] = {name: [] for name in names}
    reading = None
    load_before = load_average()
    for run in range(args.warmup + args.runs):
        classify_time[:] = 0.0
        start = np.array([time.perf_counter(), time.process_time()])
        rgb = decode_image(data, "bench.png", cfg.max_pixels)
        decoded = np.array([time.perf_counter(), time.process_time()])
        reading = read_digits(rgb, classify, cfg)
        done = np.array([time.perf_counter(), time.process_time()])
        if run >= args.warmup:
            stages["total"].append(done - start)
            stages["decode"].append(decoded - start)
            stages["classify"].append(classify_time.copy())
            stages["find"].append(done - decoded - classify_time)
    assert reading is not None
    print(
        f"640x480 PNG, {len(reading.digits)} digits read as {reading.text!r}; "
        f"model {model.name} v{model.version}; {args.runs} runs after {args.warmup} warm-up, "
        f"OpenCV threads {args.threads}; "
        f"load average {load_before} before, {load_average()} after ({os.cpu_count()} CPUs)"
    )
    for name, samples in stages.items():
        wall, cpu = np.array(samples).T
        print(f"  {name:9s} wall {percentiles(list(wall))}   CPU {percentiles(list(cpu))}")


if __name__ == "__main__":
    main()
