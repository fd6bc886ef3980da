"""How well the digit finder reads pictures: the labelled real pictures and the hard synthetic set.

    .venv/bin/python bench/finder_quality.py [--model models/model.pt] [--count 300] [--seed 0]
        [--layouts 40] [--layout-seed 0] [--condition boxes ...] [--skip-synthetic]

A detection matches a digit when its box centre lies inside the digit's box grown by 20% on each
side; each digit matches at most one detection (tests/data/real/ground-truth.json). Reported:
digits found with the right label (recall), right detections among all detections (precision),
false detections (matching no digit), and for the synthetic set the share of pictures whose whole
text is read exactly, overall and per condition. The layout pages (bench/layouts.py: form boxes,
askew pages, underlines, small digits, scans, ruled paper, touching digits, mixed sizes) are
reported per condition: found and right (recall), precision, and exact reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layouts import CONDITIONS, make_layout
from synthetic import DEFAULT_DIGITS, load_digits, make_set

from digits_cli.config import SegmentSettings, load_settings
from digits_cli.finder import Digit, read_digits
from digits_cli.images import read_image_file
from digits_cli.inference import load_model

REAL = Path("tests/data/real")


def match(digits: list[Digit], truth: list[dict]) -> dict[str, int]:
    """Count truth digits found, found with the right label, and detections matching nothing."""
    taken: set[int] = set()
    found = right = false = 0
    for digit in sorted(digits, key=lambda d: -d.confidence):
        x, y, w, h = digit.box
        cx, cy = x + w / 2, y + h / 2
        best, best_distance = None, float("inf")
        for index, item in enumerate(truth):
            if index in taken:
                continue
            tx, ty, tw, th = item["box"]
            inside = tx - 0.2 * tw <= cx <= tx + 1.2 * tw and ty - 0.2 * th <= cy <= ty + 1.2 * th
            distance = (cx - tx - tw / 2) ** 2 + (cy - ty - th / 2) ** 2
            if inside and distance < best_distance:
                best, best_distance = index, distance
        if best is None:
            false += 1
            continue
        taken.add(best)
        found += 1
        right += int(truth[best]["label"] == digit.label)
    return {"digits": len(truth), "found": found, "right": right, "false": false}


def report_real(classify, cfg: SegmentSettings) -> None:
    """Per-picture and total figures on the labelled real pictures."""
    truth = json.loads((REAL / "ground-truth.json").read_text())["images"]
    totals: dict[str, int] = defaultdict(int)
    print("real pictures (tests/data/real):")
    for name, digits in truth.items():
        reading = read_digits(
            read_image_file(REAL / name, cfg.max_pixels, cfg.max_file_bytes), classify, cfg
        )
        counts = match(reading.digits, digits)
        for key, value in counts.items():
            totals[key] += value
        print(
            f"  {name:28s} digits {counts['digits']:2d}  found {counts['found']:2d}  "
            f"right {counts['right']:2d}  false {counts['false']}  text {reading.text!r}"
        )
    print(
        f"  total: {totals['right']}/{totals['digits']} right "
        f"({totals['right'] / totals['digits']:.1%}), {totals['false']} false detections"
    )


def report_synthetic(classify, cfg: SegmentSettings, count: int, seed: int, digits: Path) -> None:
    """Recall, precision and exact-read rate on the synthetic set, overall and per condition."""
    images, labels = load_digits(digits)
    totals: dict[str, int] = defaultdict(int)
    by_note: dict[str, list[bool]] = defaultdict(list)
    exact = []
    failures = []
    for index, sample in enumerate(make_set(count, seed, images, labels)):
        reading = read_digits(sample.image, classify, cfg)
        counts = match(reading.digits, sample.digits)
        for key, value in counts.items():
            totals[key] += value
        totals["detections"] += len(reading.digits)
        ok = reading.text == sample.text
        exact.append(ok)
        heights = [d["box"][3] for d in sample.digits]
        size = "no digits" if not heights else f"digits {size_band(float(np.median(heights)))}"
        for note in [size, *(n.split(" ")[0] for n in sample.notes)]:
            by_note[note].append(ok)
        if not ok:
            failures.append((index, sample.text, reading.text, sample.notes))
    recall = totals["right"] / max(1, totals["digits"])
    precision = totals["right"] / max(1, totals["detections"])
    print(f"synthetic set ({count} pictures, seed {seed}, MNIST test digits):")
    print(
        f"  digits {totals['digits']}, found {totals['found'] / max(1, totals['digits']):.1%}, "
        f"recall (right label) {recall:.1%}, precision {precision:.1%}, "
        f"false detections {totals['false']}, exact-read {np.mean(exact):.1%}"
    )
    print("  exact-read by condition:")
    for note, oks in sorted(by_note.items()):
        print(f"    {note:18s} {np.mean(oks):6.1%} of {len(oks)}")
    print("  first failures (index: truth -> read [conditions]):")
    for index, truth, read, notes in failures[:12]:
        print(f"    {index}: {truth!r} -> {read!r} {notes}")


def report_layouts(
    classify, cfg: SegmentSettings, count: int, seed: int, digits: Path, conditions: list[str]
) -> None:
    """Per condition of the layout pages: recall, precision, false detections, exact reads."""
    images, labels = load_digits(digits)
    print(f"layout pages ({count} per condition, seed {seed}, MNIST test digits and fonts):")
    print("  condition   digits  found+right  precision  false  exact-read  worst false")
    failures = []
    for condition in conditions:
        totals: dict[str, int] = defaultdict(int)
        exact, worst = [], 0
        for index in range(count):
            sample = make_layout(condition, index, seed, images, labels)
            reading = read_digits(sample.image, classify, cfg)
            counts = match(reading.digits, sample.digits)
            for key, value in counts.items():
                totals[key] += value
            totals["detections"] += len(reading.digits)
            worst = max(worst, counts["false"])
            exact.append(reading.text == sample.text)
            if not exact[-1]:
                failures.append((condition, index, sample.text, reading.text))
        recall = totals["right"] / max(1, totals["digits"])
        precision = totals["right"] / max(1, totals["detections"])
        print(
            f"  {condition:10s} {totals['digits']:6d}  {recall:10.1%}  {precision:9.1%}  "
            f"{totals['false']:5d}  {np.mean(exact):10.1%}  {worst:5d}"
        )
    print("  first failures per condition (index: truth -> read):")
    shown: dict[str, int] = defaultdict(int)
    for condition, index, truth, read in failures:
        if shown[condition] < 3:
            shown[condition] += 1
            print(f"    {condition} {index}: {truth!r} -> {read!r}")


def size_band(height: float) -> str:
    """A coarse digit-height band for the per-condition table."""
    for limit, name in ((16, "<16px"), (40, "16-40px"), (100, "40-100px")):
        if height < limit:
            return name
    return ">=100px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="as digits predict --model (default: the champion)"
    )
    parser.add_argument("--count", type=int, default=300, help="synthetic pictures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layouts", type=int, default=40, help="layout pages per condition")
    parser.add_argument("--layout-seed", type=int, default=0)
    parser.add_argument("--condition", nargs="*", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--skip-synthetic", action="store_true", help="only real and layouts")
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(args.threads)
    settings = load_settings()
    classify = load_model(args.model, settings).classify
    cfg = settings.segment
    report_real(classify, cfg)
    if not args.skip_synthetic:
        report_synthetic(classify, cfg, args.count, args.seed, args.digits)
    if args.layouts:
        report_layouts(classify, cfg, args.layouts, args.layout_seed, args.digits, args.condition)


if __name__ == "__main__":
    main()
