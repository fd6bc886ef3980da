"""The model card: `reports/model_card.md`, written from the checkpoint, the data and the scores.

The prose lives in the template ``templates/model_card.md`` (package data, :class:`string.Template`
placeholders such as ``$accuracy``); this module only works out the values and tables.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from digits_cli.errors import DigitsError
from digits_cli.scores import SUMMARY_KEYS

if TYPE_CHECKING:
    from digits_cli.config import EmissionsSettings, Settings
    from digits_cli.model import Classifier
    from digits_cli.plots import PlotFiles

TEMPLATE = ("templates", "model_card.md")
PER_CLASS_COLUMNS = ["digit", "precision", "recall", "F1", "support", "most confused with"]
# What the checkpoint's ``trained_on`` says the model saw; older checkpoints do not say.
TRAINED_ON = {
    "train+val": "train + val (refit: no validation held out)",
    "train": "train (val held out to choose the kept epoch)",
}


def card_template() -> Template:
    """The card's Markdown template, shipped with the package."""
    text = resources.files("digits_cli").joinpath(*TEMPLATE).read_text(encoding="utf-8")
    return Template(text)


def _number(value: Any, digits: int = 4) -> str:
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return "n/a"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _training_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """Train settings a checkpoint recorded (``meta["train"]``, as training saves them)."""
    recorded = meta.get("train")
    return recorded if isinstance(recorded, dict) else {}


def training_rows(meta: dict[str, Any]) -> list[list[str]]:
    """The Training table: recorded settings, what the model was trained on, the kept epoch."""
    rows = [[f"`{key}`", f"`{value}`"] for key, value in _training_settings(meta).items()]
    if meta.get("trained_on") in TRAINED_ON:
        rows.append(["trained on", TRAINED_ON[meta["trained_on"]]])
    for key, label in (("best_val_accuracy", "best val accuracy"), ("epoch", "kept epoch")):
        if meta.get(key) is not None:
            rows.append([label, _number(meta[key], 6)])
    if meta.get("preset"):
        rows.append(["preset", f"`{meta['preset']}`"])
    return rows


def data_match(meta: dict[str, Any], data_digest: str) -> str:
    """Whether the evaluated data is the data the checkpoint was trained on."""
    trained_digest = meta.get("data_manifest_sha256")
    if trained_digest is None:
        return "the training data's manifest was not recorded"
    if trained_digest == data_digest:
        return "the same data the model was trained on"
    return f"**not the data the model was trained on** (`{trained_digest}`)"


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


def energy_section(cfg: EmissionsSettings) -> str:
    """The latest codecarbon row per run kind as a table, or why there is none."""
    from digits_cli.emissions_report import latest_per_kind, read_emissions

    absent = f"No emissions recorded (`{cfg.output_file}` is absent or empty)."
    if not cfg.output_file.is_file():
        return absent
    try:
        latest = latest_per_kind(read_emissions(cfg.output_file))
    except DigitsError as exc:  # a broken emissions file must not cost the evaluation
        return f"No emissions shown: {exc}."
    if not latest:
        return absent
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
        markdown_table(
            ["run kind", "timestamp", "duration (s)", "energy (kWh)", "CO2eq (kg)"], rows
        )
        + f"\n\nLatest row per kind in `{cfg.output_file}` "
        f"(codecarbon offline tracker, grid of {cfg.country_iso_code})."
    )


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

    splits = manifest.get("splits", {})
    split_rows = [[name, f"{entry.get('count', 0):,}"] for name, entry in splits.items()]
    training = training_rows(meta)
    summary_rows = [[key, _number(metrics[key], 6)] for key in SUMMARY_KEYS]
    weakest = sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"])[:2]
    return card_template().substitute(
        generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        model_path=cfg.model_path,
        run=f"MLflow run `{run_id}`" if run_id else "no MLflow run",
        experiment=settings.tracking.experiment,
        arch=model.arch,
        parameters=f"{count_parameters(model):,}",
        macs=f"{count_macs(model) / 1e6:.2f}",
        mean=f"{mean:.4f}",
        std=f"{std:.4f}",
        source=manifest.get("source", "unknown"),
        data_digest=data_digest,
        data_match=data_match(meta, data_digest),
        split_table=markdown_table(["split", "digits"], split_rows),
        training_table=(
            markdown_table(["setting", "value"], training) if training else "Not recorded."
        ),
        n_test=f"{metrics['n_test']:,}",
        tta=(
            "with test-time augmentation (mean over 1-pixel shifts)" if cfg.tta else "without TTA"
        ),
        summary_table=markdown_table(["metric", "value"], summary_rows),
        confusion_png=link(plots.confusion_png),
        misclassified_png=link(plots.misclassified_png),
        per_class_table=markdown_table(PER_CLASS_COLUMNS, per_class_rows(metrics, confusion)),
        ece=f"{metrics['ece']:.4f}",
        calibration_bins=cfg.calibration_bins,
        confidence_bias=confidence_bias(metrics),
        calibration_png=link(plots.calibration_png),
        calibration_csv=plots.calibration_csv,
        weakest=", ".join(f"{digit} (F1 {row['f1']:.4f})" for digit, row in weakest),
        energy=energy_section(settings.emissions),
    )
