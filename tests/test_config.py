"""Settings: CLI > DIGITS_<SECTION>__<KEY> environment > params.yaml > defaults, strict keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from digits_cli.cli import app
from digits_cli.config import Settings, TrainSettings, load_settings
from digits_cli.errors import DigitsError

DEFAULT_EPOCHS = TrainSettings().epochs
DEFAULT_BATCH_SIZE = TrainSettings().batch_size


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (no ./params.yaml) and no DIGITS_* variables from the caller."""
    for name in list(os.environ):
        if name.startswith("DIGITS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_apply_without_a_params_file() -> None:
    assert load_settings().train.epochs == DEFAULT_EPOCHS


def test_params_yaml_in_working_folder_overrides_defaults(isolated: Path) -> None:
    write_params(isolated / "params.yaml", "train:\n  epochs: 5\n")
    settings = load_settings()
    assert settings.train.epochs == 5
    assert settings.train.batch_size == DEFAULT_BATCH_SIZE


def test_environment_overrides_params_yaml_key_by_key(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(isolated / "params.yaml", "train:\n  epochs: 5\n  batch_size: 64\n")
    monkeypatch.setenv("DIGITS_TRAIN__EPOCHS", "7")
    settings = load_settings()
    assert settings.train.epochs == 7
    assert settings.train.batch_size == 64  # the rest of the YAML section still applies


def test_cli_overrides_environment(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_params(isolated / "params.yaml", "train:\n  epochs: 5\n  batch_size: 64\n")
    monkeypatch.setenv("DIGITS_TRAIN__EPOCHS", "7")
    settings = load_settings(overrides={"train": {"epochs": 9}})
    assert settings.train.epochs == 9
    assert settings.train.batch_size == 64


def test_cli_options_left_unset_do_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_TRAIN__EPOCHS", "7")
    assert load_settings(overrides={"train": {"epochs": None}}).train.epochs == 7


def test_digits_params_variable_picks_the_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(isolated / "params.yaml", "train:\n  epochs: 5\n")
    other = write_params(isolated / "other.yaml", "train:\n  epochs: 3\n")
    monkeypatch.setenv("DIGITS_PARAMS", str(other))
    assert load_settings().train.epochs == 3


def test_params_argument_beats_digits_params_variable(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "DIGITS_PARAMS", str(write_params(isolated / "env.yaml", "train:\n  epochs: 3\n"))
    )
    chosen = write_params(isolated / "chosen.yaml", "train:\n  epochs: 4\n")
    assert load_settings(chosen).train.epochs == 4


def test_params_option_of_the_cli_picks_the_file(isolated: Path) -> None:
    chosen = write_params(isolated / "chosen.yaml", "train:\n  epochs: 4\n")
    result = CliRunner().invoke(app, ["--params", str(chosen), "config"])
    assert result.exit_code == 0, result.stderr
    assert "epochs: 4\n" in result.stdout


def test_explicitly_named_missing_params_file_is_an_error(isolated: Path) -> None:
    with pytest.raises(DigitsError, match=r"missing\.yaml: params file not found"):
        load_settings(isolated / "missing.yaml")


def test_missing_file_named_by_digits_params_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_PARAMS", "missing.yaml")
    with pytest.raises(DigitsError, match=r"missing\.yaml: params file not found"):
        load_settings()


def test_unknown_key_in_yaml_is_named(isolated: Path) -> None:
    params = write_params(isolated / "params.yaml", "train:\n  epoch: 5\n")
    with pytest.raises(DigitsError, match=r"train\.epoch: unknown key"):
        load_settings(params)


def test_unknown_section_in_yaml_is_named(isolated: Path) -> None:
    params = write_params(isolated / "params.yaml", "trian:\n  epochs: 5\n")
    with pytest.raises(DigitsError, match="trian: unknown key"):
        load_settings(params)


def test_invalid_value_in_yaml_names_the_key(isolated: Path) -> None:
    params = write_params(isolated / "params.yaml", "data:\n  val_ratio: 1.5\n")
    with pytest.raises(DigitsError, match=r"data\.val_ratio: Input should be less than 1"):
        load_settings(params)


def test_invalid_value_in_environment_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_TRAIN__EPOCHS", "many")
    with pytest.raises(DigitsError, match=r"train\.epochs: Input should be a valid integer"):
        load_settings()


def test_unparsable_environment_list_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_SERVE__CORS_ORIGINS", "not json")
    with pytest.raises(DigitsError, match='field "serve"'):
        load_settings()


def test_params_file_that_is_not_yaml_is_refused(isolated: Path) -> None:
    params = write_params(isolated / "params.yaml", "train: [unclosed\n")
    with pytest.raises(DigitsError, match="not valid YAML"):
        load_settings(params)


def test_params_file_that_is_not_utf8_text_is_refused(isolated: Path) -> None:
    params = isolated / "params.yaml"
    params.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    with pytest.raises(DigitsError, match="not UTF-8 text"):
        load_settings(params)


def test_params_file_that_is_not_a_mapping_is_refused(isolated: Path) -> None:
    params = write_params(isolated / "params.yaml", "- train\n- data\n")
    with pytest.raises(DigitsError, match="expected a mapping of sections"):
        load_settings(params)


def test_digits_config_prints_yaml_that_round_trips(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = write_params(
        isolated / "params.yaml",
        "data:\n  source_dir: mnist\n  val_ratio: 0.2\nserve:\n  cors_origins: [http://a.test]\n",
    )
    monkeypatch.setenv("DIGITS_TRAIN__LR", "0.003")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.stderr
    printed = write_params(isolated / "printed.yaml", result.stdout)
    monkeypatch.delenv("DIGITS_TRAIN__LR")
    assert load_settings(printed) == load_settings(params, {"train": {"lr": 0.003}})


def test_the_code_defaults_are_the_params_file_so_a_deleted_key_changes_nothing() -> None:
    """params.yaml spells out every default: a key removed from it (or the file itself) leaves
    the model that `make run` trains, and the README's figures, unchanged."""
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert Settings().model_dump(mode="json") == params
