"""`digits register`: versions, the `candidate` alias, the `champion` gate (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REAL_IMAGES, EvaluatedModel, RunCli, write_pipeline_params

PICTURE = REAL_IMAGES / "seed-api-test.png"


@pytest.fixture(scope="session")
def poor_model(evaluated_model: EvaluatedModel) -> Path:
    """Params of a LeNet trained on 100 digits without augmentation: clearly worse."""
    return evaluated_model("poor", max_train_samples=100, augment=False, lr=0.001)


def register(run_cli: RunCli, params: Path, name: str, *extra: str) -> dict:
    result = run_cli(params, "register", "--name", name, "--min-accuracy", "0.5", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def aliases(tracking_uri: str, name: str) -> dict[str, str]:
    import mlflow

    model = mlflow.MlflowClient(tracking_uri=tracking_uri).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_register_sets_candidate_and_first_champion(
    good_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    result = register(run_cli, good_model, "first-champion")
    assert result["promoted"] is True
    assert aliases(tracking_uri, "first-champion") == {
        "candidate": result["version"],
        "champion": result["version"],
    }


def test_register_tags_the_version(good_model: Path, run_cli: RunCli, tracking_uri: str) -> None:
    import mlflow

    result = register(run_cli, good_model, "tagged")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    version = client.get_model_version("tagged", result["version"])
    metrics = json.loads((good_model.parent / "metrics.json").read_text())
    assert float(version.tags["test_accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert len(version.tags["data_manifest_sha256"]) == 64
    assert "git_commit" in version.tags


def test_registering_the_same_run_twice_reuses_its_version(
    good_model: Path, run_cli: RunCli
) -> None:
    first = register(run_cli, good_model, "idempotent")
    second = register(run_cli, good_model, "idempotent")
    assert first["version"] == second["version"]


def test_gate_refuses_a_worse_model(
    good_model: Path, poor_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    champion = register(run_cli, good_model, "gated")
    challenger = register(run_cli, poor_model, "gated")
    assert challenger["test_accuracy"] < champion["test_accuracy"]
    assert challenger["promoted"] is False
    assert aliases(tracking_uri, "gated") == {
        "candidate": challenger["version"],
        "champion": champion["version"],
    }


@pytest.fixture(scope="session")
def twin_model(evaluated_model: EvaluatedModel) -> Path:
    """Params of the good model's recipe and seed trained again: the same weights, another run."""
    return evaluated_model("twin")


def test_a_better_challenger_replaces_the_champion(
    good_model: Path, poor_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    champion = register(run_cli, poor_model, "upgraded", "--force")
    challenger = register(run_cli, good_model, "upgraded")
    assert challenger["test_accuracy"] > champion["test_accuracy"]
    assert challenger["promoted"] is True
    assert aliases(tracking_uri, "upgraded") == {
        "candidate": challenger["version"],
        "champion": challenger["version"],
    }


def test_a_challenger_that_ties_the_champion_replaces_it(
    good_model: Path, twin_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    champion = register(run_cli, good_model, "tied")
    challenger = register(run_cli, twin_model, "tied")
    assert challenger["version"] != champion["version"]
    assert challenger["test_accuracy"] == champion["test_accuracy"]
    assert challenger["promoted"] is True  # the newer of two equal models is served
    assert aliases(tracking_uri, "tied")["champion"] == challenger["version"]


def test_force_overrides_the_gate(
    good_model: Path, poor_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    register(run_cli, good_model, "forced")
    challenger = register(run_cli, poor_model, "forced", "--force")
    assert challenger["promoted"] is True
    assert aliases(tracking_uri, "forced")["champion"] == challenger["version"]


def test_gate_refuses_a_model_under_min_accuracy(
    good_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    result = run_cli(good_model, "register", "--name", "strict", "--min-accuracy", "0.9999")
    assert result.exit_code == 0, result.stderr
    assert "not champion" in result.stdout
    assert "champion" not in aliases(tracking_uri, "strict")


def test_register_without_evaluation_says_what_to_run(
    tmp_path: Path, processed_dir: Path, run_cli: RunCli
) -> None:
    params = write_pipeline_params(tmp_path, processed_dir)
    assert run_cli(params, "train").exit_code == 0
    result = run_cli(params, "register", "--name", "unevaluated")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "digits evaluate" in result.stderr


def test_a_model_whose_run_was_deleted_is_refused_in_one_line(
    evaluated_model: EvaluatedModel, run_cli: RunCli, tracking_uri: str
) -> None:
    import mlflow

    from digits_cli.model import load_checkpoint

    params = evaluated_model("deleted", max_train_samples=100)
    _, meta = load_checkpoint(params.parent / "model.pt")
    mlflow.MlflowClient(tracking_uri=tracking_uri).delete_run(meta["mlflow_run_id"])
    result = run_cli(params, "register", "--name", "deleted-run")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: the checkpoint's MLflow run {meta['mlflow_run_id']} is deleted in "
        f"{tracking_uri}"
    ]


def champion_on_disk(params: Path) -> tuple[Path, dict]:
    """The champion file `digits register` wrote for ``params`` and its record."""
    folder = Path(yaml.safe_load(params.read_text())["registry"]["champion_dir"])
    return folder / "model.onnx", json.loads((folder / "model.json").read_text())


def test_register_writes_the_champion_to_disk_whether_or_not_it_moves(
    good_model: Path, poor_model: Path, run_cli: RunCli
) -> None:
    from digits_cli.runtime import load_onnx_file

    champion = register(run_cli, good_model, "on-disk")
    model_file, record = champion_on_disk(good_model)
    assert champion["champion_file"] == str(model_file)
    assert (record["name"], record["version"]) == ("on-disk", champion["version"])
    assert record["run_id"] == champion["run_id"]
    assert record["test_accuracy"] == pytest.approx(champion["test_accuracy"], abs=1e-6)
    assert load_onnx_file(model_file).metadata["version"] == champion["version"]

    challenger = register(run_cli, poor_model, "on-disk")  # not promoted: poor's folder still
    assert challenger["promoted"] is False  # gets the champion, not the challenger
    _, record = champion_on_disk(poor_model)
    assert (record["version"], record["run_id"]) == (champion["version"], champion["run_id"])

    params = yaml.safe_load(poor_model.read_text())
    params["registry"]["model_name"] = "on-disk"
    (poor_model.parent / "on-disk.yaml").write_text(yaml.safe_dump(params))
    result = run_cli(poor_model.parent / "on-disk.yaml", "predict", str(PICTURE), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["model"] == {
        "name": "on-disk",
        "version": champion["version"],
        "uri": str(model_file.parents[2] / "poor/champion/model.onnx"),
    }


def test_a_run_without_a_champion_leaves_no_champion_file(
    good_model: Path, run_cli: RunCli
) -> None:
    params = yaml.safe_load(good_model.read_text())
    params["registry"]["champion_dir"] = str(good_model.parent / "never-champion")
    path = good_model.parent / "never.yaml"
    path.write_text(yaml.safe_dump(params))
    stale = good_model.parent / "never-champion/model.onnx"
    stale.parent.mkdir()
    stale.write_bytes(b"an older champion")
    result = run_cli(path, "register", "--name", "never", "--min-accuracy", "0.9999")
    assert result.exit_code == 0, result.stderr
    assert list(stale.parent.iterdir()) == []


def test_a_champion_whose_accuracy_tag_is_gone_is_judged_by_its_run_not_replaced_as_nan(
    good_model: Path, poor_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    import mlflow

    champion = register(run_cli, good_model, "untagged")
    mlflow.MlflowClient(tracking_uri=tracking_uri).delete_model_version_tag(
        "untagged", champion["version"], "test_accuracy"
    )
    result = run_cli(poor_model, "register", "--name", "untagged", "--min-accuracy", "0", "--json")
    assert result.exit_code == 0, result.stderr
    challenger = json.loads(result.stdout)  # clears the bar, not the champion's accuracy
    assert challenger["promoted"] is False
    assert f"below champion v{champion['version']}'s" in challenger["reason"]
    assert aliases(tracking_uri, "untagged")["champion"] == champion["version"]


def test_a_champion_under_a_raised_bar_is_reported_as_the_champion_it_still_is(
    good_model: Path, run_cli: RunCli, tracking_uri: str
) -> None:
    first = register(run_cli, good_model, "raised-bar")
    again = run_cli(good_model, "register", "--name", "raised-bar", "--min-accuracy", "0.9999")
    assert again.exit_code == 0, again.stderr
    assert aliases(tracking_uri, "raised-bar")["champion"] == first["version"]
    assert "now champion: already champion (its test accuracy" in again.stdout
    assert "not champion" not in again.stdout


def test_an_interrupted_training_stays_killed_through_evaluate_and_is_not_registered(
    evaluated_model: EvaluatedModel, run_cli: RunCli, tracking_uri: str
) -> None:
    import mlflow

    from digits_cli.model import load_checkpoint

    params = evaluated_model("interrupted", max_train_samples=200)
    _, meta = load_checkpoint(params.parent / "model.pt")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.set_terminated(meta["mlflow_run_id"], status="KILLED")  # as Ctrl-C in train leaves it
    assert run_cli(params, "evaluate").exit_code == 0
    assert client.get_run(meta["mlflow_run_id"]).info.status == "KILLED"
    result = run_cli(params, "register", "--name", "interrupted")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: run {meta['mlflow_run_id']} ended KILLED (an interrupted training?): "
        "its model is not registered; train again, or --force"
    ]


def test_register_model_writes_its_own_report(good_model: Path, tracking_uri: str) -> None:
    from digits_cli.config import load_settings
    from digits_cli.registry import register_model

    settings = load_settings(
        good_model,
        {"tracking": {"uri": tracking_uri}, "registry": {"model_name": "reported"}},
    )
    settings.registry.report.unlink(missing_ok=True)
    registration = register_model(settings, settings.evaluate.model_path)
    assert json.loads(settings.registry.report.read_text()) == registration.to_dict()
    assert registration.name == "reported"


def test_the_cli_prints_the_report_it_wrote(good_model: Path, run_cli: RunCli) -> None:
    printed = register(run_cli, good_model, "printed")
    report = Path(yaml.safe_load(good_model.read_text())["registry"]["report"])
    assert json.loads(report.read_text()) == printed
