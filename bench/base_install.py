"""The base install on its own: a fresh virtual environment holding requirements/base.txt (the
lock of the dependencies, hash-checked, as the image installs them) and `pip install --no-deps .`.

Creates the environment, prints its size on disk (goal: at most 450 MB), checks that none of the
lifecycle's libraries came with it, reads a picture with an ONNX model through the installed
`digits`, and checks that the reading imported none of them either. Exits non-zero when any
check fails, so CI runs it as the base-install job.

    python bench/base_install.py [--model models/champion/model.onnx] [--venv DIR] [--keep]
                                 [--audit]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE_GOAL_MB = 450
LIFECYCLE = ("torch", "torchvision", "mlflow", "dvc", "matplotlib", "codecarbon", "onnx", "scipy")
ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "tests/data/real/seed-api-test.png"
# Reads a picture through the CLI in this interpreter, then prints the top-level modules loaded.
READ_AND_LIST = """
import json, sys
from digits_cli.cli import app
try:
    app(["predict", sys.argv[1], "--model", sys.argv[2], "--json"])
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def folder_megabytes(folder: Path) -> float:
    return (
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/champion/model.onnx")
    parser.add_argument("--venv", type=Path, help="where to create it (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the environment afterwards")
    parser.add_argument(
        "--audit", action="store_true", help="also audit it (bench/dependency_audit.py)"
    )
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"{args.model}: not found; run `make run` (or digits export) first")

    venv = args.venv or Path(tempfile.mkdtemp(prefix="digits-base-")) / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    failures = []
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin/python"
        # Built from a copy of the sources: building in place would leave build/ in the checkout.
        with tempfile.TemporaryDirectory() as source:
            shutil.copytree(ROOT / "digits_cli", Path(source) / "digits_cli",
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(ROOT / name, source)
            # As the image installs it: the lock's files, hash-checked (the whole closure, so
            # --no-deps), then the project alone.
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            lock = ROOT / "requirements/base.txt"
            subprocess.run([*pip, "--no-deps", "--require-hashes", "-r", str(lock)], check=True)
            subprocess.run([*pip, "--no-deps", "--no-build-isolation", source], check=True)
            # Nothing was resolved: every installed package's requirements must be met.
            subprocess.run([str(python), "-m", "pip", "check"], check=True)
        size = folder_megabytes(venv)
        installed = subprocess.run(
            [str(python), "-m", "pip", "list", "--format", "json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        names = {p["name"].lower() for p in json.loads(installed)}
        heavy_installed = sorted(names & set(LIFECYCLE))
        reading = subprocess.run(
            [str(python), "-c", READ_AND_LIST, str(PICTURE), str(args.model.resolve())],
            capture_output=True, text=True, cwd=venv.parent,
        )  # fmt: skip
        print(f"base install in {venv}: {size:.0f} MB on disk, {len(names)} distributions")
        if size > SIZE_GOAL_MB:
            failures.append(f"{size:.0f} MB is over the {SIZE_GOAL_MB} MB goal")
        if heavy_installed:
            failures.append(f"lifecycle libraries installed: {', '.join(heavy_installed)}")
        if reading.returncode != 0:
            failures.append(f"reading a picture failed: {reading.stderr.strip()[-500:]}")
        else:
            lines = reading.stdout.strip().splitlines()
            answer, modules = json.loads(lines[0]), set(json.loads(lines[-1]))
            heavy_imported = sorted(modules & set(LIFECYCLE))
            print(f"  read {PICTURE.name} as {answer['text']!r} with {answer['model']}")
            if heavy_imported:
                failures.append(f"reading imported {', '.join(heavy_imported)}")
        if args.audit:
            site = next((venv / "lib").glob("python3*/site-packages"))
            audit = [sys.executable, str(ROOT / "bench/dependency_audit.py"), "--path", str(site)]
            if subprocess.run(audit).returncode != 0:
                failures.append("the dependency audit found vulnerable packages")
    finally:
        if not args.keep:
            shutil.rmtree(venv, ignore_errors=True)
    for failure in failures:
        print(f"  FAIL: {failure}")
    if failures:
        sys.exit(1)
    print(f"  ok: at most {SIZE_GOAL_MB} MB, no lifecycle library installed or imported")


if __name__ == "__main__":
    main()
