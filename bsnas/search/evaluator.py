"""What a candidate scores: proxy training (the `proxy` preset of `bsnas.train`) on the training split, scored
on the validation split; the test split is never touched by the search.

Every evaluation is seeded (weights, data order): its score is a function of the spec, the seed, the data, the
torch threads and the torch version, and the trial records all of them. A training that diverges or runs out of
memory is an `Evaluation` with that status and the reason, never an exception that stops the worker.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from bsnas.arch.spec import ArchSpec
from bsnas.nn.build import build_model
from bsnas.train.config import preset
from bsnas.train.data import DataConfig, load_data
from bsnas.train.loop import train

if TYPE_CHECKING:
    from bsnas.search.config import SearchConfig

__all__ = ["Evaluation", "ProxyEvaluator"]


@dataclass(frozen=True)
class Evaluation:
    """What training a candidate gave: validation accuracy in [0, 1], seconds spent, status and why it failed."""

    accuracy: float
    seconds: float = 0.0
    status: str = "completed"  # completed | diverged | out_of_memory
    reason: str = ""


_DATA_CACHE: dict[Any, Any] = {}


@dataclass(frozen=True)
class ProxyEvaluator:
    """Proxy training (the `proxy` preset of `bsnas.train`) on the training split, scored on validation, at a rung
    of fidelity: rung r trains `eta`^r times longer than rung 0 (`rung_config`).

    Picklable, so that worker processes get their own; the data load once per process.
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    epochs: int | None = None  # rung 0's epochs (None: the preset's)
    images: int | None = None  # rung 0's training images (None: the preset's train_subset)
    device: str = "cpu"
    seed: int = 0
    val_images: int | None = None  # rung 0's validation images (None: the preset's val_subset)
    eta: int = 3  # each rung trains eta times longer than the one below
    augment: bool = False  # the final training's augmentation (the paper preset's crop and flip) at every rung

    @classmethod
    def for_search(cls, config: SearchConfig, seed: int | None = None) -> ProxyEvaluator:
        """The evaluator of a search's settings (`seed` overrides the search's, e.g. a training's recorded one)."""
        return cls(config.dataset, config.data_root, config.proxy_epochs, config.rung0_images, config.device,
                   config.seed if seed is None else seed, config.proxy_val, config.eta, config.rung_augment)

    def data(self):
        """The dataset, loaded once per process."""
        key = (self.dataset, self.data_root)
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = load_data(DataConfig(dataset=self.dataset, data_root=self.data_root))
        return _DATA_CACHE[key]

    def train_config(self, rung: int = 0):
        """The training of `rung`: the proxy preset (with this evaluator's changes) at rung 0; each rung above
        trains on `eta` times more images, and once they are all in use, for more epochs. Validation grows with
        the rung too (less noise where candidates are closer), up to the whole split."""
        data = self.data()
        base = preset("proxy", device=self.device, seed=self.seed,
                      **{name: value for name, value in (("epochs", self.epochs), ("train_subset", self.images),
                                                         ("val_subset", self.val_images)) if value is not None})
        available = len(data.train)
        images = min(available, (base.train_subset or available) * self.eta ** rung)
        passes = (base.train_subset or available) * base.epochs * self.eta ** rung
        epochs = max(base.epochs, round(passes / images))
        val = None if base.val_subset is None else min(len(data.val), base.val_subset * self.eta ** rung)
        if self.augment:
            final = preset("paper")
            base = dataclasses.replace(base, crop_padding=final.crop_padding, flip=final.flip)
        return dataclasses.replace(base, train_subset=images, epochs=epochs, val_subset=val)

    def __call__(self, spec: ArchSpec, rung: int = 0) -> Evaluation:
        return self.train_with(spec, self.train_config(rung))

    def train_with(self, spec: ArchSpec, config) -> Evaluation:
        """Train `spec` on this evaluator's data with `config` (seeded weights), scored on validation; running out
        of memory is an Evaluation with status out_of_memory, not an exception."""
        try:
            torch.manual_seed(config.seed)  # the initial weights, so that a trial can be reproduced
            result = train(build_model(spec), self.data(), config)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
            if not _out_of_memory(error):
                raise
            _free_memory()
            return Evaluation(0.0, 0.0, "out_of_memory", f"out of memory while training: {str(error).splitlines()[0]}")
        if result.status != "completed":
            return Evaluation(0.0, result.train_seconds, result.status, result.message)
        return Evaluation(float(result.val_accuracy or 0.0), result.train_seconds)


def _out_of_memory(error: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError that says it cannot allocate."""
    message = str(error)
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in message \
        or "out of memory" in message


def _free_memory() -> None:
    """Give back what a failed training held, so that the next candidate starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
