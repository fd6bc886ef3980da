"""How fast one picture is read in-process: decode + find + classify, after warm-up.

    .venv/bin/python bench/read_speed.py [--model MODEL] [--runs 200] [--threads 1]
    .venv/bin/python bench/read_speed.py --against d04970e~1 [--rounds 300] [--step 5]

The picture is 640x480 PNG holding 10 MNIST test digits (two rows of numbers) on paper with a
lighting gradient. The model (default: the champion, as `digits predict` picks it) runs on ONNX
Runtime with one thread; OpenCV on ``--threads`` threads (1, as `digits serve` does).
Prints median and p90 milliseconds of the whole read and of each stage, wall-clock and CPU time
of this process (other work on a shared machine inflates the first more than the second), and
the load average before and after.

``--against REV`` compares with the reader of an earlier git revision (``d04970e~1``: when
issue 9 was filed, torch classifying): a reader of each (bench/read_worker.py, REV's package from
a temporary worktree) reads the picture in turns of a tenth of a second, and the median of the
turns' CPU-time ratios is printed, since the CPU changes between machines and its speed drifts
by a third within minutes here (goal: at most 10 / 12.9 = 0.78).
"""

from __future__ import annotations

import argparse
import os
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


def compare(args: argparse.Namespace) -> None:
    """This reader against revision ``args.against``'s, in lockstep (bench/read_worker.py).

    Both readers load once, in a process each, then take turns: ``args.step`` reads of the
    picture each, ``args.rounds`` times over. A turn lasts a tenth of a second, so the CPU's
    speed, which drifts by a third within minutes here, is the same for both sides of a turn;
    the ratio is taken per turn, and their median printed.
    """
    repo = Path(__file__).resolve().parent.parent
    worker = Path(__file__).resolve().parent / "read_worker.py"
    with tempfile.TemporaryDirectory() as scratch:
        picture = Path(scratch) / "picture.png"
        picture.write_bytes(test_picture(args.digits))
        tree = Path(scratch) / "reference"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), args.against],
            check=True,
            capture_output=True,
        )
        # One thread each, as `digits` sets it (numpy's OpenBLAS otherwise spins a thread per
        # core after each product, CPU time that is the machine's, not the reader's).
        one_thread = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        sides = {
            "this": (args.model or "", dict(one_thread, PYTHONPATH=str(repo))),
            args.against: (
                str(Path(args.against_model).resolve()),
                dict(one_thread, PYTHONPATH=str(tree), DIGITS_PARAMS=str(tree / "params.yaml")),
            ),
        }
        workers = {
            name: subprocess.Popen(
                [sys.executable, str(worker), str(picture), model],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for name, (model, env) in sides.items()
        }
        try:

            def turn(name: str, reads: int) -> tuple[np.ndarray, str]:
                """Seconds a read: total, decode, classify; and the text read."""
                process = workers[name]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{reads}\n")
                process.stdin.flush()
                answer = process.stdout.readline()
                if not answer:
                    sys.exit(f"the {name} reader ended early (see its error above)")
                *seconds, text = answer.split(" ", 3)
                return np.array(seconds, float) / reads, text.strip()

            load_before = load_average()
            texts = {name: turn(name, args.warmup)[1] for name in workers}
            times: dict[str, list[np.ndarray]] = {name: [] for name in workers}
            for _ in range(args.rounds):
                for name in workers:
                    times[name].append(turn(name, args.step)[0])
        finally:
            for process in workers.values():
                process.communicate("\n", timeout=60)
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    ratios = [ours[0] / theirs[0] for ours, theirs in zip(*times.values(), strict=True)]
    print(
        f"640x480 PNG, 10 digits, decode + find + classify, 1 thread, CPU time; {args.rounds} "
        f"turns of {args.step} reads each, in lockstep, after {args.warmup} warm-up reads; "
        f"load average {load_before} before, {load_average()} after ({os.cpu_count()} CPUs)"
    )
    for name, values in times.items():
        total, decode, classify = np.median(np.array(values), axis=0) * 1000
        print(
            f"  {name:12s} median {total:6.2f} ms a read: decode {decode:.2f}, find "
            f"{total - decode - classify:.2f}, classify {classify:.2f}; read as {texts[name]}"
        )
    ratio = statistics.median(ratios)
    low, _, high = statistics.quantiles(ratios, n=4)
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(
        f"  this / {args.against}: {ratio:.3f}x, median of the turns' ratios (quartiles "
        f"{low:.3f}-{high:.3f}x; {verdict} the goal of {GOAL_RATIO:.2f}x)"
    )
    if texts["this"] != texts[args.against]:
        print("  note: the two readers read the picture differently")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="as digits predict --model (default: the champion)"
    )
    parser.add_argument("--runs", type=int, default=200, help="reads timed (not with --against)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenCV threads (--against: always 1, both sides)"
    )
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    parser.add_argument("--against", metavar="REV", help="compare with git revision REV's reader")
    parser.add_argument(
        "--against-model",
        default="models/model.pt",
        help="the model REV's reader classifies with (a checkpoint, before issue 9)",
    )
    parser.add_argument("--rounds", type=int, default=300, help="turns of each, with --against")
    parser.add_argument("--step", type=int, default=5, help="reads a turn, with --against")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is, not as a serving worker sets it "
        "(not with --against)",
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
