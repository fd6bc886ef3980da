"""`digits evaluate`: test-split metrics, plots, the model card, and their record in MLflow.

The metric functions are pure numpy on label and probability arrays; everything that touches
torch, matplotlib or MLflow is imported inside the function that needs it.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digits_cli.errors import DigitsError
from digits_cli.io import atomic_open, atomic_path, write_json

if TYPE_CHECKING:
    import torch

    from digits_cli.config import (
        EmissionsSettings,
        EvaluateSettings,
        Settings,
        TrackingSettings,
    )
    from digits_cli.model import Classifier

N_CLASSES = 10
# Test-time augmentation views: the digit itself and one-pixel shifts (dx, dy) in each direction.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
# The summary figures logged to MLflow as test_<name>; the registry reads test_accuracy.
SUMMARY_KEYS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "ece",
    "mean_confidence",
    "nll",
    "n_errors",
)


# --- Metrics (pure) ------------------------------------------------------------------------------


def _labels(values: np.ndarray, name: str, n_classes: int) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array")
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(f"{name} holds labels outside 0..{n_classes - 1}")
    return values.astype(np.int64)


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
) -> np.ndarray:
    """Counts ``[actual, predicted]``: row i holds the digits of class i by predicted class."""
    y_true = _labels(y_true, "y_true", n_classes)
    y_pred = _labels(y_pred, "y_pred", n_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    counts = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio that is 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix ``[actual, predicted]``.

    Precision is TP / (TP + FP): the share of the digits *predicted* as the class that are right
    (column); recall is TP / (TP + FN): the share of the digits *of* the class found (row).
    """
    true_positives = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = _ratio(true_positives, confusion.sum(axis=0).astype(np.float64))
    recall = _ratio(true_positives, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
) -> dict[str, Any]:
    """Accuracy, macro and support-weighted precision/recall/F1, and the per-class table."""
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    scores = per_class_scores(confusion)
    support = scores["support"]
    total = int(support.sum())
    weights = support / total if total else np.zeros(n_classes)
    metrics: dict[str, Any] = {"accuracy": float(np.trace(confusion) / total) if total else 0.0}
    for name in ("precision", "recall", "f1"):
        metrics[f"macro_{name}"] = float(scores[name].mean())
        metrics[f"weighted_{name}"] = float((scores[name] * weights).sum())
    metrics["per_class"] = {
        str(label): {
            "precision": float(scores["precision"][label]),
            "recall": float(scores["recall"][label]),
            "f1": float(scores["f1"][label]),
            "support": int(support[label]),
        }
        for label in range(n_classes)
    }
    return metrics


def reliability_bins(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int
) -> list[dict[str, float]]:
    """Non-empty equal-width bins of the top probability: range, count, mean confidence, accuracy.

    Bin b holds confidences in (b/n, (b+1)/n]; the top probability is never 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = _labels(y_true, "y_true", probabilities.shape[1])
    if len(probabilities) != len(y_true):
        raise ValueError(f"{len(probabilities)} probability rows but {len(y_true)} labels")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        if members.any():
            bins.append(
                {
                    "lower": b / n_bins,
                    "upper": (b + 1) / n_bins,
                    "count": int(members.sum()),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return bins


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = 15
) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability_bins(probabilities, y_true, n_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total)


def negative_log_likelihood(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """Mean -log p(true class), probabilities floored so a confident error stays finite."""
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(y_true)), y_true]
    return float(-np.log(np.maximum(picked, 1e-12)).mean()) if len(y_true) else 0.0


def evaluation_metrics(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int
) -> dict[str, Any]:
    """Everything `reports/metrics.json` holds, from class probabilities and true labels."""
    y_pred = np.asarray(probabilities).argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, np.asarray(probabilities).shape[1])
    per_class = metrics.pop("per_class")
    metrics["ece"] = expected_calibration_error(probabilities, y_true, n_bins)
    metrics["nll"] = negative_log_likelihood(probabilities, y_true)
    metrics["mean_confidence"] = float(np.asarray(probabilities).max(axis=1).mean())
    metrics["n_test"] = len(y_true)
    metrics["n_errors"] = int((y_pred != y_true).sum())
    metrics["per_class"] = per_class
    return metrics


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


# --- Artifacts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotFiles:
    """The files `digits evaluate` writes under ``evaluate.plots_dir``."""

    confusion_csv: Path
    confusion_png: Path
    calibration_csv: Path
    calibration_png: Path
    misclassified_png: Path

    @classmethod
    def under(cls, folder: Path) -> PlotFiles:
        return cls(
            confusion_csv=folder / "confusion.csv",
            confusion_png=folder / "confusion.png",
            calibration_csv=folder / "calibration.csv",
            calibration_png=folder / "calibration.png",
            misclassified_png=folder / "misclassified.png",
        )


def write_csv(path: Path, header: list[str], rows: Any) -> None:
    """Write rows under a header as CSV, atomically."""
    with atomic_open(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def plot_confusion(confusion: np.ndarray, path: Path) -> None:
    """The confusion matrix as a PNG heat map with counts (log colour so errors stay visible)."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure  # the object API renders with Agg, no pyplot state

    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.subplots()
    image = axes.imshow(confusion + 1, cmap="Blues", norm=LogNorm())
    threshold = math.sqrt(confusion.max() + 1)
    for (actual, predicted), count in np.ndenumerate(confusion):
        if count:
            colour = "white" if count + 1 > threshold else "black"
            axes.text(
                predicted, actual, str(count), ha="center", va="center", fontsize=7, color=colour
            )
    labels = range(confusion.shape[0])
    axes.set(xticks=labels, yticks=labels, xlabel="predicted", ylabel="actual")
    axes.set_title(f"Confusion matrix ({int(confusion.sum()):,} test digits)")
    figure.colorbar(image, ax=axes, label="count + 1")
    _save_figure(figure, path)


def plot_calibration(bins: list[dict[str, float]], ece: float, path: Path) -> None:
    """The reliability diagram: accuracy against mean confidence per bin, with the diagonal."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.plot(
        [b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label="model"
    )
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="mean confidence", ylabel="accuracy")
    axes.set_title(f"Reliability (ECE {ece:.4f})")
    axes.legend(loc="upper left")
    _save_figure(figure, path)


def worst_errors(probabilities: np.ndarray, y_true: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the misclassified digits, most confident mistakes first, at most ``limit``."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    order = np.argsort(-probabilities[wrong, y_pred[wrong]], kind="stable")
    return wrong[order[:limit]]


def plot_misclassified(
    images: np.ndarray, probabilities: np.ndarray, y_true: np.ndarray, limit: int, path: Path
) -> None:
    """A grid of the most confident mistakes, each titled with its true and predicted digit."""
    from matplotlib.figure import Figure

    chosen = worst_errors(probabilities, y_true, limit)
    columns = max(1, min(len(chosen), math.ceil(math.sqrt(limit))))
    rows = max(1, math.ceil(len(chosen) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.8 * rows + 0.4))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, chosen, strict=False):
        predicted = int(probabilities[index].argmax())
        ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(
            f"true {y_true[index]} → {predicted}\np={probabilities[index, predicted]:.2f}",
            fontsize=8,
        )
    title = "Most confident mistakes" if len(chosen) else "No misclassified test digit"
    figure.suptitle(title)
    _save_figure(figure, path)


def write_plots(
    images: np.ndarray,
    probabilities: np.ndarray,
    y_true: np.ndarray,
    metrics: dict[str, Any],
    confusion: np.ndarray,
    settings: EvaluateSettings,
) -> PlotFiles:
    """Write the confusion (CSV for `dvc plots`, PNG), reliability (CSV, PNG) and mistakes grid."""
    files = PlotFiles.under(settings.plots_dir)
    y_pred = probabilities.argmax(axis=1)
    write_csv(
        files.confusion_csv,
        ["actual", "predicted"],
        zip(y_true.tolist(), y_pred.tolist(), strict=True),
    )
    plot_confusion(confusion, files.confusion_png)
    bins = reliability_bins(probabilities, y_true, settings.calibration_bins)
    columns = ["lower", "upper", "count", "confidence", "accuracy"]
    write_csv(files.calibration_csv, columns, ([b[c] for c in columns] for b in bins))
    plot_calibration(bins, metrics["ece"], files.calibration_png)
    plot_misclassified(
        images, probabilities, y_true, settings.worst_errors, files.misclassified_png
    )
    return files


# --- Model card ----------------------------------------------------------------------------------


def _number(value: Any, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return "n/a"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def energy_section(cfg: EmissionsSettings) -> str:
    """The latest codecarbon row per run kind as a table, or why there is none."""
    from digits_cli.emissions_report import latest_per_kind, read_emissions

    if not cfg.output_file.is_file():
        return f"No emissions recorded (`{cfg.output_file}` is absent or empty)."
    try:
        latest = latest_per_kind(read_emissions(cfg.output_file))
    except DigitsError as exc:
        return f"No emissions shown: {exc}."
    if not latest:
        return f"No emissions recorded (`{cfg.output_file}` is absent or empty)."
    rows = [
        [
            kind,
            row.timestamp or "n/a",
            _number(row.duration_s, 4),
            _number(row.energy_kwh, 4),
            _number(row.co2eq_kg, 4),
        ]
        for kind, row in sorted(latest.items())
    ]
    return (
        _table(["run kind", "timestamp", "duration (s)", "energy (kWh)", "CO2eq (kg)"], rows)
        + f"\n\nLatest row per kind in `{cfg.output_file}` "
        f"(codecarbon offline tracker, grid of {cfg.country_iso_code})."
    )


def _training_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """Train settings a checkpoint recorded: ``meta["train"]`` or ``meta["settings"]["train"]``."""
    recorded = meta.get("train") or (meta.get("settings") or {}).get("train")
    return recorded if isinstance(recorded, dict) else {}


def confidence_bias(metrics: dict[str, Any]) -> str:
    """One sentence comparing the mean top probability with the accuracy."""
    gap = metrics["mean_confidence"] - metrics["accuracy"]
    leaning = "over-confident" if gap > 0 else "under-confident"
    return (
        f"Mean confidence {metrics['mean_confidence']:.4f} against accuracy "
        f"{metrics['accuracy']:.4f}: {leaning} by {abs(gap):.4f} on average."
    )


def most_confused(confusion: np.ndarray) -> list[str]:
    """Per actual class, its most frequent wrong prediction as 'digit (count)', or '-'."""
    off_diagonal = confusion - np.diag(np.diag(confusion))
    return [f"{int(row.argmax())} ({int(row.max())})" if row.max() else "-" for row in off_diagonal]


PER_CLASS_COLUMNS = ["digit", "precision", "recall", "F1", "support", "most confused with"]


def per_class_rows(metrics: dict[str, Any], confusion: np.ndarray) -> list[list[str]]:
    """The per-class table's rows, formatted, in :data:`PER_CLASS_COLUMNS` order."""
    confused = most_confused(confusion)
    return [
        [
            digit,
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            f"{row['support']:,}",
            confused[int(digit)],
        ]
        for digit, row in metrics["per_class"].items()
    ]


def model_card(
    *,
    model: Classifier,
    meta: dict[str, Any],
    manifest: dict[str, Any],
    data_digest: str,
    metrics: dict[str, Any],
    confusion: np.ndarray,
    settings: Settings,
    plots: PlotFiles,
    run_id: str | None,
) -> str:
    """The model card in Markdown, built from the checkpoint, the data manifest and the metrics."""
    from digits_cli.model import count_macs, count_parameters

    cfg = settings.evaluate
    card_dir = cfg.model_card.parent
    mean, std = (float(model.get_buffer(name)) for name in ("mean", "std"))

    def link(path: Path) -> str:
        return os.path.relpath(path, card_dir)

    trained_on = meta.get("data_manifest_sha256")
    if trained_on is None:
        data_match = "the training data's manifest was not recorded"
    elif trained_on == data_digest:
        data_match = "the same data the model was trained on"
    else:
        data_match = f"**not the data the model was trained on** (`{trained_on}`)"
    splits = manifest.get("splits", {})
    split_rows = [[name, f"{entry.get('count', 0):,}"] for name, entry in splits.items()]
    training = _training_settings(meta)
    training_rows = [[f"`{key}`", f"`{value}`"] for key, value in training.items()]
    if meta.get("trained_on") == "train+val":
        training_rows.append(["trained on", "train + val (refit: no validation held out)"])
    for key, label in (("best_val_accuracy", "best val accuracy"), ("epoch", "kept epoch")):
        if meta.get(key) is not None:
            training_rows.append([label, _number(meta[key], 6)])
    if meta.get("preset"):
        training_rows.append(["preset", f"`{meta['preset']}`"])
    summary_rows = [[key, _number(metrics[key], 6)] for key in SUMMARY_KEYS]
    weakest = sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"])[:2]
    energy = energy_section(settings.emissions)
    run = f"MLflow run `{run_id}`" if run_id else "no MLflow run"
    tta = "with test-time augmentation (mean over 1-pixel shifts)" if cfg.tta else "without TTA"
    sections = [
        "# Model card: digits classifier",
        f"Generated by `digits evaluate` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from "
        f"`{cfg.model_path}`; {run}, experiment `{settings.tracking.experiment}`.",
        "## Model",
        f"- Architecture: `{model.arch}` convolutional network, "
        f"{count_parameters(model):,} parameters, "
        f"{count_macs(model) / 1e6:.2f} M multiply-accumulates per 28x28 image.\n"
        "- Input: one 28x28 grey-scale digit, white on black, pixels scaled to [0, 1]; the model "
        f"normalises them itself (mean {mean:.4f}, std {std:.4f}, from the training split).\n"
        "- Output: 10 logits, one per digit 0-9; their softmax is the confidence.",
        "## Intended use",
        "Reading handwritten digits: `digits predict`, `digits annotate` and `digits serve` find "
        "every digit in a picture, crop and centre it MNIST-style, and classify it with this "
        "model.",
        "## Data",
        f"- Source: `{manifest.get('source', 'unknown')}`; manifest sha256 `{data_digest}`, "
        f"{data_match}.\n- License: MNIST, CC BY-SA 3.0.",
        _table(["split", "digits"], split_rows),
        "## Training",
        _table(["setting", "value"], training_rows) if training_rows else "Not recorded.",
        f"## Test metrics ({metrics['n_test']:,} test digits, {tta})",
        _table(["metric", "value"], summary_rows),
        f"Confusion matrix: ![confusion]({link(plots.confusion_png)}); most confident mistakes: "
        f"![mistakes]({link(plots.misclassified_png)}).",
        "## Per class",
        _table(PER_CLASS_COLUMNS, per_class_rows(metrics, confusion)),
        "## Calibration",
        f"Expected calibration error {metrics['ece']:.4f} over {cfg.calibration_bins} equal-width "
        f"bins of the top probability (0 is perfect). {confidence_bias(metrics)} "
        "Reliability diagram: "
        f"![reliability]({link(plots.calibration_png)}); bins in `{plots.calibration_csv}`.",
        "## Limits",
        "- Trained and tested on MNIST: single, size-normalised, centred digits from US Census "
        "staff and high-school students. Handwriting styles absent from it (e.g. crossed sevens, "
        "continental ones) may be read less well.\n"
        "- Real photos must go through the digit finder (`digits predict`), which segments, "
        "inverts and centres each digit; feeding raw photos or uncropped crops to the model "
        "directly gives unreliable answers.\n"
        "- No reject class: any input gets a digit; use the confidence "
        "(`segment.min_confidence`) to drop doubtful readings.\n"
        "- Weakest classes on the test split: "
        + ", ".join(f"{digit} (F1 {row['f1']:.4f})" for digit, row in weakest)
        + ".",
        "## Energy",
        energy,
    ]
    return "\n\n".join(sections) + "\n"


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
