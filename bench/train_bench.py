"""Training benchmark: accuracy and time of `digits train` on full MNIST against the hardware.

Runs `digits train` as a user would (default params.yaml, `--preset fast`, and the `lenet` baseline
with the default params' data and epochs), each into its own folder with its own MLflow store,
then scores each checkpoint on the test split itself. Prints the figures; asserts nothing.

    .venv/bin/python bench/train_bench.py                 # all three runs (~10 min on 2 cores)
    .venv/bin/python bench/train_bench.py --runs fast     # just the preset
    .venv/bin/python bench/train_bench.py --runs peak     # just the matmul peak

Training FLOPs per image are taken as 3 x forward (forward + two backward products), with one
multiply-accumulate = 2 FLOPs; the peak is the best of a few large fp32 matmuls on all threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DIGITS = [sys.executable, "-m", "digits_cli"]
VALIDATION_REPORT = ROOT / "reports/validation.json"
RUNS = {
    "default": [],
    "fast": ["--preset", "fast"],
    "lenet": ["--arch", "lenet"],
}


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul rate over a few rounds, in GFLOP/s, with torch's current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def test_accuracy(checkpoint: Path, processed_dir: Path) -> float:
    """Accuracy of a checkpoint on the test split."""
    from digits_cli.data import load_split
    from digits_cli.evaluation import predict_probabilities
    from digits_cli.model import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    test = load_split(processed_dir, "test")
    predictions = predict_probabilities(model, test.images, batch_size=1000).argmax(1)
    return float((predictions == test.labels).mean())


def val_figure(report: dict) -> str:
    """The held-out validation accuracy, or "refit" when the validation digits were trained on."""
    value = report["best_val_accuracy"]
    return "refit" if value is None else f"{value:.2%}"


def run_train(name: str, extra: list[str], processed_dir: Path, workdir: Path) -> dict:
    """Run `digits train` in ``workdir`` with the project's params.yaml; return its report."""
    folder = workdir / name
    folder.mkdir(parents=True)
    command = [
        *DIGITS,
        "--params",
        str(ROOT / "params.yaml"),
        "train",
        "--processed-dir",
        str(processed_dir),
        *extra,
        "--json",
    ]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "CODECARBON_LOG_LEVEL": "error",
        # train refuses data without a passing report: the one `make run` wrote for these splits
        "DIGITS_VALIDATE__REPORT": str(VALIDATION_REPORT),
    }
    start = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name}: digits train failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["command_seconds"] = wall
    report["test_accuracy"] = test_accuracy(folder / report["model_path"], processed_dir)
    return report


RECIPE_KEYS = (
    "arch",
    "epochs",
    "lr",
    "refit",
    "rotation",
    "scale",
    "shift",
    "elastic",
    "elastic_sigma",
    "elastic_fraction",
    "clean_epochs",
    "ema",
    "precision",
)


def seeds_table(seeds: int, processed_dir: Path) -> None:
    """Train the default recipe (params.yaml, and any DIGITS_TRAIN__* in the environment) with
    seeds 0..seeds-1; print each seed's test accuracy, time and throughput, and their mean."""
    rows, accuracies, times = [], [], []
    recipe: dict = {}
    with tempfile.TemporaryDirectory(prefix="train-seeds-") as tmp:
        for seed in range(seeds):
            report = run_train(f"seed{seed}", ["--seed", str(seed)], processed_dir, Path(tmp))
            if not recipe:
                from digits_cli.model import load_checkpoint

                _, meta = load_checkpoint(Path(tmp) / f"seed{seed}" / report["model_path"])
                recipe = {key: meta["train"][key] for key in RECIPE_KEYS}
                print(f"recipe: {json.dumps(recipe)}", flush=True)
            accuracies.append(report["test_accuracy"])
            times.append(report["seconds"])
            errors = round((1 - report["test_accuracy"]) * 10_000)
            rows.append(
                f"{seed:>4} {report['train_samples']:>8,} {report['epochs']:>6} "
                f"{report['seconds']:>8.1f} {report['images_per_second']:>7.0f} "
                f"{report['test_accuracy']:>9.2%} {errors:>7}"
            )
            print(
                f"seed {seed} (load average after: {os.getloadavg()[0]:.1f}): {json.dumps(report)}",
                flush=True,
            )
    print(
        f"{'seed':>4} {'digits':>8} {'epochs':>6} {'train s':>8} {'img/s':>7} "
        f"{'test acc':>9} {'errors':>7}"
    )
    print("\n".join(rows))
    mean = sum(accuracies) / len(accuracies)
    print(f"mean {mean:.4%} over {seeds} seeds; training {min(times):.0f}-{max(times):.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="peak,fast,default,lenet")
    parser.add_argument("--seeds", type=int, help="train the default recipe with this many seeds")
    parser.add_argument("--processed-dir", type=Path, default=ROOT / "data/processed")
    args = parser.parse_args()
    if args.seeds:
        seeds_table(args.seeds, args.processed_dir.resolve())
        return
    runs = args.runs.split(",")

    peak = matmul_peak_gflops()
    print(
        f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
        f"1-min load average {os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s")
    header = (
        f"{'run':8} {'arch':8} {'epochs':>6} {'train s':>8} {'command s':>9} {'img/s':>7} "
        f"{'MACs/img':>10} {'GFLOP/s':>8} {'% peak':>7} {'val acc':>8} {'test acc':>8}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        for name in (r for r in runs if r in RUNS):
            report = run_train(name, RUNS[name], args.processed_dir.resolve(), Path(tmp))
            achieved = 6 * report["macs_per_image"] * report["images_per_second"] / 1e9
            rows.append(
                f"{name:8} {report['arch']:8} {report['epochs']:>6} {report['seconds']:>8.1f} "
                f"{report['command_seconds']:>9.1f} {report['images_per_second']:>7.0f} "
                f"{report['macs_per_image']:>10,} {achieved:>8.1f} {achieved / peak:>7.1%} "
                f"{val_figure(report):>8} {report['test_accuracy']:>8.2%}"
            )
            load = os.getloadavg()[0]
            print(f"{name} (load average after: {load:.1f}): {json.dumps(report)}", flush=True)
    if rows:
        print(header)
        print("\n".join(rows))


if __name__ == "__main__":
    main()
