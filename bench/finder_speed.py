"""How fast pictures are read in-process, 1 thread: the 640x480 picture of bench/read_speed.py
(10 digits) and a 200-dpi scan of 100 digits (bench/layouts.py's scan condition).

    .venv/bin/python bench/finder_speed.py [--model MODEL] [--runs 60] [--scan-runs 8]

Prints median wall-clock and CPU milliseconds of the whole read (PNG decode, find, classify) and
of the finder alone (the classifier's time taken out). To compare two versions of the finder on
a shared machine, run this for each in turn, a few times, with PYTHONPATH naming each tree:
CPU time is the steadier figure when other work shares the cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layouts import make_layout
from read_speed import test_picture
from synthetic import DEFAULT_DIGITS, load_digits

import digits_cli
from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.images import decode_image, encode_image
from digits_cli.inference import load_model


def clocks() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="as digits predict --model (default: the champion)"
    )
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--scan-runs", type=int, default=8)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    settings = load_settings()
    classify_batch = load_model(args.model, settings).classify  # ONNX Runtime, one thread
    cfg = settings.segment
    images, labels = load_digits(args.digits)
    scan = make_layout("scan", 0, 0, images, labels)
    pictures = (
        ("640x480, 10 digits", test_picture(args.digits), args.runs),
        (f"scan {scan.image.shape[1]}x{scan.image.shape[0]}, 100 digits", None, args.scan_runs),
    )
    print(f"finder from {Path(digits_cli.__file__).parent}")
    for name, data, runs in pictures:
        data = data if data is not None else encode_image(scan.image, "png")
        spent = np.zeros(2)

        def classify(crops: np.ndarray, spent: np.ndarray = spent) -> np.ndarray:
            start = clocks()
            probabilities = classify_batch(crops)
            spent += clocks() - start
            return probabilities

        totals, finder = [], []
        count = 0
        for run in range(runs + 3):
            spent[:] = 0
            start = clocks()
            reading = read_digits(decode_image(data, "x.png", cfg.max_pixels), classify, cfg)
            took = clocks() - start
            count = len(reading.digits)
            if run >= 3:  # warm-up
                totals.append(took)
                finder.append(took - spent)
        total, alone = np.median(totals, axis=0) * 1000, np.median(finder, axis=0) * 1000
        print(
            f"  {name:32s} read {count:3d} digits; whole read wall {total[0]:7.1f} ms "
            f"CPU {total[1]:7.1f} ms; finder alone wall {alone[0]:7.1f} ms CPU {alone[1]:7.1f} ms"
        )


if __name__ == "__main__":
    main()
