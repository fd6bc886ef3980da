"""How long the command line takes from a cold start, against the imports it cannot avoid.

Times, interleaved in one run so that the machine's speed and load cancel out in the ratios:

- ``python -c "import numpy, cv2, PIL.Image"``: the floor any picture reader pays;
- ``digits --help`` (goal: at most 0.25 s);
- ``digits predict PICTURE --json`` with the default model, the champion's ONNX file that
  `make run` wrote (goal: at most 4x the floor);

then lists the slowest imports of the predict command.

    python bench/cli_startup.py [--runs 15] [--picture tests/data/real/seed-api-test.png]
                                [--venv .venv] [--top 12]

``--venv`` measures another install, e.g. the base-only one of bench/base_install.py.

The runs use Python's bytecode cache as any install does after its first run (the dropped warm-up
round writes it): in an environment that sets PYTHONDONTWRITEBYTECODE, as this machine's does, a
fresh checkout's own modules are otherwise compiled on every start. ``--as-is`` keeps the
environment as it is (a cache already written is still read).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELP_GOAL_SECONDS = 0.25
PREDICT_GOAL_RATIO = 4.0
FLOOR_IMPORTS = "import numpy, cv2, PIL.Image"


def run_seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def top_imports(command: list[str], env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the slowest imports of one run of ``command``."""
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
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
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--picture", type=Path, default=Path("tests/data/real/seed-api-test.png"))
    parser.add_argument("--venv", type=Path, default=Path(sys.executable).parent.parent)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if set")
    args = parser.parse_args()

    env = dict(os.environ)
    if not args.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)

    python, script = args.venv / "bin/python", args.venv / "bin/digits"
    if not script.is_file():
        sys.exit(f"{script}: not found; run `make install` first")
    commands = {
        "floor": [str(python), "-c", FLOOR_IMPORTS],
        "help": [str(script), "--help"],
        "predict": [str(script), "predict", str(args.picture), "--json"],
    }
    model = subprocess.run(commands["predict"], check=True, capture_output=True, text=True, env=env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs + 1):  # the first round warms the page cache and is dropped
        for name, command in commands.items():
            times[name].append(run_seconds(command, env))
    median = {name: statistics.median(values[1:]) for name, values in times.items()}
    ratio = median["predict"] / median["floor"]
    cache = "off" if env.get("PYTHONDONTWRITEBYTECODE") else "on"
    print(f"{args.venv}: median of {args.runs} interleaved cold starts ({os.cpu_count()} CPUs, "
          f"bytecode cache {cache})")  # fmt: skip
    print(f"  floor   `python -c '{FLOOR_IMPORTS}'`   {median['floor']:.3f} s")
    verdict = "meets" if median["help"] <= HELP_GOAL_SECONDS else "misses"
    print(f"  digits --help                           {median['help']:.3f} s "
          f"({verdict} the {HELP_GOAL_SECONDS} s goal)")  # fmt: skip
    verdict = "meets" if ratio <= PREDICT_GOAL_RATIO else "misses"
    print(f"  digits predict {args.picture.name} --json   {median['predict']:.3f} s = "
          f"{ratio:.2f}x the floor ({verdict} the {PREDICT_GOAL_RATIO:.0f}x goal)")  # fmt: skip
    print(f"  model used: {json.loads(model.stdout)['model']}")
    print("Slowest imports of predict (cumulative seconds; indentation = imported by the above):")
    for seconds, name in top_imports(commands["predict"], env, args.top):
        print(f"  {seconds:6.3f}  {name}")


if __name__ == "__main__":
    main()
