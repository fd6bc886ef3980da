"""How fast one picture is read in-process: decode + find + classify, after warm-up.

    .venv/bin/python bench/read_speed.py [--model MODEL] [--runs 200] [--threads 1]
    .venv/bin/python bench/read_speed.py --against d04970e~1 [--rounds 5] [--runs 100]

The picture is 640x480 PNG holding 10 MNIST test digits (two rows of numbers) on paper with a
lighting gradient. The model (default: the champion, as `digits predict` picks it) runs on ONNX
Runtime with one thread; OpenCV on ``--threads`` threads (1, as `digits serve` does).
Prints median and p90 milliseconds of the whole read and of each stage, wall-clock and CPU time
of this process (other work on a shared machine inflates the first more than the second), and
the load average before and after.

``--against REV`` compares with the reader of an earlier git revision (``d04970e~1``: when
issue 9 was filed, torch classifying): both this script and REV's own ``bench/read_speed.py``
(from a temporary worktree, ``PYTHONPATH`` and ``DIGITS_PARAMS`` pointing at it) run in turn,
one process each per round, and the ratio of their total medians is printed, since the CPU
changes between machines and its speed drifts within the hour (goal: at most 10 / 12.9 = 0.78).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import DEFAULT_DIGITS, load_digits, paste_digit

from digits_cli.config import load_settings
from digits_cli.finder import read_digits
from digits_cli.images import decode_image, encode_image
from digits_cli.inference import load_model
from digits_cli.memory import keep_freed_memory


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


GOAL_RATIO = 10 / 12.9  # issue 9: at most 10 ms where the reader of then took 12.9 ms
TOTAL_LINE = re.compile(r"total\s+wall median\s+([\d.]+) ms.*CPU median\s+([\d.]+) ms")


def total_ms(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU median of the whole read (ms), as printed by a read_speed.py run."""
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    match = TOTAL_LINE.search(done.stdout)
    if match is None:
        sys.exit(f"no 'total' line in the output of {' '.join(command)}:\n{done.stdout}")
    return float(match[1]), float(match[2])


def compare(args: argparse.Namespace) -> None:
    """This reader against revision ``args.against``'s, in turn, ``args.rounds`` rounds."""
    repo = Path(__file__).resolve().parent.parent
    common = ["--runs", str(args.runs), "--warmup", str(args.warmup)]
    common += ["--threads", str(args.threads), "--digits", str(args.digits)]
    ours = [sys.executable, str(Path(__file__).resolve()), *common]
    if args.model:
        ours += ["--model", args.model]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "reference"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), args.against],
            check=True,
            capture_output=True,
        )
        try:
            theirs = [sys.executable, str(tree / "bench" / "read_speed.py"), *common]
            theirs += ["--model", args.against_model]
            their_env = dict(
                os.environ, PYTHONPATH=str(tree), DIGITS_PARAMS=str(tree / "params.yaml")
            )
            results: dict[str, list[tuple[float, float]]] = {"this": [], args.against: []}
            for round_number in range(1, args.rounds + 1):
                results["this"].append(total_ms(ours, dict(os.environ)))
                results[args.against].append(total_ms(theirs, their_env))
                (ours_wall, _), (theirs_wall, _) = results["this"][-1], results[args.against][-1]
                print(
                    f"round {round_number}: this {ours_wall:.2f} ms, {args.against} "
                    f"{theirs_wall:.2f} ms: {ours_wall / theirs_wall:.2f}x",
                    flush=True,
                )
        finally:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    ratios = [ours[1] / theirs[1] for ours, theirs in zip(*results.values(), strict=True)]
    for name, values in results.items():
        wall, cpu = (statistics.median(column) for column in zip(*values, strict=True))
        print(f"  {name:12s} total median over rounds: wall {wall:.2f} ms, CPU {cpu:.2f} ms")
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(
        f"  this / {args.against} (CPU, median of the rounds' ratios): {ratio:.2f}x, "
        f"rounds {min(ratios):.2f}-{max(ratios):.2f}x ({verdict} the goal of {GOAL_RATIO:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="as digits predict --model (default: the champion)"
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    parser.add_argument("--against", metavar="REV", help="compare with git revision REV's reader")
    parser.add_argument(
        "--against-model",
        default="models/model.pt",
        help="the model REV's read_speed.py loads (a checkpoint, before issue 9)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="with --against")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is, not as a serving worker sets it",
    )
    args = parser.parse_args()
    if args.against:
        compare(args)
        return

    import cv2

    cv2.setNumThreads(args.threads)
    # As a serving worker reads (digits_cli.serving): freed arrays kept for the next picture.
    kept = False if args.default_malloc else keep_freed_memory()
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
        f"OpenCV threads {args.threads}; freed memory "
        f"{'kept, as digits serve keeps it' if kept else 'returned (the allocator as it is)'}; "
        f"load average {load_before} before, {load_average()} after ({os.cpu_count()} CPUs)"
    )
    for name, samples in stages.items():
        wall, cpu = np.array(samples).T
        print(f"  {name:9s} wall {percentiles(list(wall))}   CPU {percentiles(list(cpu))}")


if __name__ == "__main__":
    main()
