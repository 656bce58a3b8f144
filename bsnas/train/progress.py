"""Training progress for people: a rich progress bar on a terminal, plain lines otherwise.

`TrainProgress` plugs into `bsnas.train.loop.train` as `on_batch` and `on_epoch` callbacks. It writes to
stderr, so stdout stays free for results (`--json`). It reads the device-side running sums at most
every `refresh_s` seconds, so it adds no device sync per step.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bsnas.train.loop import BatchReport, EpochMetrics

__all__ = ["TrainProgress", "format_epoch"]


def format_epoch(metrics: EpochMetrics, epochs: int) -> str:
    """One plain line per epoch."""
    val = ""
    if metrics.val_accuracy is not None:
        val = f"  val_loss {metrics.val_loss:.4f}  val_acc {metrics.val_accuracy:.2%}"
    return (f"epoch {metrics.epoch}/{epochs}  loss {metrics.train_loss:.4f}  acc {metrics.train_accuracy:.2%}{val}"
            f"  lr {metrics.lr:.3g}  {metrics.images_per_s:.0f} img/s  {metrics.seconds:.1f} s")


class TrainProgress:
    """Context manager giving `on_batch`/`on_epoch` callbacks that show a run's progress."""

    def __init__(self, epochs: int, start_epoch: int = 0, console: Console | None = None,
                 refresh_s: float = 0.25) -> None:
        self.epochs, self.start_epoch, self.refresh_s = epochs, start_epoch, refresh_s
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            TextColumn("batch {task.fields[batch]}  loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}"
                       "  {task.fields[rate]:.0f} img/s"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.task: Any = None
        self.last_refresh = 0.0

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def on_batch(self, report: BatchReport) -> None:
        """Update the bar (terminal only), reading the loss at most every `refresh_s` seconds."""
        now = time.perf_counter()
        if not self.live or (now - self.last_refresh < self.refresh_s and report.batch < report.num_batches):
            return
        self.last_refresh = now
        if self.task is None:
            total = (self.epochs - self.start_epoch) * report.num_batches
            self.task = self.progress.add_task("train", total=total, epoch=report.epoch + 1, epochs=self.epochs,
                                               batch="", loss=0.0, acc=0.0, rate=0.0)
        done = (report.epoch - self.start_epoch) * report.num_batches + report.batch
        self.progress.update(
            self.task, completed=done, epoch=report.epoch + 1, batch=f"{report.batch}/{report.num_batches}",
            loss=float(report.loss_sum) / report.seen, acc=float(report.correct) / report.seen,
            rate=report.seen / max(report.seconds, 1e-9),
        )

    def on_epoch(self, metrics: EpochMetrics) -> None:
        """Print the epoch's line (above the bar on a terminal)."""
        self.console.print(format_epoch(metrics, self.epochs), highlight=False, soft_wrap=True)
