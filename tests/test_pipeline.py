"""The DVC pipeline: stages call the CLI, declare what they read, and run in the right order."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digits_cli.config import Settings

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "validate", "train", "evaluate", "register")
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
DVC = str(Path(sys.executable).with_name("dvc"))


def test_the_pipeline_has_the_five_stages() -> None:
    assert tuple(PIPELINE) == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_runs_the_digits_cli(stage: str) -> None:
    assert PIPELINE[stage]["cmd"] == f"digits {stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_declares_only_real_settings_sections(stage: str) -> None:
    sections = set(Settings.model_fields)
    assert set(PIPELINE[stage]["params"]) <= sections


@pytest.mark.parametrize("stage", STAGES)
def test_every_code_dependency_exists(stage: str) -> None:
    code = [d for d in PIPELINE[stage]["deps"] if str(d).startswith("digits_cli/")]
    assert code, f"{stage} declares none of the code it runs"
    assert all((ROOT / d).is_file() for d in code)


def test_params_yaml_holds_every_declared_section() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    declared = {s for stage in PIPELINE.values() for s in stage["params"]}
    assert declared <= set(params)


@pytest.mark.parametrize("stage", ("train", "evaluate", "register"))
def test_stages_with_mlflow_side_effects_never_come_from_the_run_cache(stage: str) -> None:
    # DVC skips its run cache for a stage with a plain (not metric or plot) output that is
    # persistent or uncached, so the command, and its MLflow logging, really runs.
    outs = [next(iter(o.values())) for o in PIPELINE[stage]["outs"] if isinstance(o, dict)]
    assert any(o.get("cache") is False or o.get("persist") is True for o in outs)


def test_dvc_plans_the_stages_in_pipeline_order(tmp_path: Path) -> None:
    for name in ("dvc.yaml", "params.yaml", "digits_cli"):
        source = ROOT / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, tmp_path / name)
    for command in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    # --force: with no data yet, a plain --dry stops at the first stage whose input is missing.
    result = subprocess.run(
        [DVC, "repro", "--dry", "--force"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    order = [line.split("'")[1] for line in result.stdout.splitlines() if "Running stage" in line]
    assert order == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_depends_on_the_command_line_and_the_settings_it_runs_through(
    stage: str,
) -> None:
    assert {"digits_cli/cli.py", "digits_cli/config.py"} <= set(PIPELINE[stage]["deps"])


@pytest.mark.parametrize("stage", ("train", "evaluate"))
def test_the_stages_reading_splits_depend_on_the_code_that_loads_them(stage: str) -> None:
    assert {"digits_cli/data.py", "digits_cli/io.py"} <= set(PIPELINE[stage]["deps"])


def _project_imports(module: str) -> set[str]:
    """The digits_cli modules one module imports, at its top or inside a function, as paths."""
    import ast

    tree = ast.parse((ROOT / module).read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return {f"{name.replace('.', '/')}.py" for name in names if str(name).startswith("digits_cli.")}


# The modules each stage's step is built from (evaluate: the command's flow and the modules it
# was split into) and any file they read beside code.
STEP_MODULES = {
    "validate": (("validation",), ()),
    "evaluate": (
        ("evaluation", "scores", "plots", "model_card"),
        ("digits_cli/templates/model_card.md",),
    ),
    "register": (("registry",), ()),
}


@pytest.mark.parametrize("stage", STEP_MODULES)
def test_a_stage_depends_on_every_module_its_step_is_built_from(stage: str) -> None:
    parts, files = STEP_MODULES[stage]
    used = set().union(*(_project_imports(f"digits_cli/{part}.py") for part in parts))
    used |= {f"digits_cli/{part}.py" for part in parts} | set(files)
    # errors and reporting change what is printed, never a stage's outputs.
    used -= {"digits_cli/errors.py", "digits_cli/reporting.py"}
    assert used <= set(PIPELINE[stage]["deps"])
