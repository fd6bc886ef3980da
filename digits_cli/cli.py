"""The `digits` command line: thin commands that build settings and call the module owning the work.

Heavy libraries (torch, mlflow, cv2, dvc) are imported inside command bodies so `--help` is instant.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from digits_cli.config import Settings, load_settings
from digits_cli.errors import DigitsError

app = typer.Typer(
    name="digits",
    help="Handwritten-digit recognition: prepare MNIST, train, evaluate, register, read digits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line on stderr and return the exit to raise."""
    typer.echo(f"digits: error: {message}", err=True)
    return typer.Exit(code)


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose user mistakes (DigitsError) end in one stderr line, not a traceback."""

    def register(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                return func(*args, **kw)
            except DigitsError as exc:
                raise fail(str(exc)) from None
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
    """The one settings object for a command; ``sections`` are its CLI options (None = not given)."""
    return load_settings(ctx.obj, sections)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data))


def not_implemented(command_name: str) -> None:
    raise fail(f"`digits {command_name}` is not implemented yet", 2)


@command("config")
def config_command(ctx: typer.Context) -> None:
    """Print the resolved settings as YAML."""
    typer.echo(settings(ctx).to_yaml(), nl=False)


@command("prepare")
def prepare_command(
    ctx: typer.Context,
    source_dir: Annotated[Path | None, typer.Option(help="Local folder with the four MNIST IDX files.")] = None,
    raw_dir: Annotated[Path | None, typer.Option(help="Where raw IDX files go.")] = None,
    processed_dir: Annotated[Path | None, typer.Option(help="Where the splits go.")] = None,
    val_ratio: Annotated[float | None, typer.Option(help="Share of train held out for validation.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Get raw MNIST and write stratified train/val/test splits with a manifest."""
    from digits_cli.data import prepare_data
    from digits_cli.reporting import print_manifest

    cfg = settings(
        ctx,
        data={
            "source_dir": source_dir,
            "raw_dir": raw_dir,
            "processed_dir": processed_dir,
            "val_ratio": val_ratio,
            "seed": seed,
        },
    )
    manifest = prepare_data(cfg.data)
    if as_json:
        emit_json(manifest)
    else:
        print_manifest(manifest, cfg.data.processed_dir)


@command("validate")
def validate_command(
    ctx: typer.Context,
    processed_dir: Annotated[Path | None, typer.Option(help="Folder of the prepared splits.")] = None,
    report: Annotated[Path | None, typer.Option(help="Where the JSON report goes.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the prepared data; exit non-zero naming each failed check."""
    from digits_cli.data import load_data, load_manifest
    from digits_cli.io import write_json
    from digits_cli.reporting import print_checks
    from digits_cli.validation import validate_data, validation_report

    cfg = settings(ctx, data={"processed_dir": processed_dir}, validate={"report": report})
    checks = validate_data(
        load_data(cfg.data.processed_dir), load_manifest(cfg.data.processed_dir), cfg.validate
    )
    result = validation_report(checks)
    write_json(cfg.validate.report, result)
    if as_json:
        emit_json(result)
    else:
        print_checks(checks)
    if not result["passed"]:
        failed = ", ".join(c.name for c in checks if not c.passed)
        raise DigitsError(f"validation failed: {failed} (see {cfg.validate.report})")


@command("train")
def train_command() -> None:
    """Train the CNN on the prepared data."""
    not_implemented("train")


@command("evaluate")
def evaluate_command() -> None:
    """Evaluate the trained model on the test split."""
    not_implemented("evaluate")


@command("register")
def register_command() -> None:
    """Register the evaluated model in the MLflow registry."""
    not_implemented("register")


@command("predict")
def predict_command() -> None:
    """Read every digit in pictures."""
    not_implemented("predict")


@command("annotate")
def annotate_command() -> None:
    """Draw the digits found in a picture onto a copy of it."""
    not_implemented("annotate")


@command("serve")
def serve_command() -> None:
    """Serve the model over HTTP."""
    not_implemented("serve")
