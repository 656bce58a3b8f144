"""Every setting of a search in one `SearchConfig`; saved in the study so that workers and resumed runs agree."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsnas.errors import BsnasError
from bsnas.latency.table import load_table
from bsnas.search.budget import COST_KINDS, Budget, format_cost
from bsnas.search.rungs import RUNG_STUDY
from bsnas.search.storage import HEARTBEAT_S, redact_url
from bsnas.text import regex
from bsnas.train.config import MAX_SEED
from bsnas.train.loop import resolve_device
from bsnas.train.rundir import run_path

__all__ = ["DEFAULT_ETA", "DEFAULT_RUNGS", "DEFAULT_SPACE", "DEFAULT_TRIALS", "SAMPLERS", "COST_UNITS",
           "budget_on", "default_workers", "SETTINGS_BEFORE", "SearchConfig", "config_from_dict", "cost_value",
           "sampler_name", "setting_flag", "show_setting"]

SAMPLERS = ("auto", "nsga2", "evolution", "predictor", "tpe", "random")
# Settings that studies made before the setting existed do not hold, with the value those studies ran with.
SETTINGS_BEFORE = {"augment": False, "latency_table": False}
MULTI_FIDELITY_IMAGES = 1000  # rung 0's training images when --rungs > 1 and no --proxy-images (see the README)
DEFAULT_RUNGS, DEFAULT_ETA = 5, 3  # the ladder of `bsnas search` and `bsnas calibrate` (see the README)
DEFAULT_TRIALS = 50  # trials of a search given neither --trials nor --timeout
DEFAULT_SPACE = "mobilenet"
LATENCY_BACKENDS = ("torch", "onnxruntime")
COST_UNITS = {"flops": ("MFLOPs", 1e-6), "params": ("Mparams", 1e-6), "latency": ("ms", 1.0)}


def default_workers(device: str = "cpu") -> int:
    """One single-thread worker per CPU core on CPU; one worker on a GPU."""
    if device.startswith("cuda"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cost_value(kind: str, value: float) -> float:
    """The objective value of a cost: MFLOPs, Mparams or ms."""
    return value * COST_UNITS[kind][1]


def budget_on(budgets: tuple[Budget, ...], kind: str) -> float | None:
    """The budget on cost `kind` in its objective unit (MFLOPs, Mparams, ms); None without one."""
    return next((cost_value(b.kind, b.limit) for b in budgets if b.kind == kind), None)


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search. `storage` is the real URL (it may hold a password): it is never stored, and
    `to_dict` shows it redacted."""

    name: str
    budgets: tuple[Budget, ...]
    space_file: str = DEFAULT_SPACE  # a shipped space's name or a space file
    objective: str = "flops"  # flops | latency | params
    latency_backend: str = "torch"  # torch | onnxruntime: how a latency objective or budget is measured
    latency_table: str | None = None  # a `bsnas latency build` table of this machine: latency summed, not measured
    sampler: str = "auto"  # auto: nsga2 for a single-fidelity search, evolution with rungs (see `sampler_name`)
    trials: int | None = None  # trials of the study (a resumed study goes on to it); None: DEFAULT_TRIALS, or with a
    # timeout as many as it allows
    timeout: float | None = None  # seconds of this invocation: no trial starts after it
    storage: str | None = None  # Optuna RDB URL; default sqlite:///runs/<name>/study.db
    runs_dir: str = "runs"
    workers: int | None = None  # worker processes; None: `default_workers(device)`
    seed: int = 0  # seeds the sampler and every trial's training
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    proxy_epochs: int | None = None  # None keeps the proxy preset's
    proxy_images: int | None = None  # None keeps the proxy preset's train_subset
    proxy_val: int | None = None  # score on a stratified subset of this many validation images; None: the preset's
    device: str = "cpu"
    warm_start: bool = True
    zoo_pattern: str | None = None  # regex: only these zoo models are enqueued
    population: int = 16  # NSGA-II population size
    threads: int | None = None  # torch threads per worker; None: cores // workers
    heartbeat_s: int = HEARTBEAT_S  # seconds between a worker's heartbeats; a dead worker's trial is failed after four
    rungs: int = DEFAULT_RUNGS  # fidelity rungs: rung r trains eta**r times longer than rung 0 (1: single-fidelity)
    augment: bool | None = None  # rung trainings with the final training's crop and flip; None: with rungs > 1
    eta: int = DEFAULT_ETA  # the top 1/eta of a rung (per cost bin) is promoted to a rung eta times longer

    def __post_init__(self) -> None:
        run_path(self.runs_dir, self.name)  # a name that stays inside the runs folder
        if RUNG_STUDY.search(self.name):
            raise BsnasError(f"--name {self.name!r}: names ending in .rung<N> or .reference are the studies of a "
                             "search's rungs; give another --name.")
        if self.objective not in COST_KINDS:
            raise BsnasError(f"--objective {self.objective!r} is not one of {', '.join(COST_KINDS)}.")
        if self.latency_backend not in LATENCY_BACKENDS:
            raise BsnasError(f"--latency-backend {self.latency_backend!r} is not one of "
                             f"{', '.join(LATENCY_BACKENDS)}.")
        if self.latency_backend == "onnxruntime" and self.measures_latency:
            from bsnas.deploy.onnx import require_onnx

            require_onnx()
        if self.latency_table is not None:
            self._check_latency_table()
        if self.sampler not in SAMPLERS:
            raise BsnasError(f"--sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}.")
        if self.trials is None and self.timeout is None:
            object.__setattr__(self, "trials", DEFAULT_TRIALS)
        if self.workers is None:
            object.__setattr__(self, "workers", default_workers(self.device))
        limits = {"trials": (1, 10**6), "workers": (1, 256), "threads": (1, 1024), "population": (2, 10**4),
                  "proxy_epochs": (1, 10**4), "proxy_images": (1, 10**8), "proxy_val": (1, 10**8), "rungs": (1, 8),
                  "eta": (2, 10), "seed": (0, MAX_SEED)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not low <= value <= high):
                raise BsnasError(f"--{name.replace('_', '-')} must be a whole number from {low} to {high}, "
                                 f"got {value!r}.")
        resolve_device(self.device)  # auto, cpu, cuda or cuda:N, and a CUDA device only where torch sees one
        if self.augment not in (None, True, False):
            raise BsnasError(f"augment must be true, false or unset, got {self.augment!r}.")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise BsnasError(f"--timeout must be a positive duration, got {self.timeout!r}.")
        if type(self.heartbeat_s) is not int or not 1 <= self.heartbeat_s <= 3600:
            raise BsnasError(f"--heartbeat must be a whole number of seconds from 1 to 3600, got {self.heartbeat_s!r}.")
        if self.zoo_pattern is not None:
            regex(self.zoo_pattern, "--zoo")

    def _check_latency_table(self) -> None:
        """A table is for a search that costs latency, on the CPU, and must be of this machine, backend and (when
        --threads is given) threads; the workers check the threads they run with."""
        if not self.measures_latency:
            raise BsnasError("--latency-table is for a latency objective or budget: add --objective latency or a "
                             "--budget in ms.")
        if self.device.startswith("cuda"):
            raise BsnasError("--latency-table: tables are measured on the CPU; this search measures latency on "
                             f"{self.device}.")
        load_table(self.latency_table).check_key(self.latency_backend, self.threads)

    @property
    def sampler_name(self) -> str:
        """The sampler that runs (`sampler_name`)."""
        return sampler_name(self.sampler, self.rungs)

    @property
    def rung0_images(self) -> int | None:
        """Rung 0's training images: --proxy-images, else the proxy preset's for one rung (None) and
        `MULTI_FIDELITY_IMAGES` with several (the higher rungs train eta, eta**2, ... times as many)."""
        if self.proxy_images is not None or self.rungs == 1:
            return self.proxy_images
        return MULTI_FIDELITY_IMAGES

    @property
    def rung_augment(self) -> bool:
        """Whether the rung trainings use the final training's augmentation: --augment/--no-augment, else with
        several rungs (the calibration's choice: see the README) and not for the single-fidelity proxy."""
        return self.augment if self.augment is not None else self.rungs > 1

    @property
    def objective_budget(self) -> float | None:
        """The budget on the objective's cost, in the objective's unit (MFLOPs, Mparams, ms); None without one."""
        return budget_on(self.budgets, self.objective)

    @property
    def measures_latency(self) -> bool:
        """Whether candidates' latency is measured: the objective or a budget is latency."""
        return self.objective == "latency" or any(b.kind == "latency" for b in self.budgets)

    @property
    def run_dir(self) -> Path:
        return run_path(self.runs_dir, self.name)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.run_dir / 'study.db'}"

    def study_settings(self) -> dict[str, Any]:
        """What must stay the same when a study is resumed or joined: every setting a trial's result depends on."""
        return {"budgets": [[b.kind, b.limit] for b in self.budgets], "objective": self.objective,
                "latency_backend": self.latency_backend, "latency_table": self.latency_table is not None,
                "dataset": self.dataset, "seed": self.seed,
                "proxy_epochs": self.proxy_epochs,
                "proxy_images": self.proxy_images, "proxy_val": self.proxy_val, "rungs": self.rungs, "eta": self.eta,
                "augment": self.rung_augment}

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored (study attributes, runs/<RUN>/search.yaml): the storage URL without password."""
        data = dataclasses.asdict(self)
        data["budgets"] = [[b.kind, b.limit] for b in self.budgets]
        data["storage"] = None if self.storage is None else redact_url(self.storage)
        return data


def sampler_name(sampler: str, rungs: int) -> str:
    """The sampler that runs: `auto` is NSGA-II for one rung; with several, `evolution` (`bsnas.search.evolution`:
    random samples and mutations of the best trainings of every cost bin at the top rungs). NSGA-II would breed from
    the rung-0 front, which underrates large networks: the bias the rungs are there to correct."""
    if sampler != "auto":
        return sampler
    return "evolution" if rungs > 1 else "nsga2"


def config_from_dict(data: dict[str, Any], **changes: Any) -> SearchConfig:
    """The config a study stored (`to_dict`), with `changes` (e.g. this machine's storage URL and workers)."""
    known = {field.name for field in dataclasses.fields(SearchConfig)}
    values = {key: value for key, value in {**SETTINGS_BEFORE, **data}.items() if key in known}
    values["budgets"] = tuple(Budget(kind, limit) for kind, limit in values.get("budgets", []))
    values.update(changes)
    return SearchConfig(**values)


def setting_flag(key: str) -> str:
    """The flag of a study setting (`study_settings`): `budgets` is --budget, `proxy_images` --proxy-images."""
    return "--" + (key.rstrip("s") if key == "budgets" else key).replace("_", "-")


def show_setting(key: str, value: Any) -> str:
    """A study setting as its flag takes it: `20 MFLOPs, 4 ms` for budgets, on/off, `default` for None."""
    if key == "budgets":
        return ", ".join(format_cost(kind, limit) for kind, limit in value or []) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "default" if value is None else str(value)
