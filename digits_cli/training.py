"""`digits train`: fit a Classifier on the prepared splits, track it in MLflow, keep the best model.

The splits live in memory as uint8 tensors; each batch is converted and augmented on the fly with
one batched random affine warp (rotation, scale, shift), so there is no per-sample pipeline.
SGD with Nesterov momentum follows a one-cycle schedule (warm-up, cosine decay); an exponential
moving average of the weights (and of the batch-norm statistics) is what gets validated and saved.

Under ``torchrun`` every process trains on its own shard with DistributedDataParallel; only rank 0
talks to MLflow, measures emissions, writes files and prints.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from digits_cli.config import Settings, TrainSettings
from digits_cli.errors import DigitsError

if TYPE_CHECKING:
    import torch
    from torch import nn

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


@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes (one process unless run by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


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


@dataclass
class Tensors:
    """One split in memory: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


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


def random_affine(
    batch: torch.Tensor, cfg: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """Warp each image by its own random rotation, scale and shift (one batched grid sample);
    with ``cfg.elastic`` the first ``elastic_fraction`` of the batch is also elastically
    distorted (Simard et al. 2003) in the same sample."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    u = (torch.rand(n, 4, generator=generator) * 2 - 1).to(batch.device)
    angle = u[:, 0] * math.radians(cfg.rotation)
    zoom = 1 + u[:, 1] * cfg.scale
    # affine_grid maps output to input coordinates in [-1, 1]: a shift of f image widths is 2f.
    shift_x, shift_y = u[:, 2] * 2 * cfg.shift, u[:, 3] * 2 * cfg.shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    distorted = round(n * cfg.elastic_fraction) if cfg.elastic > 0 else 0
    if distorted:
        field = elastic_field(
            distorted, batch.shape[-2:], cfg.elastic, cfg.elastic_sigma, generator
        )
        grid = torch.cat([grid[:distorted] + field.to(batch.device), grid[distorted:]])
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_field(
    n: int, size: Any, alpha: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """``n`` smooth random displacement fields (n, H, W, 2) in grid_sample's [-1, 1] units:
    uniform noise blurred by a Gaussian of ``sigma`` pixels, scaled to ``alpha`` pixels."""
    import torch
    import torch.nn.functional as F

    height, width = int(size[0]), int(size[1])
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps /= taps.sum()
    noise = torch.rand(n * 2, 1, height, width, generator=generator) * 2 - 1
    blurred = F.conv2d(noise, taps.view(1, 1, 1, -1), padding=(0, radius))
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1), padding=(radius, 0))
    pixels = blurred.view(n, 2, height, width).permute(0, 2, 3, 1) * alpha
    # One pixel is 2/W of grid_sample's x range and 2/H of its y range.
    return pixels * torch.tensor([2 / width, 2 / height])


# --- Model averaging and evaluation ------------------------------------------------------------


class WeightEMA:
    """Exponential moving average of the weights and batch-norm statistics of a model.

    The decay ramps up from ~0.1 so the average is not anchored to the random initialisation
    in short runs; integer buffers (batch counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        import torch

        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            pairs = zip(
                [*self.model.parameters(), *self.model.buffers()],
                [*model.parameters(), *model.buffers()],
                strict=True,
            )
            for average, current in pairs:
                if average.dtype.is_floating_point:
                    average.lerp_(current, 1 - decay)
                else:
                    average.copy_(current)


def evaluate_split(
    model: nn.Module, split: Tensors, memory_format: torch.memory_format, batch_size: int = 1000
) -> tuple[float, int, int]:
    """Summed cross-entropy, correct predictions and count of ``model`` on ``split`` (eval mode)."""
    import torch
    import torch.nn.functional as F

    from digits_cli.model import model_input

    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            x = model_input(split.images[start : start + batch_size])
            y = split.labels[start : start + batch_size]
            logits = model(x.contiguous(memory_format=memory_format))
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return loss, correct, len(split)


# --- Progress display ---------------------------------------------------------------------------


class Progress:
    """A rich progress bar on a terminal, one plain line per epoch otherwise, nothing off rank 0."""

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int, stream: TextIO) -> None:
        self.enabled, self.epochs, self.stream = enabled, epochs, stream
        self.bar: Any = None
        if enabled and stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=stream),
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "train",
                total=epochs * steps_per_epoch,
                epoch=1,
                epochs=epochs,
                loss=float("nan"),
                val="-",
                ips=0.0,
            )

    def step(self, epoch: int, loss: float, images_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, epoch=epoch, loss=loss, ips=images_per_second)

    def epoch_end(self, metrics: dict[str, float], epoch: int, elapsed: float) -> None:
        if not self.enabled:
            return
        validated = "val_accuracy" in metrics
        val = (
            f"val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4%}  "
            if validated
            else ""
        )
        line = (
            f"epoch {epoch}/{self.epochs}  train_loss {metrics['train_loss']:.4f}  {val}"
            f"lr {metrics['lr']:.4g}  {metrics['images_per_second']:,.0f} img/s  {elapsed:.1f}s"
        )
        if self.bar is None:
            print(line, file=self.stream, flush=True)
        else:  # above the bar, so the history stays on screen
            self.bar.console.print(line, highlight=False)
            if validated:
                self.bar.update(self.task, val=f"{metrics['val_accuracy']:.2%}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- The training loop ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a training loop did."""

    epochs: int = 0
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    best_val_loss: float | None = None
    seconds: float = 0.0
    step_seconds: float = 0.0
    images_seen: int = 0
    interrupted: bool = False
    stopped_early: bool = False
    timed_out: bool = False
    stale_epochs: int = 0  # epochs since the val accuracy last rose
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.step_seconds if self.step_seconds else 0.0

    def record(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Add an epoch's metrics; True when its model is the one to keep: the best validation
        yet (ties go to the lower val loss), or, with no validation (a refit), every epoch."""
        self.epochs = epoch
        self.history.append(metrics)
        if "val_accuracy" not in metrics:
            self.best_epoch = epoch
            return True
        accuracy, loss = metrics["val_accuracy"], metrics["val_loss"]
        best_accuracy = -1.0 if self.best_val_accuracy is None else self.best_val_accuracy
        best_loss = math.inf if self.best_val_loss is None else self.best_val_loss
        best = accuracy > best_accuracy or (accuracy == best_accuracy and loss < best_loss)
        self.stale_epochs = 0 if accuracy > best_accuracy else self.stale_epochs + 1
        if best:
            self.best_epoch, self.best_val_accuracy, self.best_val_loss = epoch, accuracy, loss
        return best


def all_sum(values: list[float], workers: Workers, device: torch.device) -> list[float]:
    """Sum ``values`` over the training processes (identity for one process)."""
    import torch
    import torch.distributed as dist

    if not workers.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def batch_plan(n_train: int, batch_size: int, workers: Workers) -> tuple[int, int]:
    """(images per process per step, steps per epoch); the incomplete last batch is dropped.

    Every process draws the same permutation and takes its own slice of each global batch.
    """
    per_process = max(1, min(batch_size, n_train) // workers.world_size)
    return per_process, max(1, n_train // (per_process * workers.world_size))


def one_cycle(
    total_steps: int, warmup: float = 0.25, start: float = 0.05, end: float = 0.001
) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up from ``start``, cosine decay to ``end``.

    torch's OneCycleLR fails on very short runs; this one holds for any number of steps.
    """
    warmup_steps = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start + (1 - start) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def epoch_metrics(
    validation: tuple[float, int, int] | None,
    train_loss: float,
    workers: Workers,
    device: torch.device,
) -> dict[str, float]:
    """The epoch's mean train loss over processes, and its validation when there is one."""
    if validation is None:
        (total,) = all_sum([train_loss], workers, device)
        return {"train_loss": total / workers.world_size}
    val_loss, correct, count, total = all_sum([*validation, train_loss], workers, device)
    return {
        "train_loss": total / workers.world_size,
        "val_loss": val_loss / count,
        "val_accuracy": correct / count,
    }


def out_of_time(start: float, limit: float, workers: Workers, device: torch.device) -> bool:
    """Whether ``limit`` seconds have passed, as any process sees it (so all stop together)."""
    late = float(time.perf_counter() - start > limit)
    return all_sum([late], workers, device)[0] > 0


def fit(
    model: Classifier,
    train: Tensors,
    val: Tensors,
    cfg: TrainSettings,
    workers: Workers,
    device: torch.device,
    on_best: Any,
    on_epoch: Any,
    stream: TextIO = sys.stdout,
) -> Outcome:
    """Train ``model`` in place; call ``on_best(eval_model, outcome)`` on every new best validation
    (with ``refit``, which validates nothing, after every epoch: the final weights are kept).

    Ctrl-C ends the loop after the current step and returns what was done.
    """
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from digits_cli.model import model_input

    memory_format = torch.channels_last
    model.to(device).to(memory_format=memory_format)
    network: nn.Module = model
    if workers.distributed:
        ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(model, device_ids=ids)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema else None
    eval_model = ema.model if ema is not None else model

    per_process_batch, steps_per_epoch = batch_plan(len(train), cfg.batch_size, workers)
    global_batch = per_process_batch * workers.world_size

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(cfg.epochs * steps_per_epoch))
    order_rng = torch.Generator().manual_seed(cfg.seed)
    augment_rng = torch.Generator().manual_seed(cfg.seed * 1000 + workers.rank + 1)
    train_images, train_labels = train.images.to(device), train.labels.to(device)
    shard = slice(workers.rank, None, workers.world_size)  # each process validates its share
    val = Tensors(val.images[shard].to(device), val.labels[shard].to(device))

    progress = Progress(workers.is_main, cfg.epochs, steps_per_epoch, stream)
    outcome = Outcome()
    start = time.perf_counter()
    model.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(len(train), generator=order_rng).to(device)
            loss_sum, loss_count = 0.0, 0
            epoch_start = time.perf_counter()
            epoch_images = 0
            augment = cfg.augment and epoch <= cfg.epochs - cfg.clean_epochs
            for step in range(steps_per_epoch):
                first = step * global_batch + workers.rank * per_process_batch
                idx = order[first : first + per_process_batch]
                x = model_input(train_images[idx])
                if augment:
                    x = random_affine(x, cfg, augment_rng)
                x = x.contiguous(memory_format=memory_format)
                loss = F.cross_entropy(
                    network(x), train_labels[idx], label_smoothing=cfg.label_smoothing
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if ema is not None:
                    ema.update(model)
                loss_value = float(loss.detach())
                loss_sum += loss_value
                loss_count += 1
                epoch_images += global_batch
                elapsed = time.perf_counter() - epoch_start
                progress.step(epoch, loss_value, epoch_images / elapsed if elapsed else 0.0)
                if cfg.time_limit is not None and out_of_time(
                    start, cfg.time_limit, workers, device
                ):
                    outcome.timed_out = True
                    break
            step_seconds = time.perf_counter() - epoch_start
            outcome.step_seconds += step_seconds
            outcome.images_seen += epoch_images

            metrics = epoch_metrics(
                None if cfg.refit else evaluate_split(eval_model, val, memory_format),
                loss_sum / loss_count,
                workers,
                device,
            )
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            metrics["images_per_second"] = epoch_images / step_seconds
            if outcome.record(epoch, metrics) and workers.is_main:
                on_best(eval_model, outcome)
            outcome.seconds = time.perf_counter() - start
            progress.epoch_end(metrics, epoch, outcome.seconds)
            if workers.is_main:
                on_epoch(metrics, epoch)
            if outcome.timed_out:
                break
            if not cfg.refit and outcome.stale_epochs >= cfg.patience:
                outcome.stopped_early = True
                break
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        progress.close()
        outcome.seconds = time.perf_counter() - start
    return outcome


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

    cfg = settings.train
    processed_dir = settings.data.processed_dir
    train, val = load_tensors(processed_dir, cfg)
    data_digest = manifest_digest(processed_dir)

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

        def on_best(best_model: Classifier, outcome: Outcome) -> None:
            meta = {
                "mlflow_run_id": run_id,
                "data_manifest_sha256": data_digest,
                "best_val_accuracy": outcome.best_val_accuracy,
                "epoch": outcome.best_epoch,
                "preset": facts["preset"],
                "trained_on": facts["trained_on"],
                "train": cfg.model_dump(mode="json"),
            }
            save_checkpoint(cfg.model_path, best_model, meta)

        def on_epoch(metrics: dict[str, float], epoch: int) -> None:
            mlflow.log_metrics(metrics, step=epoch)

        with track_emissions(settings.emissions, "train") as emissions:
            outcome = fit(model, train, val, cfg, workers, device, on_best, on_epoch, stream)

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
