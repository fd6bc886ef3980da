"""Training progress: a rich bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

from typing import Any, TextIO


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
