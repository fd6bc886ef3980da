"""`digits train`: augmentation, averaging, determinism, the command end to end with MLflow, DDP."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
import yaml
from conftest import validated
from typer.testing import CliRunner, Result

from digits_cli.augment import elastic_field, low_resolution, random_affine
from digits_cli.cli import app
from digits_cli.config import TrainSettings
from digits_cli.data import manifest_digest
from digits_cli.errors import DigitsError
from digits_cli.fitting import Outcome, WeightEMA, Workers, batch_plan, fit, one_cycle
from digits_cli.model import Classifier, load_checkpoint
from digits_cli.training import load_tensors, pixel_stats, train_overrides

REPORT_KEYS = {
    "seconds",
    "epochs",
    "best_val_accuracy",
    "images_per_second",
    "params",
    "macs_per_image",
    "mlflow_run_id",
    "precision",
}


def write_params(
    folder: Path, processed_dir: Path, validate_report: Path | None = None, **train: Any
) -> Path:
    """A params file sending every output of `digits train` under ``folder``; the validation
    report is the data's passing one unless given."""
    if validate_report is None and (processed_dir / "manifest.json").is_file():
        validate_report = validated(processed_dir)
    params = {
        "data": {"processed_dir": str(processed_dir)},
        "validate": {"report": str(validate_report or folder / "no-validation.json")},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "lr": 0.05,
            "max_train_samples": 512,
            "threads": 1,
            "refit": False,  # validate on the held-out split; the refit has its own tests
            "model_path": str(folder / "models" / "model.pt"),
            "report": str(folder / "reports" / "train.json"),
            **train,
        },
        "tracking": {"experiment": "tests-train", "artifact_location": str(folder / "mlruns")},
        "emissions": {"output_file": str(folder / "emissions.csv")},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def invoke(tracking_uri: str, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"MLFLOW_TRACKING_URI": tracking_uri})


@pytest.fixture(scope="module")
def trained(
    processed_dir: Path, tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Result, Path]:
    """One tiny `digits train` (one epoch, 512 digits) and the folder holding its outputs."""
    folder = tmp_path_factory.mktemp("train")
    params = write_params(folder, processed_dir)
    return invoke(tracking_uri, "--params", str(params), "train"), folder


@pytest.fixture(scope="module")
def report(trained: tuple[Result, Path]) -> dict[str, Any]:
    result, folder = trained
    assert result.exit_code == 0, result.stderr
    return json.loads((folder / "reports" / "train.json").read_text())


@pytest.fixture(scope="module")
def run(report: dict[str, Any], tracking_uri: str) -> Any:
    return mlflow.MlflowClient(tracking_uri).get_run(report["mlflow_run_id"])


# --- Pieces ------------------------------------------------------------------------------------


def test_presets_apply_under_explicit_options() -> None:
    values = train_overrides("fast", {"epochs": 7, "lr": None})
    assert values["epochs"] == 7
    assert values["arch"] == "small" and values["augment"] is False


def test_an_unknown_preset_is_a_user_error() -> None:
    with pytest.raises(DigitsError, match="unknown preset 'slow'"):
        train_overrides("slow", {})


def test_an_affine_warp_with_no_range_leaves_images_unchanged(
    mnist_small: dict[str, Any],
) -> None:
    images = torch.from_numpy(mnist_small["train"].images[:8]).unsqueeze(1).float() / 255
    cfg = TrainSettings(rotation=0, scale=0, shift=0, elastic=0)
    warped = random_affine(images, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(warped, images, atol=1e-5, rtol=0)


def test_an_affine_warp_moves_pixels_but_keeps_them_in_range(
    mnist_small: dict[str, Any],
) -> None:
    images = torch.from_numpy(mnist_small["train"].images[:8]).unsqueeze(1).float() / 255
    warped = random_affine(images, TrainSettings(), torch.Generator().manual_seed(0))
    assert warped.shape == images.shape
    assert float(warped.min()) >= 0 and float(warped.max()) <= 1
    assert float((warped - images).abs().mean()) > 0.01


def test_low_resolution_blurs_its_share_of_the_batch_and_leaves_the_rest(
    mnist_small: dict[str, Any],
) -> None:
    images = torch.from_numpy(mnist_small["train"].images[:10]).unsqueeze(1).float() / 255
    cfg = TrainSettings(low_resolution=0.3, low_resolution_side=14)
    seen = low_resolution(images, cfg, torch.Generator().manual_seed(0))
    assert seen.shape == images.shape
    assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    torch.testing.assert_close(seen[3:], images[3:])

    # The three shrunk and enlarged are smoother: their sharpest steps between pixels are lower.
    def sharpest(batch: torch.Tensor) -> float:
        return float((batch[:, :, :, 1:] - batch[:, :, :, :-1]).abs().amax(dim=(1, 2, 3)).mean())

    assert sharpest(seen[:3]) < 0.9 * sharpest(images[:3])
    none = TrainSettings(low_resolution=0.0)
    assert low_resolution(images, none, torch.Generator()) is images


def test_an_elastic_field_is_smooth_and_as_strong_as_asked() -> None:
    rough = elastic_field(64, (28, 28), alpha=1.0, sigma=1.0, generator=torch.Generator())
    smooth = elastic_field(64, (28, 28), alpha=1.0, sigma=4.0, generator=torch.Generator())
    assert smooth.shape == (64, 28, 28, 2)

    def neighbour_step(field: torch.Tensor) -> float:
        return float((field[:, 1:] - field[:, :-1]).abs().mean() / field.abs().mean())

    assert neighbour_step(smooth) < neighbour_step(rough) / 2
    strong = elastic_field(64, (28, 28), alpha=8.0, sigma=4.0, generator=torch.Generator())
    torch.testing.assert_close(strong, smooth * 8)


def test_the_elastic_blur_is_a_zero_padded_gaussian_convolution() -> None:
    import torch.nn.functional as F

    noise = torch.rand(6, 1, 20, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    taps = torch.exp(-0.5 * (torch.arange(-5, 6, dtype=torch.float32) / 1.5) ** 2)
    taps /= taps.sum()
    expected = F.conv2d(noise, taps.view(1, 1, 1, -1), padding=(0, 5))
    expected = F.conv2d(expected, taps.view(1, 1, -1, 1), padding=(5, 0))
    field = elastic_field(3, (20, 28), 1.0, 1.5, torch.Generator().manual_seed(1))
    pixels = field / torch.tensor([2 / 28, 2 / 20])
    torch.testing.assert_close(pixels.permute(0, 3, 1, 2).reshape(6, 1, 20, 28), expected)


def test_elastic_distortion_reaches_only_its_share_of_the_batch(
    mnist_small: dict[str, Any],
) -> None:
    images = torch.from_numpy(mnist_small["train"].images[:8]).unsqueeze(1).float() / 255
    cfg = TrainSettings(rotation=0, scale=0, shift=0, elastic=6.0, elastic_fraction=0.5)
    warped = random_affine(images, cfg, torch.Generator().manual_seed(0))
    change = (warped - images).abs().flatten(1).mean(1)
    assert bool((change[:4] > 0.01).all())
    torch.testing.assert_close(warped[4:], images[4:], atol=1e-5, rtol=0)


def test_pixel_stats_are_those_of_the_scaled_pixels() -> None:
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    mean, std = pixel_stats(images)
    assert mean == pytest.approx(0.5)
    assert std == pytest.approx(np.std([0.0, 1.0], ddof=1))


def test_the_weight_average_follows_weights_and_batch_norm_statistics() -> None:
    model = Classifier("small")
    ema = WeightEMA(model, decay=0.5)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype.is_floating_point:
                tensor.add_(1.0)
    before = {name: value.clone() for name, value in ema.model.state_dict().items()}
    ema.update(model)
    after = ema.model.state_dict()
    for name, value in model.state_dict().items():
        if value.dtype.is_floating_point and name not in ("mean", "std"):
            assert torch.all(after[name] > before[name]), name
            assert torch.all(after[name] <= value), name


def test_the_best_epoch_has_the_highest_val_accuracy_then_the_lowest_val_loss() -> None:
    outcome = Outcome()
    marks = [(0.90, 0.5), (0.95, 0.4), (0.95, 0.3), (0.95, 0.35), (0.94, 0.2)]
    best = [outcome.record(epoch, {"val_accuracy": a, "val_loss": loss}) for epoch, (a, loss) in
            enumerate(marks, 1)]  # fmt: skip
    assert best == [True, True, True, False, False]
    assert outcome.best_epoch == 3
    assert outcome.stale_epochs == 3  # early stopping counts epochs without a higher accuracy


@pytest.mark.parametrize("total", [1, 2, 5, 1000])
def test_the_one_cycle_schedule_rises_then_falls_for_any_length(total: int) -> None:
    factors = [one_cycle(total)(step) for step in range(total)]
    peak = factors.index(max(factors))
    assert all(0 < f <= 1 for f in factors)
    assert factors[: peak + 1] == sorted(factors[: peak + 1])
    assert factors[peak:] == sorted(factors[peak:], reverse=True)


def test_the_one_cycle_schedule_ends_near_zero() -> None:
    assert one_cycle(1000)(999) < 0.01


def test_two_processes_split_each_batch_and_drop_the_incomplete_one() -> None:
    assert batch_plan(1000, 256, Workers(rank=1, world_size=2)) == (128, 3)
    assert batch_plan(100, 256, Workers()) == (100, 1)


def test_max_train_samples_takes_a_seeded_random_subset(processed_dir: Path) -> None:
    full, _ = load_tensors(processed_dir, TrainSettings())
    first, _ = load_tensors(processed_dir, TrainSettings(max_train_samples=100, seed=1))
    again, _ = load_tensors(processed_dir, TrainSettings(max_train_samples=100, seed=1))
    other, _ = load_tensors(processed_dir, TrainSettings(max_train_samples=100, seed=2))
    assert len(first) == 100
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert not torch.equal(first.images, full.images[:100])


def test_a_refit_trains_on_the_validation_digits_too(processed_dir: Path) -> None:
    held_out, val = load_tensors(processed_dir, TrainSettings(refit=False))
    refit, same_val = load_tensors(processed_dir, TrainSettings(refit=True))
    assert len(refit) == len(held_out) + len(val)
    assert torch.equal(refit.images[len(held_out) :], val.images)
    assert torch.equal(same_val.images, val.images)


def short_fit(
    processed_dir: Path,
    seed: int,
    on_epoch: Callable[[dict[str, float], int], None] = lambda metrics, epoch: None,
    kept: list[Classifier] | None = None,
    **overrides: Any,
) -> tuple[Outcome, list[int]]:
    """A few epochs (two unless overridden) on 256 digits with one thread; the outcome and the
    epochs whose model was saved (copies of those models go to ``kept`` when given)."""
    torch.set_num_threads(1)
    settings = {"epochs": 2, "batch_size": 64, "lr": 0.05, "max_train_samples": 256, **overrides}
    cfg = TrainSettings(seed=seed, **settings)
    train, val = load_tensors(processed_dir, cfg)
    torch.manual_seed(seed)
    model = Classifier("small", *pixel_stats(train.images))
    saved: list[int] = []

    def keep(model: Classifier, epoch: int) -> None:
        saved.append(epoch)
        if kept is not None:
            kept.append(copy.deepcopy(model))

    outcome = fit(
        model,
        train,
        val,
        cfg,
        Workers(),
        torch.device("cpu"),
        on_keep=lambda model, outcome: keep(model, outcome.best_epoch),
        on_epoch=on_epoch,
    )
    return outcome, saved


def without_speed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Epoch metrics without images/s, which depends on the machine's load."""
    return [{k: v for k, v in m.items() if k != "images_per_second"} for m in history]


def test_the_same_seed_gives_the_same_metrics(processed_dir: Path) -> None:
    first, _ = short_fit(processed_dir, seed=3)
    second, _ = short_fit(processed_dir, seed=3)
    other, _ = short_fit(processed_dir, seed=4)
    assert without_speed(first.history) == without_speed(second.history)
    assert first.history[-1]["train_loss"] != other.history[-1]["train_loss"]


def test_ctrl_c_stops_cleanly_after_keeping_the_best_model(processed_dir: Path) -> None:
    def interrupt(metrics: dict[str, float], epoch: int) -> None:
        raise KeyboardInterrupt

    outcome, saved = short_fit(
        processed_dir, seed=0, on_epoch=interrupt, epochs=3, max_train_samples=128
    )
    assert outcome.interrupted and outcome.epochs == 1
    assert saved == [1]


def test_a_refit_validates_nothing_keeps_every_epoch_and_never_stops_early(
    processed_dir: Path,
) -> None:
    outcome, saved = short_fit(processed_dir, seed=0, epochs=3, patience=1, refit=True)
    assert saved == [1, 2, 3] and not outcome.stopped_early
    assert all("val_accuracy" not in metrics for metrics in outcome.history)
    assert outcome.best_val_accuracy is None


def test_clean_epochs_train_without_augmentation(processed_dir: Path) -> None:
    plain, _ = short_fit(processed_dir, seed=0, augment=False)
    clean, _ = short_fit(processed_dir, seed=0, clean_epochs=2, elastic=4.0)
    half, _ = short_fit(processed_dir, seed=0, clean_epochs=1)
    assert without_speed(clean.history) == without_speed(plain.history)
    assert without_speed(half.history) != without_speed(plain.history)


def test_bf16_steps_train_float32_weights_in_their_own_arithmetic(processed_dir: Path) -> None:
    kept: list[Classifier] = []
    outcome, _ = short_fit(processed_dir, seed=0, kept=kept, precision="bf16")
    full, _ = short_fit(processed_dir, seed=0, precision="fp32")
    assert kept and all(p.dtype == torch.float32 for p in kept[-1].parameters())
    assert outcome.history[0]["train_loss"] != full.history[0]["train_loss"]
    # The same training in coarser arithmetic: close to float32's losses, not equal to them.
    for ours, theirs in zip(outcome.history, full.history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=0.1)


def test_a_refit_train_says_it_held_nothing_out(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    params = write_params(tmp_path, processed_dir, refit=True, epochs=2, max_train_samples=256)
    result = invoke(tracking_uri, "--params", str(params), "train")
    assert result.exit_code == 0, result.stderr
    assert "refit on train + val, final weights of epoch 2" in result.stdout
    report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert report["trained_on"] == "train+val" and report["best_epoch"] == 2
    assert report["best_val_accuracy"] is None and report["best_val_loss"] is None
    _, meta = load_checkpoint(tmp_path / "models" / "model.pt")
    assert meta["trained_on"] == "train+val" and meta["epoch"] == 2
    run = mlflow.MlflowClient(tracking_uri).get_run(report["mlflow_run_id"])
    assert run.data.tags["trained_on"] == "train+val"
    assert not {"val_accuracy", "best_val_accuracy"} & set(run.data.metrics)


def test_train_reports_what_it_did(report: dict[str, Any]) -> None:
    assert set(report) >= REPORT_KEYS
    assert report["epochs"] == 1 and report["train_samples"] == 512
    assert 0 < report["best_val_accuracy"] <= 1


def test_train_prints_the_model_size(trained: tuple[Result, Path], report: dict) -> None:
    result, _ = trained
    assert f"{report['params']:,} parameters" in result.stdout
    assert f"{report['macs_per_image']:,} MACs per image" in result.stdout


def test_the_checkpoint_names_its_run_data_and_settings(
    trained: tuple[Result, Path], report: dict[str, Any], processed_dir: Path
) -> None:
    _, folder = trained
    _, meta = load_checkpoint(folder / "models" / "model.pt")
    assert meta["mlflow_run_id"] == report["mlflow_run_id"]
    assert meta["data_manifest_sha256"] == manifest_digest(processed_dir)
    assert meta["best_val_accuracy"] == report["best_val_accuracy"]
    assert meta["epoch"] == 1
    assert meta["train"]["max_train_samples"] == 512


def test_the_run_logs_the_resolved_settings_as_params(run: Any, processed_dir: Path) -> None:
    assert run.data.params["train.epochs"] == "1"
    assert run.data.params["data.processed_dir"] == str(processed_dir)
    assert "evaluate.batch_size" in run.data.params


def test_the_run_logs_per_epoch_metrics(run: Any, tracking_uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "images_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [point.step for point in history] == [1], key


def test_the_run_is_tagged_with_the_commit_and_the_data(run: Any, processed_dir: Path) -> None:
    assert run.data.tags["data_manifest_sha256"] == manifest_digest(processed_dir)
    assert len(run.data.tags["git_commit"]) == 40


def test_the_logged_model_predicts_a_batch_of_3_like_the_checkpoint(
    run: Any, trained: tuple[Result, Path], tracking_uri: str, mnist_small: dict[str, Any]
) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    checkpoint, _ = load_checkpoint(trained[1] / "models" / "model.pt")
    images = torch.from_numpy(mnist_small["test"].images[:3]).unsqueeze(1).float() / 255
    with torch.no_grad():
        logits = logged(images)
        expected = checkpoint(images)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_the_checkpoint_file_is_logged_for_fast_loading(run: Any, tracking_uri: str) -> None:
    artifacts = mlflow.MlflowClient(tracking_uri).list_artifacts(run.info.run_id, "checkpoint")
    assert [artifact.path for artifact in artifacts] == ["checkpoint/model.pt"]


def test_training_emissions_are_measured_and_logged(run: Any, trained: tuple[Result, Path]) -> None:
    rows = (trained[1] / "emissions.csv").read_text().splitlines()
    assert len(rows) == 2 and ",train," in rows[1]
    assert {"train_energy_kwh", "train_co2eq_kg"} <= set(run.data.metrics)


def test_cli_options_override_the_params_file(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    params = write_params(tmp_path, processed_dir, arch="default")
    result = invoke(
        tracking_uri,
        "--params", str(params),
        "train", "--arch", "lenet", "--max-train-samples", "128", "--no-ema",
        "--precision", "fp32", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["arch"] == "lenet" and printed["train_samples"] == 128
    assert printed["precision"] == "fp32"
    assert json.loads((tmp_path / "reports" / "train.json").read_text()) == printed


def test_train_refuses_data_that_failed_validation(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    report = json.loads(validated(processed_dir).read_text())
    report["passed"] = False
    report["checks"][0]["passed"] = False
    failed = tmp_path / "validation.json"
    failed.write_text(json.dumps(report))
    params = write_params(tmp_path, processed_dir, validate_report=failed)
    result = invoke(tracking_uri, "--params", str(params), "train")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: {failed}: the data failed validation ({report['checks'][0]['name']}); "
        "training refuses it"
    ]
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("report", ["missing", "other data"])
def test_train_refuses_data_without_a_validation_of_these_splits(
    report: str, processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    path = tmp_path / "validation.json"
    if report == "other data":
        other = json.loads(validated(processed_dir).read_text())
        other["data_manifest_sha256"] = "0" * 64
        path.write_text(json.dumps(other))
    params = write_params(tmp_path, processed_dir, validate_report=path)
    result = invoke(tracking_uri, "--params", str(params), "train")
    assert result.exit_code == 1
    reason = "not found" if report == "missing" else "validates other data than these splits"
    assert result.stderr.strip().splitlines() == [
        f"digits: error: {path}: {reason}; run `digits validate` first"
    ]
    assert not (tmp_path / "models").exists()


def test_missing_processed_data_is_one_clear_line(tracking_uri: str, tmp_path: Path) -> None:
    params = write_params(tmp_path, tmp_path / "nowhere")
    result = invoke(tracking_uri, "--params", str(params), "train")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: {tmp_path / 'nowhere' / 'train.npz'}: not found; "
        "run `digits prepare` first"
    ]
    assert not (tmp_path / "models").exists()


def test_splits_without_their_manifest_are_one_clear_line(
    tracking_uri: str, processed_dir: Path, tmp_path: Path
) -> None:
    splits = tmp_path / "processed"
    shutil.copytree(processed_dir, splits, ignore=shutil.ignore_patterns("manifest.json"))
    params = write_params(tmp_path, splits)
    result = invoke(tracking_uri, "--params", str(params), "train")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: {splits / 'manifest.json'}: not found; run `digits prepare` first"
    ]
    assert not (tmp_path / "models").exists()


def test_two_processes_train_with_distributed_data_parallel(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    params = write_params(tmp_path, processed_dir, arch="small", max_train_samples=256)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "digits_cli", "--params", str(params), "train", "--json",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 alone reports
    assert printed[0]["processes"] == 2
    assert (tmp_path / "models" / "model.pt").is_file()
