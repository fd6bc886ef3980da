"""The `digits` command line: thin commands that build settings and call the module owning the work.

Heavy libraries (torch, mlflow, cv2, dvc) are imported inside command bodies so `--help` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

# pydantic looks for plugins through every installed distribution's entry points the first time
# a model is built: 60-70 ms of every command in a full install, for plugins the settings never
# use. Set the variable (to "" for all plugins) to choose otherwise.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
# numpy's OpenBLAS starts a thread per core when imported, and they spin waiting for work: 0.1 s
# of CPU in every process, taken from the other readers on the cores. Nothing here multiplies
# matrices large enough to use them (torch brings its own MKL and threads). Set it to choose.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # Typer's Click
from typer.core import TyperGroup

from digits_cli.errors import DigitsError, missing_extra

if TYPE_CHECKING:
    from digits_cli.config import Settings


class Commands(TyperGroup):
    """The `digits` commands; a usage mistake (unknown option or command, missing argument, bad
    value) is one line on stderr and exit status 2, like every other error, not a boxed panel."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run_typer() -> Any:
            # Not standalone: Typer hands back the exceptions it would print as panels.
            return super(Commands, self).main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run_typer()
        try:
            code = run_typer()
        except NoArgsIsHelpError as exc:  # bare `digits`: the help, on stdout, and status 2
            typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except UsageError as exc:
            message = exc.format_message().rstrip(".")
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            sys.exit(error_line(message + hint, exc.exit_code))
        except ClickException as exc:
            sys.exit(error_line(exc.format_message(), exc.exit_code))
        except typer.Abort:
            sys.exit(error_line("aborted"))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="digits",
    help="Handwritten-digit recognition: prepare MNIST, train, evaluate, register, read digits.",
    cls=Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich's help panels import Rich's Markdown, traceback and pretty-printing
    # modules, which made `digits --help` take 0.4 s instead of 0.2 s.
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="An ONNX file, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID or a .pt "
        "checkpoint (default: the champion, from registry.champion_dir or the registry).",
        show_default=False,
    ),
]


def error_line(message: str, code: int = 1) -> int:
    """Print one error line on stderr; the exit status to end with."""
    typer.echo(f"digits: error: {message}", err=True)
    return code


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line on stderr and return the exit to raise from a command."""
    return typer.Exit(error_line(message, code))


def command(name: str | None = None, needs: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose user mistakes (DigitsError) end in one stderr line, no traceback.

    ``needs`` names the extra the command needs (pyproject.toml), for the error when it is not
    installed; without it, the extra of whichever module was missing.
    """

    def register(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except DigitsError as exc:
                raise fail(str(exc)) from None
            except ModuleNotFoundError as exc:  # an extra this command needs is not installed
                error = missing_extra(exc, needs)
                if not isinstance(error, DigitsError):
                    raise
                raise fail(str(error)) from None
            except KeyboardInterrupt:
                raise fail("interrupted", 130) from None

        app.command(name, **kwargs)(run)
        return func

    return register


@app.callback()
def main(
    ctx: typer.Context,
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="Settings file (default: $DIGITS_PARAMS or ./params.yaml).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Handwritten-digit recognition from data to serving."""
    ctx.obj = params


def settings(ctx: typer.Context, **sections: dict[str, Any]) -> Settings:
    """The one settings object for a command; ``sections`` hold its CLI options (None: unset)."""
    # Imported here: pydantic-settings and yaml are most of `digits --help`'s startup time.
    from digits_cli.config import load_settings

    return load_settings(ctx.obj, sections)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data))


@command("config")
def config_command(ctx: typer.Context) -> None:
    """Print the resolved settings as YAML."""
    typer.echo(settings(ctx).to_yaml(), nl=False)


# Libraries that finish their work in exit handlers or at teardown (MLflow's runs and logging
# queue, codecarbon's tracker, torch's and DVC's workers): a process that loaded one exits normally.
NEEDS_TEARDOWN = ("torch", "mlflow", "codecarbon", "dvc", "matplotlib")
# Set by the commands that only read pictures (predict, annotate): see end_without_teardown.
_reading_only = False


def end_without_teardown() -> None:
    """Let this process end with os._exit once its output is flushed (see console_main): for a
    command whose only outputs are stdout, stderr and files written atomically and closed."""
    global _reading_only
    _reading_only = True


def console_main() -> None:
    """The `digits` executable: the app, then, for a reading, an exit without Python's teardown.

    Tearing down the ~1,000 modules a reading imports took 0.11-0.15 s, a sixth of a cold
    `digits predict`; see :func:`nothing_left_to_finish`.
    """
    try:
        app(prog_name="digits")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if _reading_only and nothing_left_to_finish(code, sys.modules, threading.active_count()):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # e.g. a closed pipe: the usual exit reports it
            sys.exit(code)  # type: ignore[arg-type]
        os._exit(int(code or 0))  # type: ignore[call-overload]
    sys.exit(code)  # type: ignore[arg-type]


def nothing_left_to_finish(code: object, modules: Collection[str], threads: int) -> bool:
    """Whether a reading that ends with ``code`` may skip Python's teardown (os._exit).

    True for an integer status, one thread and none of the libraries that finish work at exit
    (``NEEDS_TEARDOWN``; a model from the registry brings MLflow): a reading's outputs are
    written atomically and closed by then.
    """
    return (
        (code is None or isinstance(code, int))
        and threads == 1
        and not any(name in modules for name in NEEDS_TEARDOWN)
    )


# The commands register themselves on `app` as their modules are imported, in the order of
# `digits --help`: the lifecycle's, then the reading path's.
from digits_cli import cli_lifecycle, cli_reading  # noqa: E402, F401
