"""The reading path's commands: predict, annotate, serve (numpy, OpenCV, ONNX Runtime; no
torch or MLflow unless a model needs them)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click.exceptions import UsageError  # Typer's Click (pinned range: pyproject.toml)

from digits_cli.cli import (
    JsonOption,
    ModelOption,
    command,
    emit_json,
    end_without_teardown,
    error_line,
    settings,
)
from digits_cli.errors import DigitsError

if TYPE_CHECKING:
    from digits_cli.batch import FileReading
    from digits_cli.inference import LoadedModel


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
        list[Path] | None,
        typer.Argument(
            help="Pictures, or folders of pictures.", metavar="PICTURE", show_default=False
        ),
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

    end_without_teardown()

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
    image: Annotated[Path, typer.Argument(help="The picture to read.", metavar="PICTURE")],
    output: Annotated[
        Path,
        typer.Argument(
            help="Where the annotated copy goes (format from its extension).", metavar="OUTPUT"
        ),
    ],
    model: ModelOption = None,
    min_confidence: MinConfidenceOption = None,
) -> None:
    """Draw a box and label for every digit found in a picture onto a copy of it."""
    from digits_cli.drawing import annotate_image
    from digits_cli.images import encode_image, output_format
    from digits_cli.inference import DigitReader, at_size, load_model
    from digits_cli.io import atomic_open

    end_without_teardown()

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
