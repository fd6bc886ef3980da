"""The `digits` command line: stubs say so, user errors are one line, `--help` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digits_cli.cli import app

HEAVY_MODULES = ("torch", "torchvision", "mlflow", "cv2", "dvc")
COMMANDS = sorted(command.name for command in app.registered_commands if command.name)


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The caller's environment without DIGITS_* variables, for a subprocess."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}


def run_digits(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m digits_cli ARGS` in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "digits_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_dash_m_digits_cli_help_lists_every_command(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = run_digits(["--help"], tmp_path, clean_env)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in COMMANDS)


def test_missing_processed_data_is_one_line_without_traceback(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = run_digits(["validate", "--processed-dir", "/nonexistent"], tmp_path, clean_env)
    assert result.returncode == 1
    assert result.stderr == (
        "digits: error: /nonexistent/train.npz: not found; run `digits prepare` first\n"
    )


def test_invalid_environment_value_is_one_line_naming_the_key(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = run_digits(["config"], tmp_path, {**clean_env, "DIGITS_TRAIN__EPOCHS": "0"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("digits: error: invalid settings: train.epochs: ")


def test_missing_params_file_is_one_line(tmp_path: Path, clean_env: dict[str, str]) -> None:
    result = run_digits(["--params", "nowhere.yaml", "config"], tmp_path, clean_env)
    assert result.returncode == 1
    assert result.stderr == "digits: error: nowhere.yaml: params file not found\n"


def test_unknown_key_in_params_file_is_one_line(tmp_path: Path, clean_env: dict[str, str]) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epoch: 3\n")
    result = run_digits(["config"], tmp_path, clean_env)
    assert result.returncode == 1
    assert result.stderr == "digits: error: invalid settings: train.epoch: unknown key\n"


# Runs --help in a fresh interpreter and prints the modules it imported.
IMPORTS_AFTER_HELP = """
import json, sys
from digits_cli.cli import app
app(sys.argv[1:], prog_name="digits", standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("args", [[], *([name] for name in COMMANDS)], ids=["digits", *COMMANDS])
def test_help_imports_no_heavy_library(
    args: list[str], tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER_HELP, *args, "--help"],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "typer" in modules  # the probe did run the app
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY_MODULES))
    assert heavy == []
