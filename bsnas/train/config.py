"""Every knob of a training run in one `TrainConfig`, and the named presets (`paper`, `proxy`).

Presets are data: `PRESETS` is the one place their numbers live; `describe_preset` turns them into the
sentences that help texts and the README show.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from bsnas.errors import BsnasError

__all__ = ["OPTIMIZERS", "SCHEDULES", "AUTOCAST", "DEVICES", "MAX_SEED", "PRESETS", "TrainConfig", "describe_preset",
           "is_device_name", "preset"]

MAX_SEED = 2**32 - 1  # numpy (under Optuna's samplers) takes seeds from 0 to 2**32 - 1
DEVICES = "auto, cpu, cuda, cuda:N"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "linear", "constant")
AUTOCAST = ("auto", "off", "bf16")


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
        if type(self.seed) is not int or not 0 <= self.seed <= MAX_SEED:
            raise BsnasError(f"TrainConfig.seed must be a whole number from 0 to {MAX_SEED}, got {self.seed!r}.")
        if not is_device_name(self.device):
            raise BsnasError(f"TrainConfig.device: {self.device!r} is not one of {DEVICES}.")
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


def is_device_name(name: object) -> bool:
    """Whether `name` is a device bsnas trains on: auto, cpu, cuda or cuda:N (whether it is here:
    `bsnas.train.loop.resolve_device`)."""
    return isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name) is not None


# The paper's CIFAR protocol, and the proxy of the search (how it was chosen: README, "How the proxy was chosen").
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "proxy": TrainConfig(
        epochs=1, batch_size=32, lr=0.1, nesterov=True, weight_decay=5e-5, schedule="linear", warmup=0.2,
        train_subset=4000, val_subset=2000, bn_recalibration=512, crop_padding=0, flip=False, final_test=False,
    ),
}


def describe_preset(name: str) -> str:
    """One sentence of what a preset does, made from its numbers (help texts and the README show it)."""
    config = PRESETS[name]
    images = f"{config.train_subset} training images" if config.train_subset else "the training split"
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    schedule = {"step": "x{gamma:g} at {steps} % of the steps".format(
        gamma=config.gamma, steps="/".join(f"{m * 100:g}" for m in config.milestones)),
        "linear": "linear decay", "cosine": "cosine decay", "constant": "constant"}[config.schedule]
    warmup = f"{config.warmup * 100:g} % warm-up, " if config.warmup else ""
    augment = (f"crop padding {config.crop_padding}" if config.crop_padding else "") + \
        (" + flip" if config.flip and config.crop_padding else "flip" if config.flip else "")
    scored = f"{config.val_subset} validation images" if config.val_subset else "the validation split"
    parts = [f"{epochs} on {images}", f"batch {config.batch_size}",
             f"{config.optimizer.upper()}{' Nesterov' if config.nesterov else ''} lr {config.lr:g}, {warmup}{schedule}",
             f"weight decay {config.weight_decay:g}", augment or "no augmentation"]
    if config.bn_recalibration:
        parts.append(f"BatchNorm re-estimated on {config.bn_recalibration} images")
    parts.append(f"scored on {scored}" + ("; test once at the end" if config.final_test else ""))
    return ", ".join(parts)


def preset(name: str, **changes: Any) -> TrainConfig:
    """The named preset (`paper` or `proxy`) with `changes` applied."""
    if name not in PRESETS:
        raise BsnasError(f"--preset {name!r} is not one of {', '.join(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **changes)

