"""The lifecycle's commands: prepare, validate, train, evaluate, register, export, emissions.

Each builds its settings and calls the module that owns the step; torch, MLflow and DVC are
imported inside the bodies, so `digits --help` and the reading commands never load them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digits_cli.cli import JsonOption, ModelOption, command, emit_json, fail, settings
from digits_cli.errors import DigitsError


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
    precision: Annotated[
        str | None, typer.Option(help="Step arithmetic: bf16 (needs BF16 instructions) or fp32.")
    ] = None,
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
        "precision": precision,
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


@command("export", needs="train")
def export_command(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Argument(
            help="The ONNX file to write (*.onnx); its record goes beside it.", metavar="FILE"
        ),
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
