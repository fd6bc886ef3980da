"""How much faster `digits predict` reads a folder on every core than on one (goal: >= 1.7x).

Writes ``--count`` different 640x480 pictures of 10 MNIST test digits (bench/read_speed.py's
picture, one seed each) into a temporary folder, then times the whole command
``digits predict FOLDER --json --jobs N`` for N = 1 and every core, interleaved over ``--rounds``
rounds, and checks that both print the same lines in the same order.

The command's start (the interpreter, imports, the model; timed as ``digits predict`` of one
of the pictures in the same rounds) is paid once whatever the jobs, so it bounds the ratio: with
start S and --jobs 1 taking T, N cores give at most T / (S + (T - S) / N). The faster a picture
is read, the lower that bound; the ratio of the reading alone, the start taken off both, is
printed too.

The commands use Python's bytecode cache as any install does after its first run (a warm-up
round writes it), as bench/cli_startup.py's do: where PYTHONDONTWRITEBYTECODE is set, as on this
machine, a checkout's own modules are otherwise compiled again at every start, some 50 ms of it.
``--as-is`` keeps the environment as it is.

    python bench/predict_jobs.py [--count 200] [--rounds 5] [--model MODEL] [--as-is]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_speed import test_picture
from synthetic import DEFAULT_DIGITS

from digits_cli.batch import available_cores

GOAL_RATIO = 1.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", help="as digits predict --model (default: the champion)")
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    parser.add_argument("--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if set")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)

    script = Path(sys.executable).parent / "digits"
    cores = available_cores()
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.count):
            (Path(folder) / f"{seed:04d}.png").write_bytes(test_picture(args.digits, seed))
        command = [str(script), "predict", folder, "--json"]
        if args.model:
            command += ["--model", args.model]
        seconds: dict[int, list[float]] = {1: [], cores: []}
        outputs: dict[int, str] = {}
        starts: list[float] = []
        # A warm-up round, not counted: it writes the bytecode cache and reads the files once.
        subprocess.run([*command, "--jobs", "1"], check=True, capture_output=True, env=env)
        for _ in range(args.rounds):
            start = time.perf_counter()
            subprocess.run(
                [*command[:2], str(Path(folder) / "0000.png"), *command[3:]],
                check=True,
                capture_output=True,
                env=env,
            )
            starts.append(time.perf_counter() - start)
            for jobs in seconds:
                start = time.perf_counter()
                done = subprocess.run(
                    [*command, "--jobs", str(jobs)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                seconds[jobs].append(time.perf_counter() - start)
                outputs[jobs] = done.stdout
    if outputs[1] != outputs[cores]:
        sys.exit(f"FAIL: --jobs 1 and --jobs {cores} printed different lines")
    rate = {jobs: args.count / statistics.median(values) for jobs, values in seconds.items()}
    # Per round, then the median: a round's two runs follow each other, so the CPU's speed
    # (which drifts here) is about the same for both.
    ratios = sorted(one / many for one, many in zip(seconds[1], seconds[cores], strict=True))
    ratio = statistics.median(ratios)
    low, high = quartiles(ratios)
    verdict = "meets" if ratio >= GOAL_RATIO else "misses"
    print(f"digits predict over {args.count} pictures (640x480, 10 digits), whole command, "
          f"{args.rounds} interleaved rounds, {cores} cores:")  # fmt: skip
    for jobs, values in seconds.items():
        print(f"  --jobs {jobs}: median {statistics.median(values):.2f} s, "
              f"{rate[jobs]:.1f} pictures/s")  # fmt: skip
    print(f"  {ratio:.2f}x the rate of --jobs 1, median of the rounds' ratios (quartiles "
          f"{low:.2f}-{high:.2f}x; {verdict} the {GOAL_RATIO}x goal); "
          f"same {len(outputs[1].splitlines())} lines in the same order")  # fmt: skip
    start, single, many = (statistics.median(v) for v in (starts, seconds[1], seconds[cores]))
    bound = single / (start + (single - start) / cores)
    print(
        f"  the start (one picture, whole command): {start:.2f} s, so at most {bound:.2f}x "
        f"on {cores} cores; the reading alone: {(single - start) / (many - start):.2f}x"
    )


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles (the ends, for fewer than four values)."""
    if len(values) < 4:
        return min(values), max(values)
    first, _, third = statistics.quantiles(values, n=4)
    return first, third


if __name__ == "__main__":
    main()
