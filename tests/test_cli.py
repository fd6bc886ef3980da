"""The `digits` command line: stubs say so, user errors are one line, `--help` stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digits_cli.cli import app, nothing_left_to_finish

PICTURE = Path(__file__).parent / "data" / "real" / "seed-api-test.png"
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict"], "Missing argument 'images' (see 'digits predict --help')"),
        (["train", "--epochs", "many"], "Invalid value for '--epochs': "),
        (["evaluate", "--no-such-option"], "No such option: --no-such-option"),
        (["no-such-command"], "No such command 'no-such-command' (see 'digits --help')"),
    ],
    ids=["missing-argument", "bad-value", "unknown-option", "unknown-command"],
)
def test_a_usage_mistake_is_one_error_line_with_status_2(
    args: list[str], message: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    result = run_digits(args, tmp_path, clean_env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"digits: error: {message}")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_bare_digits_prints_the_help(tmp_path: Path, clean_env: dict[str, str]) -> None:
    result = run_digits([], tmp_path, clean_env)
    assert result.returncode == 2
    assert "Usage: digits" in result.stdout
    assert result.stderr == ""


def test_output_into_a_pipe_the_reader_closed_ends_without_a_traceback(
    tmp_path: Path, clean_env: dict[str, str], small_onnx: Path
) -> None:
    # Enough JSON lines (~2 KB each) to overflow the pipe's buffer after the reader has gone.
    for i in range(60):
        (tmp_path / f"{i:02}.png").write_bytes(PICTURE.read_bytes())
    command = [sys.executable, "-m", "digits_cli", "predict", str(tmp_path), "--json"]
    command += ["--model", str(small_onnx)]
    with subprocess.Popen(
        command, env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        assert json.loads(reader.stdout.readline())["image"].endswith("00.png")
        reader.stdout.close()  # as `| head -1` does
        stderr = reader.stderr.read()
    assert reader.returncode == 1
    assert stderr == ""


def test_a_reading_into_a_file_is_whole_although_the_process_skips_teardown(
    tmp_path: Path, clean_env: dict[str, str], small_onnx: Path
) -> None:
    for i in range(30):
        (tmp_path / f"{i:02}.png").write_bytes(PICTURE.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    output = tmp_path / "readings.jsonl"
    command = [
        sys.executable,
        "-m",
        "digits_cli",
        "predict",
        str(tmp_path),
        "--json",
        "--jobs",
        "1",
    ]
    with output.open("w") as out:  # a file, not a pipe: block-buffered to the end
        result = subprocess.run(
            [*command, "--model", str(small_onnx)],
            env=clean_env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1  # the broken picture
    assert result.stderr.count("\n") == 1 and "broken.png" in result.stderr
    lines = output.read_text().splitlines()
    assert len(lines) == 30 and all(json.loads(line)["digits"] for line in lines)


# Runs the executable's entry point with an exit handler that says whether it ran.
EXIT_HANDLER_PROBE = """
import atexit, sys
atexit.register(lambda: print("teardown ran"))
from digits_cli.cli import console_main
sys.argv = ["digits", *sys.argv[1:]]
console_main()
"""


@pytest.mark.parametrize(
    ("args", "teardown"),
    [(["predict", str(PICTURE)], False), (["config"], True)],
    ids=["predict", "config"],
)
def test_only_a_reading_skips_teardown(
    args: list[str], teardown: bool, tmp_path: Path, clean_env: dict[str, str], small_onnx: Path
) -> None:
    extra = ["--model", str(small_onnx)] if args[0] == "predict" else []
    result = subprocess.run(
        [sys.executable, "-c", EXIT_HANDLER_PROBE, *args, *extra],
        cwd=tmp_path, env=clean_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ("teardown ran" in result.stdout) is teardown


@pytest.mark.parametrize(
    ("code", "modules", "threads", "quick"),
    [
        (0, {"numpy", "onnxruntime"}, 1, True),
        (None, {"numpy"}, 1, True),
        (2, {"numpy"}, 1, True),
        (0, {"numpy", "mlflow"}, 1, False),  # MLflow ends its runs in an exit handler
        (0, {"numpy", "torch"}, 1, False),
        (0, {"numpy"}, 2, False),  # another thread may still be writing
        ("a message", {"numpy"}, 1, False),  # sys.exit prints it
    ],
)
def test_only_a_process_with_nothing_left_to_finish_skips_teardown(
    code: object, modules: set[str], threads: int, quick: bool
) -> None:
    assert nothing_left_to_finish(code, modules, threads) is quick


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_numpy_starts_no_blas_threads_under_digits(clean_env: dict[str, str]) -> None:
    # OpenBLAS would start a spinning thread per extra core; the reader multiplies no matrices.
    probe = "import digits_cli.cli, numpy; print(open('/proc/self/status').read())"
    clean_env.pop("OPENBLAS_NUM_THREADS", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], env=clean_env, capture_output=True, text=True, timeout=60
    )
    assert "Threads:\t1\n" in result.stdout


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
    # Plain help: Rich's help panels would import its Markdown renderer (and markdown_it),
    # doubling the time of `digits --help`.
    assert "markdown_it" not in modules
    assert "rich.markdown" not in modules
