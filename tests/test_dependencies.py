"""Private or undocumented parts of dependencies the code relies on: each is used only within the
version range pyproject.toml declares for it, and what the code uses exists in the installed one.
And the lock files: complete, hash-pinned, inside the declared ranges, and what is installed.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


# --- the lock files (requirements/*.txt, written by requirements/lock.py) --------------------

LOCKS = {"base": (), "registry": ("registry",), "full": ("train", "registry", "dev")}
LOCK_ENTRY = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9.-]*)==(?P<version>\S+)(?P<hashes>(?: --hash=sha256:[0-9a-f]{64})+)"
)


def lock_entries(mode: str) -> dict[str, str]:
    """requirements/MODE.txt as {name: version}, failing on any line that is not a pin with
    hashes (no unpinned, editable, URL or option lines)."""
    text = (ROOT / f"requirements/{mode}.txt").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    entries = " ".join(lines).replace("\\", " ")
    entries = re.sub(r"\s+--hash=", " --hash=", entries)
    found: dict[str, str] = {}
    for entry in re.split(r"\s+(?=[a-z0-9][a-z0-9.-]*==)", entries.strip()):
        match = LOCK_ENTRY.fullmatch(entry.strip())
        assert match, f"requirements/{mode}.txt: not a pin with sha256 hashes: {entry[:120]!r}"
        name = match["name"]
        assert name == canonicalize_name(name), f"{name}: not written as its canonical name"
        assert name not in found, f"requirements/{mode}.txt pins {name} twice"
        found[name] = match["version"]
    return found


def declared_roots(extras: tuple[str, ...]) -> list[Requirement]:
    """What pyproject.toml asks for with these extras, the build backend included."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    lines = list(project["dependencies"]) + list(pyproject["build-system"]["requires"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def installed_closure(roots: list[Requirement]) -> set[str]:
    """Names of every distribution ``roots`` reach through the installed metadata (markers
    evaluated here, extras followed)."""
    seen: set[str] = set()
    pending = [(requirement, "") for requirement in roots]
    followed: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        seen.add(name)
        if key in followed:
            continue
        followed.add(key)
        requires = importlib.metadata.distribution(name).requires or []
        for line in requires:
            for asked in ["", *requirement.extras]:
                pending.append((Requirement(line), asked))
    return seen


@pytest.mark.parametrize("mode", LOCKS)
def test_the_lock_pins_every_declared_dependency_inside_its_range(mode: str) -> None:
    pins = lock_entries(mode)
    for requirement in declared_roots(LOCKS[mode]):
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"requirements/{mode}.txt lacks {requirement}: run requirements/lock.py"
        )
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{mode}.txt pins {name}=={pins[name]}, outside {requirement}"
        )


@pytest.mark.parametrize("mode", LOCKS)
def test_the_lock_holds_exactly_what_its_install_reaches(mode: str) -> None:
    """Nothing missing (pip would refuse an unhashed dependency) and nothing stale."""
    pins = set(lock_entries(mode))
    reached = installed_closure(declared_roots(LOCKS[mode]))
    assert not reached - pins, f"requirements/{mode}.txt lacks {sorted(reached - pins)}"
    assert not pins - reached, f"requirements/{mode}.txt has unneeded {sorted(pins - reached)}"


def test_the_image_locks_take_the_full_locks_versions() -> None:
    """The image runs the versions the tests ran."""
    full = lock_entries("full")
    for mode in ("base", "registry"):
        pins = lock_entries(mode)
        assert {name: full.get(name) for name in pins} == pins, f"{mode}.txt differs from full.txt"


def test_the_installed_versions_are_the_full_locks() -> None:
    """A drift (a hand-installed upgrade, a lock regenerated but not installed) fails here."""
    drifted = {}
    for name, version in lock_entries("full").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed == "missing" or Version(installed) != Version(version):
            drifted[name] = f"{installed}, locked {version}"
    assert not drifted, f"installed versions differ from requirements/full.txt: {drifted}"
