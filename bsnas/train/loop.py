"""The trainer: one readable loop, every knob in `TrainConfig`, reports through callbacks.

`train(model, data, config)` trains on `data.train`, scores every epoch on `data.val` and, when
`config.final_test` is set, once on `data.test` at the end. It adds the model's orthonormal loss
(`bsnas.nn.layers.reg_loss`) when the model has one, stops with status ``"diverged"`` on a NaN/inf loss,
and resumes exactly from a state produced by an earlier run (see `bsnas.train.rundir`). It knows
nothing of the search.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bsnas.errors import BsnasError
from bsnas.nn.fold import fold_batchnorm
from bsnas.nn.layers import has_reg_loss, reg_loss
from bsnas.train import distributed
from bsnas.train.config import DEVICES, TrainConfig, is_device_name
from bsnas.train.data import DataSplits, Split, stratified_split
from bsnas.train.loader import BatchLoader

__all__ = ["BatchReport", "EpochMetrics", "TrainResult", "evaluate", "lr_factor", "recalibrate_bn",
           "resolve_device", "train"]

DIVERGENCE_CHECK_EVERY = 16  # steps between finiteness checks of the running loss (one device sync each)

@dataclass(frozen=True)
class BatchReport:
    """Progress inside an epoch. `loss_sum` and `correct` are device tensors: read them sparingly."""

    epoch: int
    batch: int  # batches done in this epoch
    num_batches: int
    seen: int  # images done in this epoch
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seconds: float  # since the epoch started


@dataclass(frozen=True)
class EpochMetrics:
    """One line of metrics.jsonl."""

    epoch: int  # 1-based, epochs done
    lr: float  # learning rate at the end of the epoch
    train_loss: float  # mean over the epoch's batches, orthonormal loss included
    train_accuracy: float  # on the augmented training batches
    val_loss: float | None
    val_accuracy: float | None
    seconds: float  # training time of the epoch (evaluation excluded)
    images_per_s: float


@dataclass
class TrainResult:
    """What a run produced; `status` is completed or diverged."""

    status: str
    epochs: int  # epochs completed
    history: list[EpochMetrics] = field(default_factory=list)
    val_accuracy: float | None = None  # after the last completed epoch
    test_accuracy: float | None = None  # only with `final_test`
    test_loss: float | None = None
    train_seconds: float = 0.0
    images_per_s: float = 0.0
    device: str = "cpu"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for result.json and `--json`."""
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    """The device `name` (auto, cpu, cuda, cuda:N) on this machine: `auto` is CUDA when available, else CPU; a
    CUDA device that torch does not see is a BsnasError."""
    if not is_device_name(name):
        raise BsnasError(f"--device {name!r} is not one of {DEVICES}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BsnasError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BsnasError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}.")
    return device


def lr_factor(step: int, total_steps: int, config: TrainConfig) -> float:
    """Multiplier of `config.lr` before optimizer step `step` (0-based) of `total_steps`."""
    progress = step / total_steps
    if config.warmup and progress < config.warmup:
        return (step + 1) / (config.warmup * total_steps + 1)
    if config.schedule == "step":
        return config.gamma ** sum(progress >= milestone for milestone in config.milestones)
    if config.schedule == "constant":
        return 1.0
    rest = (progress - config.warmup) / (1.0 - config.warmup)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    return 1.0 - rest


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    # Measured on a 2-core CPU: bf16 autocast is no faster than fp32 there, so `auto` keeps fp32 on CPU.
    choice = config.autocast
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "off"
    return torch.bfloat16 if choice == "bf16" else None


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # foreach: one kernel per step for all tensors, also on the CPU (SGD step 6.5 -> 4.1 ms for a MobileNetV2)
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay, foreach=True)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.momentum, 0.999),
                             weight_decay=config.weight_decay, foreach=True)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], images: int,
                   autocast: torch.dtype | None = None) -> None:
    """Replace every BatchNorm's running statistics by their plain average over the first `images` images.

    After a short run the running averages (momentum 0.1) still lag weights that moved fast; a model scored
    with them can look untrained. Re-estimating them with the final weights costs one forward pass.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.train()
    seen = 0
    for inputs, _ in batches:
        with torch.autocast(inputs.device.type, dtype=autocast, enabled=autocast is not None):
            model(inputs)
        seen += len(inputs)
        if seen >= images:
            break
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


@torch.inference_mode()
def evaluate(model: nn.Module, loader: BatchLoader, autocast: torch.dtype | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` over every batch of `loader`, BatchNorm folded (`fold_batchnorm`)."""
    model = fold_batchnorm(model)
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    for images, labels in loader.epoch():
        with torch.autocast(loader.device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    count = len(loader.labels)
    return float(loss_sum) / count, float(correct) / count


def _subset(split: Split, size: int | None, seed: int) -> Split:
    """A seeded, stratified subset of `size` images (the whole split when `size` is None or larger)."""
    if size is None or size >= len(split):
        return split
    _, chosen = stratified_split(split.labels, size / len(split), seed)
    return split.subset(chosen)


def train(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    on_epoch: Callable[[EpochMetrics, dict[str, Any]], None] | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` on `data` with `config`; returns a `TrainResult` (also when the loss diverges).

    `on_epoch(metrics, state)` runs after every epoch; `state` holds the model, optimizer, scheduler and
    RNG states, the epoch and the history, which `bsnas.train.rundir.save_checkpoint` writes and
    `resume=` (a loaded checkpoint) continues from. `on_batch` gets a `BatchReport` after each step.
    Under torchrun (`bsnas.train.distributed`) every rank trains its slice of each batch and only rank 0
    validates, tests and calls `on_epoch`/`on_batch`.
    """
    session = distributed.current()
    device = resolve_device(config.device)
    channels_last = config.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = _autocast_dtype(config, device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model.to(device=device, memory_format=memory_format)
    alpha = config.alpha if config.alpha is not None else float(getattr(model, "alpha", 0.0))
    use_reg = alpha > 0 and has_reg_loss(model)

    train_split = _subset(data.train, config.train_subset, config.seed)
    train_loader = BatchLoader(train_split, config.batch_size, data.mean, data.std, shuffle=True,
                               crop_padding=config.crop_padding, flip=config.flip, seed=config.seed, device=device,
                               channels_last=channels_last)
    val_split = _subset(data.val, config.val_subset, config.seed)
    val_loader = BatchLoader(val_split, config.eval_batch_size, data.mean, data.std, device=device,
                             channels_last=channels_last) if len(val_split) else None
    total_steps = config.epochs * len(train_loader)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
    result = TrainResult(status="completed", epochs=0, device=str(device))
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
        result.epochs = resume["epoch"]
        result.history = [EpochMetrics(**line) for line in resume["history"]]
        result.train_seconds = sum(line.seconds for line in result.history)
    net = session.wrap(model, device)

    for epoch in range(result.epochs, config.epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        for batch, (images, labels) in enumerate(train_loader.epoch(epoch), start=1):
            images, labels = session.shard(images), session.shard(labels)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                logits = net(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                if use_reg:
                    loss = loss + reg_loss(model, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            if batch % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(session.sum(loss_sum)):
                break
            if on_batch is not None and session.is_main:
                on_batch(BatchReport(epoch, batch, len(train_loader), seen, loss_sum, correct,
                                     time.perf_counter() - start))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        loss_sum, correct = session.sum(loss_sum), session.sum(correct)
        seen = int(session.sum(torch.tensor(seen, device=device)))
        if not torch.isfinite(loss_sum):
            result.status = "diverged"
            result.message = f"the training loss became NaN or inf in epoch {epoch + 1}; try a lower --lr."
            break
        val_loss = val_accuracy = None
        if session.is_main:
            if config.bn_recalibration:
                recalibrate_bn(model, train_loader.epoch(epoch), config.bn_recalibration, autocast)
            if val_loader:
                val_loss, val_accuracy = evaluate(model, val_loader, autocast)
        metrics = EpochMetrics(epoch + 1, optimizer.param_groups[0]["lr"], float(loss_sum) / seen,
                               float(correct) / seen, val_loss, val_accuracy, seconds, seen / seconds)
        result.history.append(metrics)
        result.epochs = epoch + 1
        result.train_seconds += seconds
        if on_epoch is not None and session.is_main:
            on_epoch(metrics, {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                "history": [dataclasses.asdict(line) for line in result.history],
            })
        session.barrier()  # the other ranks wait for rank 0's validation and checkpoint

    if result.history:
        result.val_accuracy = result.history[-1].val_accuracy
        images = sum(line.images_per_s * line.seconds for line in result.history)
        result.images_per_s = images / max(result.train_seconds, 1e-9)
    if config.final_test and result.status == "completed" and session.is_main:
        test_loader = BatchLoader(data.test, config.eval_batch_size, data.mean, data.std, device=device,
                                  channels_last=channels_last)
        result.test_loss, result.test_accuracy = evaluate(model, test_loader, autocast)
    return result
