"""Registering an evaluated model in the MLflow registry and gating the `champion` alias."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digits_cli.config import Settings
from digits_cli.errors import DigitsError
from digits_cli.io import write_json

CANDIDATE = "candidate"
CHAMPION = "champion"


@dataclass(frozen=True)
class Registration:
    """What `digits register` did."""

    name: str
    version: str
    run_id: str
    test_accuracy: float
    promoted: bool
    champion_version: str | None
    reason: str
    champion_file: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _champion_accuracy(client: Any, name: str) -> tuple[str, float | None] | None:
    """The champion's version and test accuracy: its tag, else its run's metric, else None
    (unknown: the gate then never replaces it on accuracy). None when there is no champion."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    tagged = champion.tags.get("test_accuracy")
    if tagged:
        return str(champion.version), float(tagged)
    try:
        logged = client.get_run(champion.run_id).data.metrics.get("test_accuracy")
    except MlflowException:
        logged = None
    return str(champion.version), logged


def _logged_model_uri(client: Any, run: Any) -> str:
    """The URI of the model the run logged (MLflow 3 keeps it as a LoggedModel, not an artifact)."""
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = 'model'",
    )
    if not models:
        raise DigitsError(f"run {run.info.run_id} logged no model named 'model'")
    return f"models:/{models[0].model_id}"


def register_model(settings: Settings, model_path: Path, force: bool = False) -> Registration:
    """Register the run that produced ``model_path`` and alias it `candidate`.

    It also becomes `champion` with test accuracy >= ``registry.min_accuracy`` and not below the
    current champion's.
    Registering the same run again reuses its version. The registration is written to
    ``registry.report`` (atomically).
    """
    import mlflow

    from digits_cli.model import load_checkpoint
    from digits_cli.tracking import checkpoint_run, configure_tracking, git_commit

    _, meta = load_checkpoint(model_path)
    run_id = meta.get("mlflow_run_id")
    if not run_id:
        raise DigitsError(f"{model_path}: no MLflow run recorded; train it with tracking on")
    uri = configure_tracking(settings.tracking)
    run = checkpoint_run(run_id, uri, "register with the tracking.uri it was trained with")
    if run.info.status != "FINISHED" and not force:
        raise DigitsError(
            f"run {run_id} ended {run.info.status} (an interrupted training?): its model is not "
            "registered; train again, or --force"
        )
    client = mlflow.MlflowClient()
    accuracy = run.data.metrics.get("test_accuracy")
    if accuracy is None:
        raise DigitsError(f"run {run_id} has no test_accuracy; run `digits evaluate` first")

    name = settings.registry.model_name
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = str(existing[0].version)
    else:
        version = str(mlflow.register_model(_logged_model_uri(client, run), name).version)
    tags = {
        "test_accuracy": f"{accuracy:.6f}",
        "data_manifest_sha256": str(meta.get("data_manifest_sha256", "")),
        "git_commit": git_commit() or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CANDIDATE, version)

    champion = _champion_accuracy(client, name)
    promoted, reason = _gate(accuracy, settings.registry.min_accuracy, champion, version, force)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    written = write_champion(client, settings)
    registration = Registration(
        name=name,
        version=version,
        run_id=run_id,
        test_accuracy=accuracy,
        promoted=promoted,
        champion_version=version if promoted else (champion[0] if champion else None),
        reason=reason,
        champion_file=written,
    )
    write_json(settings.registry.report, registration.to_dict())
    return registration


def write_champion(client: Any, settings: Settings) -> str | None:
    """Copy the model the `champion` alias points at to ``registry.champion_dir`` (model.onnx and
    its record model.json), where readers find it without the registry; the file written.

    Written on every registration, promoted or not, so the copy follows the alias; with no
    champion a stale copy is removed. The folder itself always exists (a DVC output).
    """
    from mlflow.exceptions import MlflowException

    from digits_cli.export import relabel, write_onnx
    from digits_cli.inference import CHAMPION_FILE, download_onnx
    from digits_cli.runtime import record_path

    name = settings.registry.model_name
    target = settings.registry.champion_dir / CHAMPION_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        for stale in (target, record_path(target)):
            stale.unlink(missing_ok=True)
        return None
    data, metadata = download_onnx(f"models:/{name}/{champion.version}", settings)
    write_onnx(target, relabel(data, metadata), metadata)
    return str(target)


def _gate(
    accuracy: float,
    min_accuracy: float,
    champion: tuple[str, float | None] | None,
    version: str,
    force: bool,
) -> tuple[bool, str]:
    if force:
        return True, "forced with --force"
    if champion is not None and champion[0] == version:
        # The gate decides promotions; it does not demote. Say so when the bar has moved.
        below = accuracy < min_accuracy
        return True, "already champion" + (
            f" (its test accuracy {accuracy:.4f} is below registry.min_accuracy {min_accuracy}; "
            "it stays until a better model is registered)"
            if below
            else ""
        )
    if accuracy < min_accuracy:
        return False, f"test accuracy {accuracy:.4f} is below registry.min_accuracy {min_accuracy}"
    if champion is None:
        return True, "first champion"
    champion_version, champion_accuracy = champion
    if champion_accuracy is None:
        return False, (
            f"champion v{champion_version}'s test accuracy is unknown (no tag, no metric); "
            "--force replaces it"
        )
    if accuracy < champion_accuracy:
        return False, (
            f"test accuracy {accuracy:.4f} is below champion v{champion_version}'s "
            f"{champion_accuracy:.4f}"
        )
    return (
        True,
        f"test accuracy {accuracy:.4f} >= champion v{champion_version}'s {champion_accuracy:.4f}",
    )
