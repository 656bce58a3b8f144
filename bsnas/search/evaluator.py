"""What a candidate scores: proxy training (the `proxy` preset of `bsnas.train`) on the training split, scored
on the validation split; the test split is never touched by the search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bsnas.arch.spec import ArchSpec

__all__ = ["Evaluation", "ProxyEvaluator"]

@dataclass(frozen=True)
class Evaluation:
    """What training a candidate gave: validation accuracy in [0, 1] and seconds spent."""

    accuracy: float
    seconds: float = 0.0
    status: str = "completed"


_DATA_CACHE: dict[Any, Any] = {}


@dataclass(frozen=True)
class ProxyEvaluator:
    """Proxy training (the `proxy` preset of `bsnas.train`) on the training split, scored on validation.

    Picklable, so that worker processes get their own; the data load once per process.
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    epochs: int | None = None
    images: int | None = None
    device: str = "cpu"
    seed: int = 0
    val_images: int | None = None

    def data(self):
        """The dataset, loaded once per process."""
        from bsnas.train.data import DataConfig, load_data

        key = (self.dataset, self.data_root)
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = load_data(DataConfig(dataset=self.dataset, data_root=self.data_root))
        return _DATA_CACHE[key]

    def train_config(self):
        """The proxy preset with this evaluator's changes."""
        from bsnas.train.config import preset

        changes: dict[str, Any] = {"device": self.device, "seed": self.seed}
        for field_name, value in (("epochs", self.epochs), ("train_subset", self.images),
                                  ("val_subset", self.val_images)):
            if value is not None:
                changes[field_name] = value
        return preset("proxy", **changes)

    def __call__(self, spec: ArchSpec) -> Evaluation:
        from bsnas.nn.build import build_model
        from bsnas.train.loop import train

        result = train(build_model(spec), self.data(), self.train_config())
        accuracy = result.val_accuracy if result.status == "completed" and result.val_accuracy is not None else 0.0
        return Evaluation(float(accuracy), result.train_seconds, result.status)
