"""`digits evaluate`: the command's flow. Load the model, infer, score, write, log.

The scores are :mod:`digits_cli.scores`, the plots :mod:`digits_cli.plots`, the model card
:mod:`digits_cli.model_card`; the inference (with optional test-time augmentation) is here.
Everything that touches torch, matplotlib or MLflow is imported inside the function that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digits_cli.errors import DigitsError
from digits_cli.io import atomic_open, write_json
from digits_cli.model_card import PER_CLASS_COLUMNS, model_card, per_class_rows
from digits_cli.plots import write_plots
from digits_cli.scores import N_CLASSES, SUMMARY_KEYS, confusion_matrix, evaluation_metrics

if TYPE_CHECKING:
    import torch

    from digits_cli.config import EvaluateSettings, Settings, TrackingSettings
    from digits_cli.model import Classifier

# Test-time augmentation views: the digit itself and one-pixel shifts (dx, dy) in each direction.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


# --- Prediction ----------------------------------------------------------------------------------


def shift_images(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move (N, 1, H, W) images ``dx`` pixels right and ``dy`` down, filling with background 0."""
    import torch.nn.functional as F

    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def predict_probabilities(
    model: Classifier, images: np.ndarray, batch_size: int, tta: bool = False
) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images (N, 28, 28); ``tta`` averages over shifts."""
    import torch

    from digits_cli.model import model_input

    views = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    model.eval()
    batches = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = model_input(torch.from_numpy(images[start : start + batch_size]))
            views_probs = [torch.softmax(model(shift_images(x, dx, dy)), dim=1) for dx, dy in views]
            batches.append(torch.stack(views_probs).mean(dim=0).numpy())
    return np.concatenate(batches) if batches else np.zeros((0, N_CLASSES), dtype=np.float32)


# --- MLflow --------------------------------------------------------------------------------------


def resolve_run(tracking: TrackingSettings, run_id: str | None) -> Any:
    """Point MLflow at the store and fetch the checkpoint's run there (None: no run yet)."""
    import mlflow

    from digits_cli.tracking import checkpoint_run, configure_tracking

    uri = configure_tracking(tracking)
    if not run_id:
        return None
    run = checkpoint_run(run_id, uri, "evaluate with the tracking.uri it was trained with")
    # MLflow resumes a run only within the active experiment, which tracking.experiment may not be.
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
    return run


def log_results(
    metrics: dict[str, Any], emission_metrics: dict[str, float], files: list[Path], plots_dir: Path
) -> None:
    """Log test_* metrics, the emissions and the files into the active MLflow run."""
    import mlflow

    test_metrics = {f"test_{key}": float(metrics[key]) for key in SUMMARY_KEYS}
    test_metrics.update(
        {f"test_f1_digit_{digit}": row["f1"] for digit, row in metrics["per_class"].items()}
    )
    mlflow.log_metrics({**test_metrics, **emission_metrics})
    for path in files:
        mlflow.log_artifact(str(path), artifact_path="evaluation")
    mlflow.log_artifacts(str(plots_dir), artifact_path="evaluation/plots")


# --- The command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """What `digits evaluate` produced."""

    metrics: dict[str, Any]
    confusion: np.ndarray
    run_id: str


def evaluate(settings: Settings) -> Evaluation:
    """Evaluate ``evaluate.model_path`` on the test split; write metrics, plots, the model card."""
    import mlflow

    from digits_cli.data import load_manifest, load_split, manifest_digest
    from digits_cli.emissions import track_emissions
    from digits_cli.model import load_checkpoint

    cfg = settings.evaluate
    # Everything that can be a user mistake is checked before any work or output.
    model, meta = load_checkpoint(cfg.model_path)
    test = load_split(settings.data.processed_dir, "test")
    if not len(test.labels):
        raise DigitsError(f"{settings.data.processed_dir}: the test split is empty")
    manifest = load_manifest(settings.data.processed_dir)
    trained = resolve_run(settings.tracking, meta.get("mlflow_run_id"))
    run_id = trained.info.run_id if trained else None

    with track_emissions(settings.emissions, "evaluate") as emissions:
        probabilities = predict_probabilities(model, test.images, cfg.batch_size, cfg.tta)
        metrics = evaluation_metrics(probabilities, test.labels, cfg.calibration_bins)
        confusion = confusion_matrix(test.labels, probabilities.argmax(axis=1))
        plots = write_plots(test.images, probabilities, test.labels, metrics, confusion, cfg)
        write_json(cfg.metrics, metrics)

    # A new run (no training run recorded) is opened here so the card can name it; the card is
    # written after the tracker stops so its energy table holds this evaluation too.
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "evaluate") as run:
        run_id = str(run.info.run_id)
        card = model_card(
            model=model,
            meta=meta,
            manifest=manifest,
            data_digest=manifest_digest(settings.data.processed_dir),
            metrics=metrics,
            confusion=confusion,
            settings=settings,
            plots=plots,
            run_id=run_id,
        )
        with atomic_open(cfg.model_card) as handle:
            handle.write(card)
        log_results(metrics, emissions.as_metrics(), [cfg.metrics, cfg.model_card], cfg.plots_dir)
    if trained is not None and trained.info.status != "FINISHED":
        # Resuming the run ended it FINISHED; an interrupted training stays KILLED (register
        # refuses its model).
        mlflow.MlflowClient().set_terminated(run_id, status=trained.info.status)
    return Evaluation(metrics=metrics, confusion=confusion, run_id=run_id)


def print_evaluation(result: Evaluation, settings: EvaluateSettings) -> None:
    """The summary and per-class tables."""
    from rich.table import Table

    from digits_cli.reporting import console, print_heading

    metrics = result.metrics
    print_heading(f"Test split: {metrics['n_test']:,} digits ({settings.model_path})")
    summary = Table()
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in SUMMARY_KEYS:
        value = metrics[key]
        summary.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    per_class = Table(title="Per class")
    for column in PER_CLASS_COLUMNS:
        per_class.add_column(column, justify="right")
    for row in per_class_rows(metrics, result.confusion):
        per_class.add_row(*row)
    console.print(summary)
    console.print(per_class)
    print_heading(
        f"metrics {settings.metrics}, plots {settings.plots_dir}/, "
        f"model card {settings.model_card}, MLflow run {result.run_id}"
    )
