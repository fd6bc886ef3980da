"""The `digits` command line: thin commands that build settings and call the module owning the work.

Heavy libraries (torch, mlflow, cv2, dvc) are imported inside command bodies so `--help` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

# pydantic looks for plugins through every installed distribution's entry points the first time
# a model is built: 60-70 ms of every command in a full install, for plugins the settings never
# use. Set the variable (to "" for all plugins) to choose otherwise.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # Typer's Click
from typer.core import TyperGroup

from digits_cli.errors import DigitsError, missing_extra

if TYPE_CHECKING:
    from digits_cli.batch import FileReading
    from digits_cli.config import Settings
    from digits_cli.inference import LoadedModel


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
        except NoArgsIsHelpError as exc:  # bare `digits`: Typer has printed the help already
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
)

F = TypeVar("F", bound=Callable[..., Any])
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


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


@command("prepare", needs="train")
def prepare_command(
    ctx: typer.Context,
    source_dir: Annotated[
        Path | None, typer.Option(help="Local folder with the four MNIST IDX files.")
    ] = None,
    raw_dir: Annotated[Path | None, typer.Option(help="Where raw IDX files go.")] = None,
    processed_dir: Annotated[Path | None, typer.Option(help="Where the splits go.")] = None,
    val_ratio: Annotated[
        float | None, typer.Option(help="Share of train held out for validation.")
    ] = None,
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


@command("validate", needs="train")
def validate_command(
    ctx: typer.Context,
    processed_dir: Annotated[
        Path | None, typer.Option(help="Folder of the prepared splits.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Where the JSON report goes.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the prepared data; exit non-zero naming each failed check."""
    from digits_cli.reporting import print_checks
    from digits_cli.validation import validate

    cfg = settings(ctx, data={"processed_dir": processed_dir}, validate={"report": report})
    result = validate(cfg)
    if as_json:
        emit_json(result.report)
    else:
        print_checks(result.checks)
    if result.failed:
        failed = ", ".join(result.failed)
        raise DigitsError(f"validation failed: {failed} (see {cfg.validate.report})")


@command("train", needs="train")
def train_command(
    ctx: typer.Context,
    preset: Annotated[
        str | None,
        typer.Option(help="Named set of train values (fast); explicit options override it."),
    ] = None,
    arch: Annotated[str | None, typer.Option(help="Network: default, small or lenet.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step (all processes).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak one-cycle learning rate.")] = None,
    patience: Annotated[int | None, typer.Option(help="Epochs without val gain to stop.")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Random affine warps.")
    ] = None,
    ema: Annotated[bool | None, typer.Option("--ema/--no-ema", help="Average the weights.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads; 0 uses every core.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, order and augmentation.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Train on a seeded subset.")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    processed_dir: Annotated[Path | None, typer.Option(help="Prepared splits folder.")] = None,
    model_path: Annotated[Path | None, typer.Option(help="Where the best checkpoint goes.")] = None,
    report: Annotated[Path | None, typer.Option(help="Where the JSON report goes.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train the CNN on the prepared data (precedence: options > --preset > env > params file)."""
    import sys

    from digits_cli.training import train_model, train_overrides

    options = {
        "arch": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "patience": patience,
        "augment": augment,
        "ema": ema,
        "threads": threads,
        "seed": seed,
        "max_train_samples": max_train_samples,
        "time_limit": time_limit,
        "model_path": model_path,
        "report": report,
    }
    cfg = settings(
        ctx, train=train_overrides(preset, options), data={"processed_dir": processed_dir}
    )
    # With --json, stdout holds the report alone; the progress goes to stderr.
    result = train_model(cfg, preset, sys.stderr if as_json else sys.stdout)
    if not result:  # a torchrun worker other than rank 0: rank 0 reports
        return
    if as_json:
        emit_json(result)
    else:
        typer.echo(
            f"{result['arch']}: {result['params']:,} parameters, "
            f"{result['macs_per_image']:,} MACs per image"
        )
        kept = (
            f"refit on train + val, final weights of epoch {result['best_epoch']}"
            if result["best_val_accuracy"] is None
            else f"best val accuracy {result['best_val_accuracy']:.2%} at epoch "
            f"{result['best_epoch']}"
        )
        typer.echo(
            f"{result['epochs']} epochs in {result['seconds']:.1f}s "
            f"({result['images_per_second']:,.0f} img/s); {kept} -> "
            f"{result['model_path']}; MLflow run {result['mlflow_run_id']}"
        )
    if result["interrupted"]:
        raise fail(f"interrupted; best checkpoint so far kept, report in {cfg.train.report}", 130)


@command("evaluate", needs="train")
def evaluate_command(
    ctx: typer.Context,
    model_path: Annotated[Path | None, typer.Option(help="The checkpoint to evaluate.")] = None,
    processed_dir: Annotated[Path | None, typer.Option(help="Folder of the test split.")] = None,
    metrics: Annotated[Path | None, typer.Option(help="Where the metrics JSON goes.")] = None,
    tta: Annotated[
        bool | None,
        typer.Option("--tta/--no-tta", help="Average over 1-pixel shifts.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the trained model on the test split: metrics, plots, model card, MLflow."""
    from digits_cli.evaluation import evaluate, print_evaluation

    cfg = settings(
        ctx,
        data={"processed_dir": processed_dir},
        evaluate={"model_path": model_path, "metrics": metrics, "tta": tta},
    )
    result = evaluate(cfg)
    if as_json:
        emit_json(result.metrics)
    else:
        print_evaluation(result, cfg.evaluate)


@command("register", needs="train")
def register_command(
    ctx: typer.Context,
    model_path: Annotated[Path | None, typer.Option(help="The evaluated checkpoint.")] = None,
    name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    min_accuracy: Annotated[
        float | None, typer.Option(help="Least test accuracy for champion.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Make it champion regardless.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Register the evaluated model; alias it candidate, and champion if it beats the gate."""
    from digits_cli.registry import register_model

    cfg = settings(
        ctx,
        evaluate={"model_path": model_path},
        registry={"model_name": name, "min_accuracy": min_accuracy},
    )
    result = register_model(cfg, cfg.evaluate.model_path, force=force)
    if as_json:
        emit_json(result.to_dict())
        return
    verdict = "now champion" if result.promoted else "not champion"
    typer.echo(
        f"registered {result.name} v{result.version} (test accuracy {result.test_accuracy:.4f}) "
        f"as candidate, {verdict}: {result.reason}"
    )
    if result.champion_file:
        typer.echo(f"champion v{result.champion_version} written to {result.champion_file}")


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="An ONNX file, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID or a .pt "
        "checkpoint (default: the champion, from registry.champion_dir or the registry).",
        show_default=False,
    ),
]
MinConfidenceOption = Annotated[
    float | None, typer.Option(help="Drop detections below this confidence.", show_default=False)
]


JobsOption = Annotated[
    int | None,
    typer.Option(help="Processes reading files at once (0: every core).", show_default=False),
]


def model_line(model: LoadedModel) -> str:
    return f"model {model.name} version {model.version} ({model.uri})"


def shard_option(value: str | None) -> Any:
    """--shard's parser: a bad value is a usage error (one line, exit status 2)."""
    if value is None:
        return None
    from digits_cli.batch import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@command("predict")
def predict_command(
    ctx: typer.Context,
    images: Annotated[
        list[Path] | None, typer.Argument(help="Pictures, or folders of pictures.")
    ] = None,
    files_from: Annotated[
        Path | None,
        typer.Option(
            "--files-from",
            help="Also read the pictures (or folders) listed in FILE, one path a line (-: stdin).",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        Any,
        typer.Option(
            "--shard",
            metavar="INDEX/COUNT",
            parser=shard_option,
            help="Read only share INDEX of COUNT: every COUNT-th picture of the sorted listing. "
            "COUNT alone takes INDEX from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write JSON Lines to FILE (replaced whole, atomically, when done), one line per "
            "picture including failures; {index} and {count} name the shard.",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = None,
    min_confidence: MinConfidenceOption = None,
    jobs: JobsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read every digit in pictures (JSON Lines with --json, one line per picture, in order)."""
    from digits_cli.batch import Shard, listed_files, picture_files, read_files, shard_output_path

    if not images and files_from is None:
        raise UsageError("Missing argument 'images'", ctx=ctx)  # --help names --files-from
    chosen: Shard | None = shard
    destination = None
    if output is not None:
        try:
            destination = shard_output_path(output, chosen)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--output'") from None
    if destination is not None and destination.is_dir():  # found now, not after the reading
        raise DigitsError(f"cannot write {destination}: Is a directory")
    cfg = settings(ctx, segment={"min_confidence": min_confidence}, predict={"jobs": jobs})
    listing = list(images or []) + (listed_files(files_from) if files_from is not None else [])
    files = picture_files(listing)
    if chosen is not None:
        files = chosen.take(files)
    from digits_cli.inference import load_model

    loaded = load_model(model, cfg)
    answers = read_files(files, loaded, cfg.segment, cfg.predict.jobs)
    if destination is not None:
        failures = write_readings(destination, answers, loaded)
        if as_json:
            from digits_cli.schema import OutputSummary

            summary = OutputSummary.model_validate(
                dict(
                    model=loaded.describe(),
                    output=str(destination),
                    shard=str(chosen) if chosen is not None else None,
                    pictures=len(files),
                    failed=failures,
                )
            )
            emit_json(summary.model_dump(mode="json"))
        else:
            share = f"shard {chosen}: " if chosen is not None else ""
            pictures = "1 picture" if len(files) == 1 else f"{len(files)} pictures"
            typer.echo(
                f"{share}{pictures}, {failures} failed -> {destination} ({model_line(loaded)})"
            )
    else:
        failures = print_readings(answers, loaded, as_json)
    if failures:
        raise typer.Exit(1)


def print_readings(answers: Iterable[FileReading], model: LoadedModel, as_json: bool) -> int:
    """Print each reading (JSON Lines, or a table per picture), each failure as an error line;
    the number of failures."""
    if not as_json:
        from digits_cli.reporting import print_heading

        print_heading(model_line(model))
    failures = 0
    for answer in answers:
        if answer.reading is None:
            error_line(str(answer.error))
            failures += 1
        elif as_json:
            emit_json(reading_line(answer, model))
        else:
            from digits_cli.reporting import print_reading

            print_reading(str(answer.path), answer.reading)
    return failures


def reading_line(answer: FileReading, model: LoadedModel) -> dict[str, Any]:
    """The JSON line of a picture read (schema.ReadingLine), or of one that failed (FailedLine)."""
    from digits_cli.schema import FailedLine, ReadingLine, answer_of

    if answer.reading is None:
        return FailedLine(image=str(answer.path), error=str(answer.error)).model_dump()
    line = answer_of(ReadingLine, answer.reading, image=str(answer.path), model=model.describe())
    return line.model_dump(mode="json")


def write_readings(path: Path, answers: Iterable[FileReading], model: LoadedModel) -> int:
    """Write one JSON line per picture to ``path``, a failure as ``{"image", "error"}`` (and an
    error line on stderr), so the file accounts for every picture; the number of failures.
    ``path`` is replaced only once every picture is done: a rerun replaces it whole."""
    from digits_cli.io import atomic_open

    failures = 0
    with atomic_open(path) as handle:
        for answer in answers:
            if answer.reading is None:
                error_line(str(answer.error))
                failures += 1
            handle.write(json.dumps(reading_line(answer, model)) + "\n")
    return failures


@command("annotate")
def annotate_command(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="The picture to read.")],
    output: Annotated[
        Path, typer.Argument(help="Where the annotated copy goes (format from its extension).")
    ],
    model: ModelOption = None,
    min_confidence: MinConfidenceOption = None,
) -> None:
    """Draw a box and label for every digit found in a picture onto a copy of it."""
    from digits_cli.drawing import annotate_image
    from digits_cli.images import encode_image, output_format
    from digits_cli.inference import DigitReader, at_size, load_model
    from digits_cli.io import atomic_open

    cfg = settings(ctx, segment={"min_confidence": min_confidence})
    fmt = output_format(output.suffix)  # refuse an unknown format before any work
    reader = DigitReader(load_model(model, cfg), cfg.segment)
    picture, reading = reader.read_file(image)
    # A large picture was decoded smaller: the copy is drawn at that size (at most twice the
    # finder's working size), its boxes mapped onto it.
    on_picture = at_size(reading, picture.shape[1], picture.shape[0])
    data = encode_image(annotate_image(picture, on_picture), fmt)
    with atomic_open(output, "wb") as handle:
        handle.write(data)
    typer.echo(
        f"{output}: {len(reading.digits)} digits, read {reading.text!r} "
        f"with {model_line(reader.model)}"
    )


@command("export", needs="train")
def export_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Argument(help="The ONNX file to write (*.onnx); its record goes beside it.")
    ],
    model: ModelOption = None,
) -> None:
    """Write a model to one ONNX file (and a JSON record) that reads and serves without the
    registry, e.g. baked into the Docker image."""
    from digits_cli.export import export_model

    record = export_model(model, settings(ctx), output)
    typer.echo(
        f"{output}: {record['name']} version {record['version']} from {record['exported_from']}"
    )


@command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    model: ModelOption = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default 1).", show_default=False)
    ] = None,
) -> None:
    """Serve the model over HTTP: a web page, JSON and picture endpoints, Prometheus metrics."""
    from digits_cli.serving import run_server

    cfg = settings(ctx, serve={"host": host, "port": port, "model": model, "workers": workers})
    run_server(cfg)


@command("emissions", needs="train")
def emissions_command(
    ctx: typer.Context,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the totals as a bar chart (FILE.png).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the energy and CO2eq of the tracked runs (emissions.csv) by kind: train, evaluate..."""
    from digits_cli.emissions_report import (
        emissions_json,
        plot_emissions,
        print_emissions,
        summarise_emissions,
    )

    path = settings(ctx).emissions.output_file
    totals = summarise_emissions(path)
    if plot is not None:
        plot_emissions(totals, plot)
    if as_json:
        emit_json(emissions_json(totals))
    else:
        print_emissions(totals, path)
        if plot is not None:
            typer.echo(f"plot written to {plot}")
