"""The training loop: :func:`fit` runs epochs of :func:`train_epoch` and :func:`test`, in the shape
of pytorch/examples' MNIST script, over a :class:`Trainer` that holds the run's state.

Under ``torchrun`` every process trains on its own slice of each batch with
DistributedDataParallel and validates its own shard; sums go through :func:`all_sum`.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from digits_cli.augment import low_resolution, random_affine
from digits_cli.config import TrainSettings
from digits_cli.progress import Progress

if TYPE_CHECKING:
    import torch
    from torch import nn

    from digits_cli.model import Classifier


# --- Processes and batches --------------------------------------------------------------------


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


@dataclass
class Tensors:
    """One split in memory: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


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


# --- The loop --------------------------------------------------------------------------------


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


# What fit calls: with the weights to keep (the average when there is one) and the outcome so
# far, on rank 0 whenever those weights are the ones to keep; and with every epoch's metrics.
OnKeep = Callable[["Classifier", "Outcome"], None]
OnEpoch = Callable[[dict[str, float], int], None]


@dataclass
class Trainer:
    """One run's state between steps: the network (wrapped for DDP when distributed), the
    weight average, optimiser, schedule, random streams, and the data on the device."""

    model: Classifier
    network: nn.Module
    ema: WeightEMA | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    order_rng: torch.Generator
    augment_rng: torch.Generator
    train: Tensors
    val: Tensors
    per_process_batch: int
    steps_per_epoch: int
    cfg: TrainSettings
    workers: Workers
    memory_format: torch.memory_format

    @property
    def kept_model(self) -> Classifier:
        """The weights that are validated and saved: the average when there is one."""
        return self.ema.model if self.ema is not None else self.model  # type: ignore[return-value]

    @property
    def global_batch(self) -> int:
        return self.per_process_batch * self.workers.world_size


def prepare(
    model: Classifier,
    train: Tensors,
    val: Tensors,
    cfg: TrainSettings,
    workers: Workers,
    device: torch.device,
) -> Trainer:
    """Move the model and data to ``device`` and build the optimiser, schedule and streams."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    memory_format = torch.channels_last
    model.to(device).to(memory_format=memory_format)
    network: nn.Module = model
    if workers.distributed:
        ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(model, device_ids=ids)
    per_process_batch, steps_per_epoch = batch_plan(len(train), cfg.batch_size, workers)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    shard = slice(workers.rank, None, workers.world_size)  # each process validates its share
    return Trainer(
        model=model,
        network=network,
        ema=WeightEMA(model, cfg.ema_decay) if cfg.ema else None,
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.LambdaLR(
            optimizer, one_cycle(cfg.epochs * steps_per_epoch)
        ),
        order_rng=torch.Generator().manual_seed(cfg.seed),
        augment_rng=torch.Generator().manual_seed(cfg.seed * 1000 + workers.rank + 1),
        train=Tensors(train.images.to(device), train.labels.to(device)),
        val=Tensors(val.images[shard].to(device), val.labels[shard].to(device)),
        per_process_batch=per_process_batch,
        steps_per_epoch=steps_per_epoch,
        cfg=cfg,
        workers=workers,
        memory_format=memory_format,
    )


def train_step(
    trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, augment: bool
) -> float:
    """One optimiser step on a uint8 batch (warped when ``augment``); returns its loss."""
    import torch
    import torch.nn.functional as F

    from digits_cli.model import model_input

    x = model_input(images)
    if augment:
        x = random_affine(x, trainer.cfg, trainer.augment_rng)
        x = low_resolution(x, trainer.cfg, trainer.augment_rng)  # the batch itself at share 0
    x = x.contiguous(memory_format=trainer.memory_format)
    # bf16: the convolutions and products in bfloat16 (CPUs with AMX or AVX-512 BF16 run them
    # ~1.5x faster), the weights, batch norm, loss and optimiser in float32.
    with torch.autocast(x.device.type, torch.bfloat16, enabled=trainer.cfg.precision == "bf16"):
        logits = trainer.network(x)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=trainer.cfg.label_smoothing)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()
    trainer.schedule.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)
    return float(loss.detach())


@dataclass
class EpochRun:
    """What one pass over the training digits did."""

    mean_loss: float
    images: int
    seconds: float
    timed_out: bool


def train_epoch(trainer: Trainer, epoch: int, progress: Progress, started: float) -> EpochRun:
    """One pass over the training digits in a fresh random order; stops early when
    ``train.time_limit`` seconds have passed since ``started``."""
    import torch

    cfg, workers = trainer.cfg, trainer.workers
    augment = cfg.augment and epoch <= cfg.epochs - cfg.clean_epochs
    order = torch.randperm(len(trainer.train), generator=trainer.order_rng).to(
        trainer.train.images.device
    )
    trainer.model.train()
    loss_sum, steps, images, timed_out = 0.0, 0, 0, False
    epoch_start = time.perf_counter()
    for step in range(trainer.steps_per_epoch):
        first = step * trainer.global_batch + workers.rank * trainer.per_process_batch
        idx = order[first : first + trainer.per_process_batch]
        loss = train_step(trainer, trainer.train.images[idx], trainer.train.labels[idx], augment)
        loss_sum, steps, images = loss_sum + loss, steps + 1, images + trainer.global_batch
        elapsed = time.perf_counter() - epoch_start
        progress.step(epoch, loss, images / elapsed if elapsed else 0.0)
        if cfg.time_limit is not None and out_of_time(
            started, cfg.time_limit, workers, trainer.train.images.device
        ):
            timed_out = True
            break
    return EpochRun(loss_sum / steps, images, time.perf_counter() - epoch_start, timed_out)


def test(trainer: Trainer) -> tuple[float, int, int]:
    """Validate the kept weights on this process's shard of the validation split."""
    return evaluate_split(trainer.kept_model, trainer.val, trainer.memory_format)


def fit(
    model: Classifier,
    train: Tensors,
    val: Tensors,
    cfg: TrainSettings,
    workers: Workers,
    device: torch.device,
    on_keep: OnKeep,
    on_epoch: OnEpoch,
    stream: TextIO = sys.stdout,
) -> Outcome:
    """Train ``model`` in place for ``cfg.epochs`` epochs, validating after each one (none with
    ``refit``); ``on_keep`` saves the weights to keep: the best validation so far, or, in a refit,
    every epoch's (the final weights are the model). Patience stops a validated run early.

    Ctrl-C stops at once, mid-step, and returns what was done; the weights kept at the end of the
    last epoch are what remains.
    """
    trainer = prepare(model, train, val, cfg, workers, device)
    progress = Progress(workers.is_main, cfg.epochs, trainer.steps_per_epoch, stream)
    outcome = Outcome()
    started = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            run = train_epoch(trainer, epoch, progress, started)
            outcome.step_seconds += run.seconds
            outcome.images_seen += run.images
            outcome.timed_out = run.timed_out
            metrics = epoch_metrics(
                None if cfg.refit else test(trainer), run.mean_loss, workers, device
            )
            metrics["lr"] = trainer.optimizer.param_groups[0]["lr"]
            metrics["images_per_second"] = run.images / run.seconds
            if outcome.record(epoch, metrics) and workers.is_main:
                on_keep(trainer.kept_model, outcome)
            outcome.seconds = time.perf_counter() - started
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
        outcome.seconds = time.perf_counter() - started
    return outcome
