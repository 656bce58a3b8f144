"""The trainer: one readable loop, every knob in `TrainConfig`, reports through callbacks.

`train(model, data, config)` trains on `data.train`, scores every epoch on `data.val` and, when
`config.final_test` is set, once on `data.test` at the end. It adds the model's orthonormal loss
(`bsnas.layers.reg_loss`) when the model has one, stops with status ``"diverged"`` on a NaN/inf loss,
and resumes exactly from a state produced by an earlier run (see `bsnas.checkpoint`). It knows
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
from torch.fx.experimental.optimization import fuse as fuse_conv_bn
from torch.fx.proxy import TraceError

from bsnas.data import BatchLoader, DataSplits, Split, stratified_split
from bsnas.errors import BsnasError
from bsnas.layers import has_reg_loss, reg_loss

__all__ = [
    "PRESETS",
    "BatchReport",
    "EpochMetrics",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fold_batchnorm",
    "lr_factor",
    "preset",
    "recalibrate_bn",
    "resolve_device",
    "train",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "linear", "constant")
AUTOCAST = ("auto", "off", "bf16")
DIVERGENCE_CHECK_EVERY = 16  # steps between finiteness checks of the running loss (one device sync each)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Defaults are the paper's CIFAR protocol (see `PRESETS`)."""

    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW beta1)
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"  # step | cosine | linear | constant, applied per step
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)  # step schedule: fractions of all steps
    gamma: float = 0.1  # step schedule: factor at each milestone
    warmup: float = 0.0  # fraction of all steps with a linear warm-up from 0
    label_smoothing: float = 0.0
    alpha: float | None = None  # orthonormal-loss weight; None uses the model's own `alpha` (0 if absent)
    seed: int = 0  # seeds the global torch RNG and every epoch's shuffle and augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # CPU threads (torch.set_num_threads); None keeps torch's default
    autocast: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 (no loss scaling needed)
    channels_last: bool = True  # measured 1.3-1.4x faster for MobileNets on a 2-core CPU; standard on CUDA
    train_subset: int | None = None  # train on a seeded stratified subset of this many images
    val_subset: int | None = None  # score on a seeded stratified subset of this many validation images
    bn_recalibration: int = 0  # before validating, re-estimate BatchNorm statistics on this many training images
    crop_padding: int = 4  # random crop after zero padding by this many pixels (0: no crop)
    flip: bool = True  # random horizontal flips
    eval_batch_size: int = 64  # BatchNorm folded, CPU: 1.9x the images/s of batch 128 for a MobileNetV2 (bench_train)
    final_test: bool = True  # score the test split once at the end (full training only)

    def __post_init__(self) -> None:
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("autocast", self.autocast, AUTOCAST)):
            if value not in allowed:
                raise BsnasError(f"TrainConfig.{name}: {value!r} is not one of {', '.join(allowed)}.")
        for name in ("epochs", "batch_size", "eval_batch_size", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise BsnasError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0 or not 0 <= self.warmup < 1 or self.crop_padding < 0:
            raise BsnasError("TrainConfig needs lr > 0, 0 <= warmup < 1 and crop_padding >= 0.")
        if self.bn_recalibration < 0:
            raise BsnasError(f"TrainConfig.bn_recalibration must be >= 0, got {self.bn_recalibration}.")
        for name in ("train_subset", "val_subset"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise BsnasError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples) for YAML, JSON and checkpoints."""
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are an error that names them."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise BsnasError(f"train config: unknown keys {', '.join(unknown)}.")
        data = dict(data)
        if "milestones" in data:
            data["milestones"] = tuple(data["milestones"])
        return cls(**data)


# The paper: SGD 0.9, lr 0.1, wd 1e-4, batch 128, x0.1 at 50/75/90 % of 200 epochs (100/150/180).
# The proxy: one epoch on 4000 training images (batch 32, no augmentation), BatchNorm statistics re-estimated
# on 512 training images, scored on 2000 validation images.
# Chosen on held-out Fashion-MNIST with `benchmarks/bench_train.py proxy-rank` (tables in the README): eight zoo
# models ranked against a 3-epoch reference training, Spearman 0.81/0.90/0.93 for three seeds, against
# 0.86/0.90/0.93 with 3000 validation images and 0.98/0.93/0.86 for 5000 training images (20 % more training);
# seed-to-seed differences of 2-5 points per model outweigh the validation sample (+-1 point at 2000 images).
# The earlier proxy of 10k images at batch 64 ranked 0.95 and took twice as long; at batch 64 a 5000-image proxy
# ranked worse (0.74, 0.88), and without the BatchNorm re-estimation its lagging running statistics scored two
# models at 51 % and 20 % (76 % and 70 % with it). lr 0.1 (0.05 and 0.2 ranked worse; 0.2 collapsed MobileNetV2);
# crop and flip cost 3-7 points of accuracy in a one-epoch run.
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "proxy": TrainConfig(
        epochs=1, batch_size=32, lr=0.1, nesterov=True, weight_decay=5e-5, schedule="linear", warmup=0.2,
        train_subset=4000, val_subset=2000, bn_recalibration=512, crop_padding=0, flip=False, final_test=False,
    ),
}


def preset(name: str, **changes: Any) -> TrainConfig:
    """The named preset (`paper` or `proxy`) with `changes` applied."""
    if name not in PRESETS:
        raise BsnasError(f"--preset {name!r} is not one of {', '.join(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **changes)


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
    """`auto` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BsnasError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BsnasError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu.")
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


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` (put in eval mode) with every BatchNorm that follows a convolution folded into it.

    Same outputs up to float rounding, one memory pass fewer per folded BatchNorm (`benchmarks/bench_train.py
    evaluate`). A model torch.fx cannot trace (control flow on tensor values) is returned as it is.
    """
    model.eval()
    try:
        return fuse_conv_bn(model)
    except (TraceError, RuntimeError, TypeError):  # what symbolic tracing raises on untraceable Python
        return model


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
    RNG states, the epoch and the history, which `bsnas.checkpoint.save_checkpoint` writes and
    `resume=` (a loaded checkpoint) continues from. `on_batch` gets a `BatchReport` after each step.
    """
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

    for epoch in range(result.epochs, config.epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        for batch, (images, labels) in enumerate(train_loader.epoch(epoch), start=1):
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                logits = model(images)
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
            if batch % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                break
            if on_batch is not None:
                on_batch(BatchReport(epoch, batch, len(train_loader), seen, loss_sum, correct,
                                     time.perf_counter() - start))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss_sum):
            result.status = "diverged"
            result.message = f"the training loss became NaN or inf in epoch {epoch + 1}; try a lower --lr."
            break
        if config.bn_recalibration:
            recalibrate_bn(model, train_loader.epoch(epoch), config.bn_recalibration, autocast)
        val_loss, val_accuracy = evaluate(model, val_loader, autocast) if val_loader else (None, None)
        metrics = EpochMetrics(epoch + 1, optimizer.param_groups[0]["lr"], float(loss_sum) / seen,
                               float(correct) / seen, val_loss, val_accuracy, seconds, seen / seconds)
        result.history.append(metrics)
        result.epochs = epoch + 1
        result.train_seconds += seconds
        if on_epoch is not None:
            on_epoch(metrics, {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                "history": [dataclasses.asdict(line) for line in result.history],
            })

    if result.history:
        result.val_accuracy = result.history[-1].val_accuracy
        images = sum(line.images_per_s * line.seconds for line in result.history)
        result.images_per_s = images / max(result.train_seconds, 1e-9)
    if config.final_test and result.status == "completed":
        test_loader = BatchLoader(data.test, config.eval_batch_size, data.mean, data.std, device=device,
                                  channels_last=channels_last)
        result.test_loss, result.test_accuracy = evaluate(model, test_loader, autocast)
    return result
