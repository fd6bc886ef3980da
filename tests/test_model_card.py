"""The model card: its template renders every section, what the model was trained on, the energy."""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from codecarbon.output_methods.emissions_data import EmissionsData

from digits_cli.config import EmissionsSettings, EvaluateSettings, Settings
from digits_cli.model import Classifier
from digits_cli.model_card import TEMPLATE, energy_section, model_card
from digits_cli.plots import PlotFiles
from digits_cli.scores import confusion_matrix, evaluation_metrics

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "Model",
    "Intended use",
    "Data",
    "Training",
    "Test metrics (200 test digits, without TTA)",
    "Per class",
    "Calibration",
    "Limits",
    "Energy",
]
DIGEST = "a" * 64
SPLITS = {"train": {"count": 3000}, "test": {"count": 200}}


@pytest.fixture
def scored() -> tuple[dict[str, Any], np.ndarray]:
    """Metrics and confusion of 200 made-up predictions, right about 80% of the time."""
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 200)
    logits = rng.normal(size=(200, 10))
    logits[np.arange(200), y_true] += np.where(rng.random(200) < 0.8, 6.0, 0.0)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = evaluation_metrics(probabilities, y_true, n_bins=10)
    return metrics, confusion_matrix(y_true, probabilities.argmax(axis=1))


def render(tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray], meta: dict[str, Any]) -> str:
    metrics, confusion = scored
    settings = Settings(
        evaluate=EvaluateSettings(
            model_card=tmp_path / "reports/model_card.md", plots_dir=tmp_path / "reports/plots"
        ),
        emissions=EmissionsSettings(output_file=tmp_path / "emissions.csv"),
    )
    return model_card(
        model=Classifier("lenet"),
        meta=meta,
        manifest={"source": "made-up", "splits": SPLITS},
        data_digest=DIGEST,
        metrics=metrics,
        confusion=confusion,
        settings=settings,
        plots=PlotFiles.under(settings.evaluate.plots_dir),
        run_id="f" * 32,
    )


def test_the_template_renders_every_section_in_order_from_the_figures(
    tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray]
) -> None:
    card = render(tmp_path, scored, {"data_manifest_sha256": DIGEST, "train": {"epochs": 3}})
    metrics, _ = scored
    assert card.startswith("# Model card: digits classifier\n\n")
    assert re.findall(r"^## (.+)$", card, flags=re.MULTILINE) == SECTIONS
    assert f"MLflow run `{'f' * 32}`" in card
    assert "`lenet` convolutional network" in card
    assert "the same data the model was trained on" in card
    assert "| train | 3,000 |\n| test | 200 |" in card
    assert "| `epochs` | `3` |" in card
    assert f"| accuracy | {metrics['accuracy']:.6g} |" in card
    assert f"| n_errors | {metrics['n_errors']} |" in card
    row = metrics["per_class"]["3"]
    assert f"| 3 | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} |" in card
    assert f"Expected calibration error {metrics['ece']:.4f} over 15 equal-width bins" in card
    assert "![confusion](plots/confusion.png)" in card
    assert "![reliability](plots/calibration.png)" in card
    weakest = min(metrics["per_class"].items(), key=lambda item: item[1]["f1"])
    assert f"Weakest classes on the test split: {weakest[0]} (F1 " in card
    assert card.endswith("is absent or empty).\n")


def test_the_card_names_other_training_data(
    tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray]
) -> None:
    card = render(tmp_path, scored, {"data_manifest_sha256": "b" * 64})
    assert f"**not the data the model was trained on** (`{'b' * 64}`)" in card
    assert "## Training\n\nNot recorded.\n" in card


def test_a_refit_says_it_trained_on_train_and_val_and_claims_no_val_accuracy(
    tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray]
) -> None:
    meta = {"trained_on": "train+val", "best_val_accuracy": None, "epoch": 12}
    card = render(tmp_path, scored, meta)
    assert "| trained on | train + val (refit: no validation held out) |" in card
    assert "| kept epoch | 12 |" in card
    assert "best val accuracy" not in card


def test_a_model_that_held_val_out_says_so_with_its_val_accuracy(
    tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray]
) -> None:
    card = render(tmp_path, scored, {"trained_on": "train", "best_val_accuracy": 0.97, "epoch": 4})
    assert "| trained on | train (val held out to choose the kept epoch) |" in card
    assert "| best val accuracy | 0.97 |" in card


def test_an_older_checkpoint_that_does_not_say_gets_no_trained_on_row(
    tmp_path: Path, scored: tuple[dict[str, Any], np.ndarray]
) -> None:
    assert "trained on |" not in render(tmp_path, scored, {"best_val_accuracy": 0.9})


def test_the_template_ships_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["digits_cli"]
    assert any(fnmatch.fnmatch("/".join(TEMPLATE), pattern) for pattern in patterns)
    assert (ROOT / "digits_cli" / Path(*TEMPLATE)).is_file()


# --- Energy ---------------------------------------------------------------------------------------


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    header = [field.name for field in dataclasses.fields(EmissionsData)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_energy_table_shows_the_latest_row_of_each_kind(tmp_path: Path) -> None:
    def row(kind: str, stamp: str, seconds: str, kwh: str) -> dict[str, str]:
        return {
            "project_name": kind,
            "timestamp": stamp,
            "duration": seconds,
            "energy_consumed": kwh,
            "emissions": "",
        }

    path = write_rows(
        tmp_path / "emissions.csv",
        [
            row("train", "2026-01-01T10:00:00", "900", "0.007"),
            row("evaluate", "2026-01-01T10:20:00", "6.5", "0.00005"),
            row("train", "2026-01-02T09:00:00", "300", "0.002"),
        ],
    )
    section = energy_section(EmissionsSettings(output_file=path, country_iso_code="FRA"))
    lines = section.splitlines()
    assert lines[:4] == [
        "| run kind | timestamp | duration (s) | energy (kWh) | CO2eq (kg) |",
        "|---|---|---|---|---|",
        "| evaluate | 2026-01-01T10:20:00 | 6.5 | 5e-05 | n/a |",
        "| train | 2026-01-02T09:00:00 | 300 | 0.002 | n/a |",
    ]
    assert lines[-1] == (
        f"Latest row per kind in `{path}` (codecarbon offline tracker, grid of FRA)."
    )


def test_an_unreadable_emissions_file_is_named_not_hidden(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "emissions.csv", [{"project_name": "train", "duration": "soon"}])
    section = energy_section(EmissionsSettings(output_file=path))
    assert section == f"No emissions shown: {path}:2: duration is not a number ('soon')."
