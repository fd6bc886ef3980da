"""Sharded reading, as an Indexed Job's pods do it: ``--count`` pictures read as ``--shards``
shares by that many `digits predict --shard I/N --jobs 1 --output` processes at once, against
one `digits predict --jobs 1 --output` process (goal: the shards' lines are exactly the one
run's, and together >= 1.8x as fast on 2 cores).

Both sides run one reading process each (``--jobs 1``), so the comparison is N processes
against one, not `predict`'s own worker pool (bench/predict_jobs.py measures that); the default
one process ``--jobs 0`` (every core) is timed too, for scale. Whole commands, wall clock,
interleaved over ``--rounds`` rounds, median.

Two sets of pictures, each from MNIST *test* digits with a seed per picture:

- ``form``: scanned A4 forms at 200 dpi (1654x2339): printed field boxes, handwritten numbers
  of 2-8 digits in some fields, paper tint, ink colour, digit height, scanner noise and JPEG
  compression varying per page: the batch job's workload ("a million scanned forms").
- ``small``: bench/read_speed.py's 640x480 picture of 10 digits (~20 ms each), where the ~0.8 s
  of CPU each process spends starting is a large part of the whole.

    python bench/predict_shards.py [--set form|small|both] [--count 200] [--shards 4]
        [--rounds 3] [--model MODEL]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_speed import test_picture
from synthetic import DEFAULT_DIGITS, load_digits, paste_digit

from digits_cli.batch import available_cores

GOAL_RATIO = 1.8
FORM_SIZE = (1654, 2339)  # A4 at 200 dpi


def form_picture(images: np.ndarray, seed: int) -> bytes:
    """One scanned form: a grid of printed field boxes, some filled in by hand."""
    rng = np.random.default_rng(seed)
    width, height = FORM_SIZE
    paper = rng.uniform(0.88, 1.0, 3).astype(np.float32)
    page = np.ones((height, width, 3), np.float32) * paper
    printed = np.zeros((height, width), np.float32)
    alpha = np.zeros((height, width), np.float32)
    rows = int(rng.integers(6, 14))
    top = int(rng.integers(150, 300))
    row_height = (height - top - 150) // rows
    for row in range(rows):
        y = top + row * row_height
        x = int(rng.integers(80, 200))
        while x < width - 400:
            box_width = int(rng.integers(250, 700))
            x1 = min(x + box_width, width - 80)
            box_height = int(row_height * rng.uniform(0.55, 0.8))
            thickness = int(rng.integers(1, 3))
            printed[y : y + thickness, x:x1] = 0.6
            printed[y + box_height - thickness : y + box_height, x:x1] = 0.6
            printed[y : y + box_height, x : x + thickness] = 0.6
            printed[y : y + box_height, x1 - thickness : x1] = 0.6
            if rng.random() < 0.6:  # filled in
                size = float(rng.uniform(30, min(75, box_height * 0.7)))
                dx = x + 20 + float(rng.uniform(0, 30))
                dy = y + (box_height - size) / 2 + float(rng.uniform(-5, 5))
                for _ in range(int(rng.integers(2, 9))):
                    if dx + size > x1 - 15:
                        break
                    digit = images[int(rng.integers(len(images)))]
                    box = paste_digit(alpha, digit, dx, dy + float(rng.normal(0, 2)), size)
                    dx = (box[0] + box[2] if box else dx + size * 0.6) + size * rng.uniform(
                        0.1, 0.4
                    )
            x = x1 + int(rng.integers(40, 160))
    ink = rng.uniform(0.0, 0.35, 3).astype(np.float32)
    page = page * (1 - printed[:, :, None] * 0.8)
    page = page * (1 - alpha[:, :, None]) + ink * alpha[:, :, None]
    page += rng.normal(0, float(rng.choice([0.005, 0.015, 0.03])), page.shape).astype(np.float32)
    picture = Image.fromarray(np.clip(page * 255 + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if rng.random() < 0.5:
        picture.save(buffer, "JPEG", quality=int(rng.integers(60, 92)))
    else:
        picture.convert("L").save(buffer, "PNG")
    return buffer.getvalue()


def write_set(kind: str, folder: Path, count: int, digits: Path) -> None:
    images, _ = load_digits(digits)
    for seed in range(count):
        data = form_picture(images, seed) if kind == "form" else test_picture(digits, seed)
        suffix = ".jpg" if data[:2] == b"\xff\xd8" else ".png"
        (folder / f"{kind}-{seed:04d}{suffix}").write_bytes(data)


def timed(commands: list[list[str]]) -> tuple[float, float]:
    """Start every command at once; the seconds until the last one ends, and the CPU seconds
    they used together (each must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    running = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands
    ]
    for process in running:
        _, stderr = process.communicate()
        if process.returncode != 0:
            sys.exit(f"FAIL: {' '.join(process.args)}: {stderr.decode()[-500:]}")  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def lines(paths: list[Path]) -> list[str]:
    return [line for path in paths for line in path.read_text().splitlines()]


def run_set(kind: str, args: argparse.Namespace) -> bool:
    script = Path(sys.executable).parent / "digits"
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        pictures = root / "pictures"
        pictures.mkdir()
        write_set(kind, pictures, args.count, args.digits)
        megapixels = sum(np.prod(Image.open(p).size) for p in pictures.iterdir()) / args.count / 1e6
        base = [str(script), "predict", str(pictures)]
        if args.model:
            base += ["--model", args.model]
        one = [*base, "--jobs", "1", "--output", str(root / "one.jsonl")]
        every_core = [*base, "--jobs", "0", "--output", str(root / "cores.jsonl")]
        shards = [
            [*base, "--jobs", "1", "--shard", f"{i}/{args.shards}", "--output",
             str(root / "part-{index}.jsonl")]
            for i in range(args.shards)
        ]  # fmt: skip
        runs = {"one": [one], "shards": shards, "cores": [every_core]}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, commands in runs.items():
                wall, used = timed(commands)
                seconds[name].append(wall)
                cpu[name].append(used)
        whole = lines([root / "one.jsonl"])
        parts = sorted(root.glob("part-*.jsonl"))
        sharded = lines(parts)
    images = [json.loads(line)["image"] for line in sharded]
    same = sorted(sharded) == sorted(whole)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    ratio = median["one"] / median["shards"]
    met = same and len(set(images)) == len(images) == args.count and ratio >= GOAL_RATIO
    print(
        f"{kind}: {args.count} pictures ({megapixels:.2f} megapixels on average), "
        f"{available_cores()} cores, median of {args.rounds} interleaved rounds, whole commands:"
    )
    labels = {
        "one": "1 process, --jobs 1",
        "shards": f"{args.shards} shard processes at once, --jobs 1 each",
        "cores": "1 process, --jobs 0 (every core; for scale)",
    }
    for name, label in labels.items():
        print(
            f"  {label + ':':52} {median[name]:6.2f} s wall, {args.count / median[name]:5.1f} "
            f"pictures/s, {median_cpu[name]:6.2f} s CPU"
        )
    # Whether the cores were free: one process on every core against one on one core. On a
    # machine shared with other work this falls to ~1x, and no wall-clock gain can show.
    cores_ratio = median["one"] / median["cores"]
    ceiling = available_cores() * median_cpu["one"] / median_cpu["shards"]
    print(
        f"  cores free? 1 process --jobs 0 ran at {cores_ratio:.2f}x --jobs 1 (load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end); the shards' CPU seconds "
        f"allow at most {ceiling:.2f}x on {available_cores()} idle cores (the extra processes' "
        "start-up is the difference)"
    )
    verdict = "meets" if ratio >= GOAL_RATIO else "misses"
    print(
        f"  shards: {ratio:.2f}x as fast as one --jobs 1 process ({verdict} the {GOAL_RATIO}x goal)"
    )
    exact = "exactly" if same else "NOT"
    print(f"  lines: {len(parts)} shard files, {len(sharded)} lines, {len(set(images))} distinct "
          f"pictures; {exact} the {len(whole)} lines of the one run")  # fmt: skip
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["form", "small", "both"], default="both")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="as digits predict --model (default: the champion)")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()
    kinds = ["form", "small"] if args.set == "both" else [args.set]
    results = [run_set(kind, args) for kind in kinds]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
