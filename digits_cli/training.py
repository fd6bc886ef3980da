"""`digits train`: fit a Classifier on the prepared splits, track it in MLflow, keep its model.

The splits live in memory as uint8 tensors; each batch is converted and augmented on the fly with
one batched random warp (:mod:`digits_cli.augment`), so there is no per-sample pipeline. SGD with
Nesterov momentum follows a one-cycle schedule (warm-up, cosine decay); an exponential moving
average of the weights (and of the batch-norm statistics) is what gets validated and saved. The
loop itself is :func:`digits_cli.fitting.fit`. By default (``train.refit``) the validation digits
are trained on too and the final weights are kept; otherwise the best validated epoch is.

Under ``torchrun`` every process trains on its own shard with DistributedDataParallel; only rank 0
talks to MLflow, measures emissions, writes files and prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from digits_cli.config import Settings, TrainSettings
from digits_cli.errors import DigitsError
from digits_cli.fitting import Outcome, Tensors, Workers, fit

if TYPE_CHECKING:
    import torch

    from digits_cli.model import Classifier

# Named sets of train-section values. Precedence: explicit CLI options > preset > environment >
# params.yaml > defaults, i.e. a preset acts like CLI options that any explicit option overrides.
PRESETS: dict[str, dict[str, Any]] = {
    # Two epochs of the half-width network, no augmentation or averaging. Measured by
    # bench/train_bench.py on 2 cores: 99.20% test accuracy after 22 s of training.
    "fast": {
        "arch": "small",
        "epochs": 2,
        "batch_size": 256,
        "lr": 0.2,
        "augment": False,
        "ema": False,
    },
}


def train_overrides(preset: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The train-section overrides: the preset's values under the options given on the CLI."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise DigitsError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({key: value for key, value in options.items() if value is not None})
    return values


# --- Processes and devices --------------------------------------------------------------------


def workers_from_env() -> Workers:
    """Read torchrun's environment variables."""
    env = os.environ
    return Workers(
        rank=int(env.get("RANK", 0)),
        world_size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))),
    )


@contextmanager
def process_group(workers: Workers, device: torch.device) -> Iterator[None]:
    """Join the torchrun process group for the block (gloo on CPU, nccl on GPUs)."""
    import torch.distributed as dist

    if not workers.distributed:
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def pick_device(workers: Workers) -> torch.device:
    """CUDA (one GPU per local process) when present, else the CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(workers.local_rank % torch.cuda.device_count())
        return torch.device("cuda", workers.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def set_threads(threads: int, workers: Workers) -> int:
    """Set torch's CPU threads: ``train.threads``, or (0) the cores shared among local processes."""
    import torch

    if threads == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // workers.local_world_size)
    torch.set_num_threads(threads)
    return threads


# --- Data and augmentation --------------------------------------------------------------------


def load_tensors(processed_dir: Path, cfg: TrainSettings) -> tuple[Tensors, Tensors]:
    """The digits to train on and the validation split.

    With ``refit`` the validation digits join the training digits (so nothing is held out);
    ``max_train_samples`` then takes a seeded subset of what is trained on.
    """
    import numpy as np
    import torch

    from digits_cli.data import load_split

    train, val = load_split(processed_dir, "train"), load_split(processed_dir, "val")
    images, labels = train.images, train.labels
    if cfg.refit:
        images, labels = np.concatenate([images, val.images]), np.concatenate([labels, val.labels])
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(labels):
        chosen = np.random.default_rng(cfg.seed).permutation(len(labels))[: cfg.max_train_samples]
        keep = np.sort(chosen)  # the subset in the split's own order
        images, labels = images[keep], labels[keep]
    if len(labels) == 0 or len(val.labels) == 0:
        raise DigitsError(f"{processed_dir}: the train and val splits must not be empty")
    return (
        Tensors(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)),
        Tensors(torch.from_numpy(np.ascontiguousarray(val.images)), torch.from_numpy(val.labels)),
    )


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the [0, 1] pixels of a uint8 image tensor."""
    import torch

    pixels = images.to(torch.float64) / 255.0
    return float(pixels.mean()), float(pixels.std())


# --- The command ---------------------------------------------------------------------------------


def log_model(checkpoint: Path, example: torch.Tensor) -> None:
    """Log the saved checkpoint's model through mlflow.pytorch (pt2, dynamic batch), the file,
    and its ONNX export.

    The pt2 export traces the eval-mode model on an example batch of two, so MLflow marks the
    batch dimension dynamic; the raw checkpoint goes under ``checkpoint/``, the ONNX file under
    ``onnx/`` (what `digits predict` and `serve` load from the registry).
    """
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from digits_cli.model import load_checkpoint
    from digits_cli.tracking import CHECKPOINT_ARTIFACT

    model, meta = load_checkpoint(checkpoint)
    with torch.inference_mode():
        output = model(example)
    mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example.numpy(), output.numpy()),
        input_example=example.numpy(),
        serialization_format="pt2",
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}",
        ],
    )
    mlflow.log_artifact(str(checkpoint), artifact_path=CHECKPOINT_ARTIFACT)
    log_onnx(model, meta)


def log_onnx(model: Classifier, meta: dict[str, Any]) -> None:
    """Log the model as ``onnx/model.onnx``, the file the light reader runs, with its provenance."""
    import tempfile

    import mlflow

    from digits_cli.export import onnx_bytes
    from digits_cli.tracking import ONNX_ARTIFACT

    provenance = {
        "run_id": meta.get("mlflow_run_id"),
        "data_manifest_sha256": meta.get("data_manifest_sha256"),
        "arch": model.arch,
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(onnx_bytes(model, provenance))
        mlflow.log_artifact(str(path), artifact_path=ONNX_ARTIFACT)


def train_model(
    settings: Settings, preset: str | None = None, stream: TextIO = sys.stdout
) -> dict[str, Any]:
    """Run `digits train`: returns the report (also written to ``train.report``) on rank 0.

    Progress goes to ``stream``. Other ranks of a torchrun job only train and return ``{}``.
    """
    import torch

    from digits_cli.data import manifest_digest
    from digits_cli.model import Classifier, count_macs, count_parameters
    from digits_cli.validation import require_passed

    cfg = settings.train
    processed_dir = settings.data.processed_dir
    train, val = load_tensors(processed_dir, cfg)
    data_digest = manifest_digest(processed_dir)
    require_passed(settings.validate.report, data_digest)  # the validation gate, outside DVC too

    workers = workers_from_env()
    device = pick_device(workers)
    threads = set_threads(cfg.threads, workers)
    torch.manual_seed(cfg.seed)
    model = Classifier(cfg.arch, *pixel_stats(train.images))
    facts = {
        "params": count_parameters(model),
        "macs_per_image": count_macs(model),
        "arch": cfg.arch,
        "preset": preset,
        "train_samples": len(train),
        # A refit trains on the validation digits too: its model has no held-out validation.
        "trained_on": "train+val" if cfg.refit else "train",
        "device": str(device),
        "threads": threads,
        "precision": cfg.precision,
        "processes": workers.world_size,
    }
    with process_group(workers, device):
        if not workers.is_main:
            fit(model, train, val, cfg, workers, device, lambda *_: None, lambda *_: None)
            return {}
        return track_training(
            settings,
            model,
            train,
            val,
            workers,
            device,
            data_digest,
            facts,
            stream,
        )


def track_training(
    settings: Settings,
    model: Classifier,
    train: Tensors,
    val: Tensors,
    workers: Workers,
    device: torch.device,
    data_digest: str,
    facts: dict[str, Any],
    stream: TextIO,
) -> dict[str, Any]:
    """Rank 0's part: the MLflow run, emissions, checkpoints and report around :func:`fit`."""
    import mlflow

    from digits_cli.emissions import track_emissions
    from digits_cli.io import write_json
    from digits_cli.model import model_input, save_checkpoint
    from digits_cli.tracking import configure_tracking, git_commit

    cfg = settings.train
    configure_tracking(settings.tracking)
    tags = {
        "data_manifest_sha256": data_digest,
        "arch": cfg.arch,
        "preset": facts["preset"] or "none",
        "trained_on": facts["trained_on"],
    }
    commit = git_commit()
    if commit is not None:
        tags["git_commit"] = commit
    with mlflow.start_run(tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_params(settings.flat())

        def on_keep(kept_model: Classifier, outcome: Outcome) -> None:
            meta = {
                "mlflow_run_id": run_id,
                "data_manifest_sha256": data_digest,
                "best_val_accuracy": outcome.best_val_accuracy,
                "epoch": outcome.best_epoch,
                "preset": facts["preset"],
                "trained_on": facts["trained_on"],
                "train": cfg.model_dump(mode="json"),
            }
            save_checkpoint(cfg.model_path, kept_model, meta)

        def on_epoch(metrics: dict[str, float], epoch: int) -> None:
            mlflow.log_metrics(metrics, step=epoch)

        with track_emissions(settings.emissions, "train") as emissions:
            outcome = fit(model, train, val, cfg, workers, device, on_keep, on_epoch, stream)

        saved = outcome.best_epoch > 0
        report = {
            "seconds": round(outcome.seconds, 3),
            "epochs": outcome.epochs,
            "best_epoch": outcome.best_epoch,
            "best_val_accuracy": outcome.best_val_accuracy,
            "best_val_loss": outcome.best_val_loss,
            "images_per_second": round(outcome.images_per_second, 1),
            **facts,
            "stopped_early": outcome.stopped_early,
            "timed_out": outcome.timed_out,
            "interrupted": outcome.interrupted,
            "model_path": str(cfg.model_path) if saved else None,
            "mlflow_run_id": run_id,
            **emissions.as_metrics(),
        }
        held_out = {}
        if outcome.best_val_accuracy is not None:
            held_out["best_val_accuracy"] = outcome.best_val_accuracy
        mlflow.log_metrics(
            {
                **held_out,
                "train_seconds": outcome.seconds,
                "train_images_per_second": outcome.images_per_second,
                **emissions.as_metrics(),
            }
        )
        write_json(cfg.report, report)
        mlflow.log_artifact(str(cfg.report), artifact_path="reports")
        if saved:
            log_model(cfg.model_path, model_input(val.images[:2]))
        if outcome.interrupted:
            mlflow.end_run(status="KILLED")
    return report
