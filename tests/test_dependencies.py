"""Private or undocumented parts of dependencies the code relies on: each is used only within the
version range pyproject.toml declares for it, and what the code uses exists in the installed one.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def declared(name: str) -> Requirement:
    """The base dependency ``name`` as pyproject.toml declares it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(line) for line in project["dependencies"]]
    matching = [requirement for requirement in found if requirement.name == name]
    assert len(matching) == 1, f"pyproject.toml declares {name} {len(matching)} times"
    return matching[0]


@pytest.mark.parametrize("name", ["typer", "uvicorn"])
def test_the_installed_version_is_inside_the_declared_range(name: str) -> None:
    requirement = declared(name)
    assert any(spec.operator == "<" for spec in requirement.specifier), (
        f"{name} is used through private parts: its range needs an upper bound"
    )
    installed = importlib.metadata.version(name)
    assert requirement.specifier.contains(installed), f"{name} {installed} not in {requirement}"


def test_the_cli_catches_the_usage_errors_typer_raises() -> None:
    from typer._click import exceptions
    from typer.core import TyperGroup

    from digits_cli import cli

    # Commands.main's except clauses, most specific first, catch these very classes.
    assert cli.NoArgsIsHelpError is exceptions.NoArgsIsHelpError
    assert cli.UsageError is exceptions.UsageError
    assert cli.ClickException is exceptions.ClickException
    assert issubclass(exceptions.NoArgsIsHelpError, exceptions.UsageError)
    assert issubclass(exceptions.UsageError, exceptions.ClickException)
    assert issubclass(cli.Commands, TyperGroup)
    error = exceptions.UsageError("Missing argument 'images'")
    assert (error.exit_code, error.format_message(), error.ctx) == (
        2,
        "Missing argument 'images'",
        None,
    )


def test_uvicorns_supervisor_has_what_worker_sockets_relies_on() -> None:
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import Process

    from digits_cli.serving import WorkerSockets

    assert issubclass(WorkerSockets, Multiprocess)
    assert list(inspect.signature(Multiprocess.__init__).parameters) == [
        "self",
        "config",
        "sockets",
    ]
    source = inspect.getsource(Multiprocess)
    # __init__ stores the shared sockets (the setter drops them); every worker started reads
    # self.sockets again (the property opens a socket for each); a worker ending with
    # STARTUP_FAILURE stops the supervisor instead of being replaced.
    assert "self.sockets = sockets" in source
    assert "Process(self.config, self.sockets)" in source
    assert "self.processes: list[Process] = []" in source
    assert "exitcode == STARTUP_FAILURE" in inspect.getsource(Multiprocess.keep_subprocess_alive)
    assert callable(Multiprocess.run)
    assert isinstance(Process.pid, property)
    assert STARTUP_FAILURE == 3
