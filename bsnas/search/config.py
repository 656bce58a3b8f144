"""Every setting of a search in one `SearchConfig`; saved in the study so that workers and resumed runs agree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsnas.errors import BsnasError
from bsnas.search.budget import COST_KINDS, Budget

__all__ = ["SAMPLERS", "COST_UNITS", "SearchConfig"]

SAMPLERS = ("nsga2", "tpe", "random")
COST_UNITS = {"flops": ("MFLOPs", 1e-6), "params": ("Mparams", 1e-6), "latency": ("ms", 1.0)}


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; saved in the study so that a resumed run keeps them."""

    name: str
    space_file: str
    budgets: tuple[Budget, ...]
    objective: str = "flops"  # flops | latency | params
    sampler: str = "nsga2"
    trials: int | None = 60  # complete trials of the study (resuming continues up to this count)
    timeout: float | None = None  # seconds of this invocation
    storage: str | None = None  # Optuna RDB URL; default sqlite:///runs/<name>/study.db
    runs_dir: str = "runs"
    workers: int = 1
    seed: int = 0
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    proxy_epochs: int | None = None  # None keeps the proxy preset's
    proxy_images: int | None = None  # None keeps the proxy preset's train_subset
    proxy_val: int | None = None  # score on a stratified subset of this many validation images; None: all
    device: str = "cpu"
    warm_start: bool = True
    zoo_pattern: str | None = None  # regex: only these zoo models are enqueued
    population: int = 16  # NSGA-II population size
    threads: int | None = None  # torch threads per worker; None: cores // workers

    def __post_init__(self) -> None:
        if self.objective not in COST_KINDS:
            raise BsnasError(f"--objective {self.objective!r} is not one of {', '.join(COST_KINDS)}.")
        if self.sampler not in SAMPLERS:
            raise BsnasError(f"--sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}.")
        if self.trials is None and self.timeout is None:
            raise BsnasError("give --trials N or --timeout, or both.")
        if self.trials is not None and self.trials < 1:
            raise BsnasError(f"--trials must be at least 1, got {self.trials}.")
        if self.workers < 1:
            raise BsnasError(f"--workers must be at least 1, got {self.workers}.")
        for name in ("proxy_epochs", "proxy_images", "proxy_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BsnasError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.run_dir / 'study.db'}"

    def study_settings(self) -> dict[str, Any]:
        """What must stay the same when a study is resumed."""
        return {"budgets": [[b.kind, b.limit] for b in self.budgets], "objective": self.objective,
                "dataset": self.dataset}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["budgets"] = [[b.kind, b.limit] for b in self.budgets]
        return data


