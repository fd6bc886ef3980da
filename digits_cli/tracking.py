"""MLflow set-up shared by every command that records into a run (train, evaluate, register).

The store is a local SQLite file by default (no server, no credentials); ``MLFLOW_TRACKING_URI``
in the environment wins over ``tracking.uri`` so CI or a user can point elsewhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from digits_cli.config import TrackingSettings
from digits_cli.errors import DigitsError

# An empty tracking.uri means the default store, spelled once, in config.TrackingSettings.
DEFAULT_URI: str = TrackingSettings.model_fields["uri"].default
CHECKPOINT_ARTIFACT = "checkpoint"  # the run's folder holding the torch checkpoint file
ONNX_ARTIFACT = "onnx"  # the run's folder holding model.onnx, what readers load


def tracking_uri(cfg: TrackingSettings) -> str:
    """The tracking URI in force: ``$MLFLOW_TRACKING_URI``, else ``tracking.uri``, else SQLite."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri or DEFAULT_URI


def configure_tracking(cfg: TrackingSettings) -> str:
    """Point MLflow at the store and select (creating if needed) the experiment; return the URI.

    A new experiment keeps its artifacts under ``tracking.artifact_location`` as an absolute
    ``file://`` URI, so runs stay readable whatever the working directory of later commands.
    A deleted experiment of that name is a DigitsError saying how to restore it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    # Progress bars for artifact downloads would be noise on a command's stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        try:
            client.create_experiment(
                cfg.experiment, artifact_location=Path(cfg.artifact_location).resolve().as_uri()
            )
        except MlflowException as exc:
            # Another first run created it since the lookup (two trainings started at once).
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        experiment = client.get_experiment_by_name(cfg.experiment)
        if experiment is None:  # created, then deleted for good by someone else meanwhile
            raise DigitsError(f"the MLflow experiment {cfg.experiment!r} vanished from {uri}")
    if experiment.lifecycle_stage == "deleted":
        raise DigitsError(
            f"the MLflow experiment {cfg.experiment!r} is deleted in {uri}: restore it "
            f"(MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}) or set tracking.experiment to another name"
        )
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return uri


def git_commit() -> str | None:
    """The commit checked out in the current directory, or None outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def checkpoint_run(run_id: str, uri: str, hint: str) -> Any:
    """The MLflow run a checkpoint was trained in, from the store at ``uri`` (configured).

    A run missing from that store, or deleted there, is a DigitsError; ``hint`` says what to do.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise DigitsError(f"the checkpoint's MLflow run {run_id} is not in {uri}; {hint}") from exc
    if run.info.lifecycle_stage == "deleted":
        raise DigitsError(f"the checkpoint's MLflow run {run_id} is deleted in {uri}")
    return run
