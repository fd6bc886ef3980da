"""`digits evaluate`: metric functions on hand-made predictions, then the command end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from digits_cli.cli import app
from digits_cli.data import manifest_digest
from digits_cli.evaluation import predict_probabilities, shift_images
from digits_cli.model import Classifier, load_checkpoint, save_checkpoint
from digits_cli.scores import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    per_class_scores,
    worst_errors,
)

SUMMARY = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1", "ece")

# --- Metrics ------------------------------------------------------------------------------------


def test_confusion_matrix_rows_are_actual_and_columns_predicted() -> None:
    confusion = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 2, 1, 2]), n_classes=3)
    np.testing.assert_array_equal(confusion, [[1, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_precision_is_per_predicted_class_and_recall_per_actual_class() -> None:
    # Class 0: 3 actual, found once -> recall 1/3; predicted once, rightly -> precision 1.
    # Class 1: 1 actual, found -> recall 1; predicted 3 times, once rightly -> precision 1/3.
    metrics = classification_metrics(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), n_classes=2)
    assert metrics["per_class"]["0"] == {"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "support": 3}
    assert metrics["per_class"]["1"] == {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1}
    assert metrics["accuracy"] == 0.5
    assert metrics["macro_precision"] == pytest.approx(2 / 3)
    assert metrics["weighted_precision"] == pytest.approx(0.75 * 1 + 0.25 / 3)
    assert metrics["weighted_recall"] == pytest.approx(0.5)


def test_a_class_never_predicted_scores_zero_precision_not_nan() -> None:
    scores = per_class_scores(confusion_matrix(np.array([0, 1]), np.array([0, 0]), n_classes=2))
    assert scores["precision"][1] == 0.0
    assert scores["f1"][1] == 0.0


def test_confusion_matrix_refuses_labels_outside_the_classes_instead_of_dropping_them() -> None:
    # scikit-learn given labels=range(3) would leave the 3 out of the counts silently.
    with pytest.raises(ValueError, match=r"y_pred holds labels outside 0..2"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 3]), n_classes=3)


def test_no_digits_score_zero_rather_than_fail() -> None:
    empty = np.array([], dtype=np.int64)
    np.testing.assert_array_equal(confusion_matrix(empty, empty, n_classes=2), np.zeros((2, 2)))
    metrics = classification_metrics(empty, empty, n_classes=2)
    assert metrics["accuracy"] == 0.0 and metrics["macro_f1"] == 0.0
    assert metrics["per_class"]["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_metrics_agree_with_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 10, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 10, 500))
    metrics = classification_metrics(y_true, y_pred)
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        assert metrics[f"{average}_precision"] == pytest.approx(precision)
        assert metrics[f"{average}_recall"] == pytest.approx(recall)
        assert metrics[f"{average}_f1"] == pytest.approx(f1)


def test_expected_calibration_error_on_a_hand_made_case() -> None:
    # Two-class probabilities; top probabilities 0.95, 0.95, 0.85, 0.65 with ten bins.
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.15, 0.85], [0.35, 0.65]])
    y_true = np.array([0, 1, 1, 0])  # the second is wrong, the last is wrong
    # bin 0.9-1.0: accuracy 1/2 vs 0.95; bin 0.8-0.9: 1 vs 0.85; bin 0.6-0.7: 0 vs 0.65.
    expected = 0.5 * 0.45 + 0.25 * 0.15 + 0.25 * 0.65
    assert expected_calibration_error(probabilities, y_true, n_bins=10) == pytest.approx(expected)


def test_expected_calibration_error_is_zero_when_certain_and_right() -> None:
    probabilities = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probabilities, np.array([0, 1, 2, 1]), n_bins=15) == 0.0


def test_worst_errors_lists_the_most_confident_mistakes_first() -> None:
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    y_true = np.array([0, 0, 0, 1])  # rows 1, 2, 3 are wrong, with confidence 0.7, 0.8, 0.6
    np.testing.assert_array_equal(worst_errors(probabilities, y_true, limit=2), [2, 1])


# --- Prediction ---------------------------------------------------------------------------------


def test_shift_images_moves_pixels_and_fills_with_background() -> None:
    import torch

    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1, 3] = 1.0
    shifted = shift_images(image, dx=1, dy=1)
    assert shifted.shape == image.shape
    assert shifted.sum() == 0  # the pixel left the frame on the right; nothing wrapped around
    assert shift_images(image, dx=-1, dy=1)[0, 0, 2, 2] == 1.0


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_predicted_probabilities_are_distributions(small_checkpoint: Path, tta: bool) -> None:
    model, _ = load_checkpoint(small_checkpoint)
    images = np.zeros((7, 28, 28), dtype=np.uint8)
    probabilities = predict_probabilities(model, images, batch_size=3, tta=tta)
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


# --- The command --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_run(tracking_uri: str) -> str:
    """A finished MLflow run standing for the training run that produced the checkpoint."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("evaluation-tests")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("evaluation-tests")
    )
    run = client.create_run(experiment_id, run_name="train")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


@pytest.fixture(scope="module")
def checkpoint(
    small_checkpoint: Path,
    processed_dir: Path,
    training_run: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The small trained model, recorded as produced by ``training_run`` on ``processed_dir``."""
    model, meta = load_checkpoint(small_checkpoint)
    meta |= {
        "mlflow_run_id": training_run,
        "data_manifest_sha256": manifest_digest(processed_dir),
        "best_val_accuracy": 0.9,
        "epoch": 1,
    }
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, model, meta)
    return path


def run_evaluate(workdir: Path, tracking_uri: str, *args: str, emissions: bool = False) -> Result:
    """Run `digits evaluate` in ``workdir`` (relative outputs land there) against the test store."""
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "DIGITS_EMISSIONS__ENABLED": str(emissions).lower()}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        return CliRunner().invoke(app, ["evaluate", *args], env=env)


@pytest.fixture(scope="module")
def evaluated(
    checkpoint: Path,
    processed_dir: Path,
    tracking_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A folder where `digits evaluate` ran once with the defaults (emissions tracked)."""
    workdir = tmp_path_factory.mktemp("evaluate")
    result = run_evaluate(
        workdir,
        tracking_uri,
        f"--model-path={checkpoint}",
        f"--processed-dir={processed_dir}",
        emissions=True,
    )
    assert result.exit_code == 0, result.stderr
    return workdir


def test_evaluate_writes_the_metrics_report(evaluated: Path) -> None:
    metrics = json.loads((evaluated / "reports/metrics.json").read_text())
    assert set(SUMMARY) | {"n_test", "per_class"} <= set(metrics)
    assert metrics["n_test"] == 1000
    assert metrics["accuracy"] > 0.5
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert sum(row["support"] for row in metrics["per_class"].values()) == 1000


def test_evaluate_writes_plots_dvc_can_render(evaluated: Path) -> None:
    plots = evaluated / "reports/plots"
    for name in ("confusion.png", "misclassified.png", "calibration.png"):
        assert (plots / name).read_bytes().startswith(b"\x89PNG"), name
    confusion = (plots / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted"
    assert len(confusion) == 1 + 1000
    assert (plots / "calibration.csv").read_text().startswith("lower,upper,count,confidence")


def test_evaluate_writes_a_model_card_from_the_measured_figures(evaluated: Path) -> None:
    card = (evaluated / "reports/model_card.md").read_text()
    metrics = json.loads((evaluated / "reports/metrics.json").read_text())
    for section in ("Model", "Data", "Training", "Test metrics", "Per class", "Calibration"):
        assert f"## {section}" in card
    assert "## Limits" in card and "## Energy" in card
    assert f"| accuracy | {metrics['accuracy']:.6g} |" in card
    assert "`lenet`" in card and "the same data the model was trained on" in card
    assert "| best val accuracy | 0.9 |" in card


def test_evaluate_logs_into_the_training_run(
    evaluated: Path, training_run: str, tracking_uri: str
) -> None:
    from mlflow import MlflowClient

    metrics = json.loads((evaluated / "reports/metrics.json").read_text())
    client = MlflowClient(tracking_uri)
    run = client.get_run(training_run)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_ece"] == pytest.approx(metrics["ece"])
    logged = {item.path for item in client.list_artifacts(training_run, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/model_card.md"} <= logged


def test_evaluate_json_prints_the_metrics(
    checkpoint: Path, processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_evaluate(
        tmp_path,
        tracking_uri,
        f"--model-path={checkpoint}",
        f"--processed-dir={processed_dir}",
        "--tta",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((tmp_path / "reports/metrics.json").read_text())


def test_evaluate_without_a_training_run_starts_a_new_run(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    untracked = tmp_path / "untracked.pt"
    save_checkpoint(untracked, Classifier("lenet").eval(), {"mlflow_run_id": None})
    result = run_evaluate(
        tmp_path, tracking_uri, f"--model-path={untracked}", f"--processed-dir={processed_dir}"
    )
    assert result.exit_code == 0, result.stderr
    run_id = re.search(r"MLflow run\s+([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert "test_accuracy" in run.data.metrics
    assert run.info.run_name == "evaluate"


def test_evaluate_refuses_a_missing_checkpoint(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_evaluate(
        tmp_path, tracking_uri, "--model-path=absent.pt", f"--processed-dir={processed_dir}"
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "digits: error: absent.pt: model checkpoint not found; run `digits train` first"
    )
    assert not (tmp_path / "reports").exists()


def test_evaluate_refuses_missing_data(checkpoint: Path, tracking_uri: str, tmp_path: Path) -> None:
    result = run_evaluate(
        tmp_path, tracking_uri, f"--model-path={checkpoint}", "--processed-dir=nowhere"
    )
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("not found; run `digits prepare` first")
    assert not (tmp_path / "reports").exists()


def test_evaluate_refuses_a_run_missing_from_the_store(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    orphan = tmp_path / "orphan.pt"
    save_checkpoint(orphan, Classifier("lenet").eval(), {"mlflow_run_id": "0" * 32})
    result = run_evaluate(
        tmp_path, tracking_uri, f"--model-path={orphan}", f"--processed-dir={processed_dir}"
    )
    assert result.exit_code == 1
    assert f"MLflow run {'0' * 32} is not in" in result.stderr
    assert not (tmp_path / "reports").exists()
