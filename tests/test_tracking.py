"""MLflow set-up and emissions measurement shared by train and evaluate."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import mlflow
import pytest

from digits_cli.config import EmissionsSettings, TrackingSettings
from digits_cli.emissions import EmissionsResult, track_emissions
from digits_cli.errors import DigitsError
from digits_cli.tracking import configure_tracking, git_commit

REPO = Path(__file__).resolve().parents[1]


def test_the_environment_uri_wins_over_the_settings(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cfg = TrackingSettings(
        uri=f"sqlite:///{tmp_path / 'other.db'}",
        experiment="tracking-env",
        artifact_location=tmp_path / "mlruns",
    )
    assert configure_tracking(cfg) == tracking_uri
    assert mlflow.get_tracking_uri() == tracking_uri
    assert not (tmp_path / "other.db").exists()


def test_a_new_experiment_keeps_artifacts_at_an_absolute_file_uri(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = TrackingSettings(
        uri=tracking_uri, experiment="tracking-artifacts", artifact_location=Path("runs")
    )
    configure_tracking(cfg)
    experiment = mlflow.get_experiment_by_name("tracking-artifacts")
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "runs").as_uri()
    assert configure_tracking(cfg) == tracking_uri  # a second call reuses the experiment


def test_git_commit_names_the_checked_out_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    commit = git_commit()
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit)


def test_git_commit_is_none_outside_a_work_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit() is None


def test_emissions_metrics_hold_only_known_values() -> None:
    result = EmissionsResult(kind="train", duration_s=2.0, energy_kwh=0.5, emissions_kg=None)
    assert result.as_metrics() == {"train_energy_kwh": 0.5}


def test_disabled_emissions_only_time_the_block(tmp_path: Path) -> None:
    cfg = EmissionsSettings(enabled=False, output_file=tmp_path / "emissions.csv")
    with track_emissions(cfg, "evaluate") as result:
        time.sleep(0.02)
    assert result.as_metrics() == {}
    assert result.duration_s >= 0.02
    assert not cfg.output_file.exists()


def test_tracked_emissions_append_a_row_named_for_the_kind(tmp_path: Path) -> None:
    cfg = EmissionsSettings(output_file=tmp_path / "out" / "emissions.csv")
    results = []
    for kind in ("train", "evaluate"):
        with track_emissions(cfg, kind) as result:
            sum(range(100_000))
        results.append(result)
    with open(cfg.output_file) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["project_name"] for row in rows] == ["train", "evaluate"]
    for row, result in zip(rows, results, strict=True):
        # Without readable power counters codecarbon estimates: energy is still spent, and the
        # row holds this block's own figures.
        assert result.energy_kwh is not None and result.energy_kwh > 0
        assert result.emissions_kg is not None and result.emissions_kg > 0
        assert float(row["energy_consumed"]) == pytest.approx(result.energy_kwh)
        assert float(row["emissions"]) == pytest.approx(result.emissions_kg)


def test_two_first_runs_configuring_at_once_both_use_the_one_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both look the experiment up before either creates it: one creation fails as existing."""
    import threading

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # the store's tables, made once
    cfg = TrackingSettings(uri=uri, experiment="first-runs", artifact_location=tmp_path / "runs")
    both_looked = threading.Barrier(2, timeout=30)
    looked = threading.local()
    real_lookup = mlflow.MlflowClient.get_experiment_by_name

    def lookup_then_wait(client: mlflow.MlflowClient, name: str) -> object:
        found = real_lookup(client, name)
        if not getattr(looked, "once", False):  # only each run's first look is held back
            looked.once = True
            both_looked.wait()
        return found

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", lookup_then_wait)
    outcomes: list[object] = []

    def configure() -> None:
        try:
            outcomes.append(configure_tracking(cfg))
        except Exception as exc:
            outcomes.append(exc)

    runs = [threading.Thread(target=configure) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert outcomes == [uri, uri]
    experiments = mlflow.MlflowClient(tracking_uri=uri).search_experiments(
        filter_string="name = 'first-runs'"
    )
    assert len(experiments) == 1


def test_a_deleted_experiment_is_one_error_saying_how_to_restore_it_or_pick_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingSettings(uri=uri, experiment="binned", artifact_location=tmp_path / "runs")
    configure_tracking(cfg)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("binned")
    assert experiment is not None
    client.delete_experiment(experiment.experiment_id)
    with pytest.raises(DigitsError) as raised:
        configure_tracking(cfg)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the MLflow experiment 'binned' is deleted in {uri}")
    assert f"mlflow experiments restore --experiment-id {experiment.experiment_id}" in message
    assert "tracking.experiment" in message
