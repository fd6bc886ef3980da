"""The evaluation's plots: confusion matrix, reliability diagram and the most confident mistakes.

Each PNG is drawn with matplotlib's object API (Agg, no pyplot state) and written atomically;
the confusion and reliability data also go to CSV files that `dvc plots` renders.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digits_cli.io import atomic_open, atomic_path
from digits_cli.scores import reliability_bins, worst_errors

if TYPE_CHECKING:
    from digits_cli.config import EvaluateSettings


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
