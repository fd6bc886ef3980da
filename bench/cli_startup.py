"""How long `digits --help` takes, and which imports the time goes to (goal: under 0.4 s).

Runs the installed console script (beside this interpreter) after a warm-up, then once more with
``PYTHONPROFILEIMPORTTIME=1`` to list the imports with the largest cumulative time.

    python bench/cli_startup.py [--runs 20] [--top 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_SECONDS = 0.4


def console_script() -> Path:
    """The `digits` script installed next to this interpreter (e.g. .venv/bin/digits)."""
    script = Path(sys.executable).parent / "digits"
    if not script.is_file():
        sys.exit(f"{script}: not found; run `make install` first")
    return script


def time_help(script: Path, runs: int) -> list[float]:
    """Wall times in seconds of ``runs`` runs of ``digits --help``, after one warm-up run."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([str(script), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times[1:]


def top_imports(script: Path, top: int) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the slowest imports of one ``digits --help``."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(
        [str(script), "--help"], check=True, capture_output=True, text=True, env=env
    )
    imports = []
    for line in result.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package", nesting shown by indentation
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        imports.append((int(cumulative) / 1e6, name.rstrip()))
    return sorted(imports, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    script = console_script()
    times = time_help(script, args.runs)
    median = statistics.median(times)
    verdict = "meets" if median < GOAL_SECONDS else "misses"
    print(f"`{script} --help` over {args.runs} runs after a warm-up:")
    print(f"  median {median:.3f} s, min {min(times):.3f} s ({verdict} the {GOAL_SECONDS} s goal)")
    print("Slowest imports (cumulative seconds; indentation = imported by the line above):")
    for seconds, name in top_imports(script, args.top):
        print(f"  {seconds:6.3f}  {name}")


if __name__ == "__main__":
    main()
