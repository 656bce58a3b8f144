"""The search: an Optuna study over a `SearchSpace` with cost budgets, proxy training and a Pareto front.

One trial samples an ArchSpec, counts its FLOPs and parameters from the spec (`budget.spec_cost`,
microseconds), shrinks its width multiplier into the FLOPs/parameter budgets when the space allows, measures
latency only when a latency budget or objective asks for it, and sets one Optuna constraint per budget
(`trial.set_constraint`; <= 0 is feasible). An infeasible candidate is completed with accuracy 0 and its
cost and is never trained; the samplers still learn from it. A feasible one is trained with the proxy
preset on the training split and scored on the validation split, unless a trial of the study already holds
the same architecture (same `spec_hash`), whose result is reused. The objectives are validation accuracy
(maximize) and the cost (minimize: MFLOPs, Mparams or ms).

Everything a later step needs sits in the trial's user attributes: `spec` (the ArchSpec as JSON),
`spec_hash`, `flops`, `params`, `latency_ms`, `status` (trained | duplicate | infeasible), `reason`,
`zoo` (warm-start trials), `val_accuracy`, `train_seconds`. The study's user attributes hold the search
settings (`config`) and the space (`space`), so `bsnas report/export/retrain` need only the storage.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.budget import COST_KINDS, Budget, format_cost, spec_cost
from bsnas.errors import BsnasError
from bsnas.space import SearchSpace, space_from_dict
from bsnas.spec import ArchSpec, spec_hash, spec_to_dict
from bsnas.storage import commit_trial, open_storage
from bsnas.zoo import get_spec, list_models, zoo_family

__all__ = [
    "SAMPLERS",
    "SearchConfig",
    "Evaluation",
    "ProxyEvaluator",
    "Candidate",
    "measure_candidate",
    "make_objective",
    "create_study",
    "load_study",
    "enqueue_zoo",
    "run_search",
    "default_workers",
]

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


# ---------------------------------------------------------------------------------------------- evaluation


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
        from bsnas.data import DataConfig, load_data

        key = (self.dataset, self.data_root)
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = load_data(DataConfig(dataset=self.dataset, data_root=self.data_root))
        return _DATA_CACHE[key]

    def train_config(self):
        from bsnas.train import preset

        changes: dict[str, Any] = {"device": self.device, "seed": self.seed}
        for field_name, value in (("epochs", self.epochs), ("train_subset", self.images),
                                  ("val_subset", self.val_images)):
            if value is not None:
                changes[field_name] = value
        return preset("proxy", **changes)

    def __call__(self, spec: ArchSpec) -> Evaluation:
        from bsnas.build import build_model
        from bsnas.train import train

        result = train(build_model(spec), self.data(), self.train_config())
        accuracy = result.val_accuracy if result.status == "completed" and result.val_accuracy is not None else 0.0
        return Evaluation(float(accuracy), result.train_seconds, result.status)


def data_shape(dataset: str, data_root: str | None = None) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a dataset, loading it when its shape is not known in advance."""
    if dataset == "fashion-mnist":
        return (1, 28, 28), 10
    data = ProxyEvaluator(dataset, data_root).data()
    return (data.in_channels, data.image_size, data.image_size), data.num_classes


# ------------------------------------------------------------------------------------------------ candidates


@dataclass
class Candidate:
    """A sampled architecture with its costs; `reason` says why it is infeasible (empty when feasible)."""

    spec: ArchSpec
    flops: int
    params: int
    latency_ms: float | None = None
    width_multiplier: Any = None  # the width it was shrunk to, None when not shrunk
    reason: str = ""

    def cost(self, kind: str) -> float | None:
        return {"flops": self.flops, "params": self.params, "latency": self.latency_ms}[kind]

    @property
    def feasible(self) -> bool:
        return not self.reason


def _over(candidate_costs: dict[str, float | None], budgets: tuple[Budget, ...]) -> str:
    reasons = [f"{b.kind} {format_cost(b.kind, candidate_costs[b.kind])} > {b}" for b in budgets
               if candidate_costs.get(b.kind) is not None and candidate_costs[b.kind] > b.limit]
    return "; ".join(reasons)


def measure_latency_ms(spec: ArchSpec, input_size: tuple[int, int, int], device: str = "cpu") -> float:
    """Median forward time of one image (batch 1, eval mode) with this process's torch threads."""
    import torch

    from bsnas.build import build_model
    from bsnas.profile import measure_latency

    model = build_model(spec)
    result = measure_latency(model, input_size, 1, device if device != "auto" else "cpu",
                             threads=torch.get_num_threads(), warmup=3, repeats=15)
    return result.median_ms


def measure_candidate(space: SearchSpace, spec: ArchSpec, params: dict[str, Any], budgets: tuple[Budget, ...],
                      input_size: tuple[int, int, int], need_latency: bool = False, device: str = "cpu",
                      fit: bool = True) -> Candidate:
    """Cost the spec; shrink its width into the FLOPs/parameter budgets when `fit` and the space allows it."""
    flops, n_params = spec_cost(spec, input_size)
    static = tuple(b for b in budgets if b.kind != "latency")
    candidate = Candidate(spec, flops, n_params)
    if _over({"flops": flops, "params": n_params}, static) and fit:
        widths = space.model["width_multiplier"]
        sampled = params.get("width_multiplier", widths.values[0] if widths.values else None)
        if widths.values is not None and len(widths.values) > 1:
            smaller = sorted((w for w in widths.values if w < sampled), reverse=True)
            for width in smaller:
                shrunk = space.spec_from_params(params, width_multiplier=width)
                flops, n_params = spec_cost(shrunk, input_size)
                if not _over({"flops": flops, "params": n_params}, static):
                    candidate = Candidate(shrunk, flops, n_params, width_multiplier=width)
                    break
    candidate.reason = _over({"flops": candidate.flops, "params": candidate.params}, static)
    if not candidate.reason and need_latency:
        candidate.latency_ms = measure_latency_ms(candidate.spec, input_size, device)
        candidate.reason = _over({"latency": candidate.latency_ms}, budgets)
    return candidate


def cost_value(kind: str, value: float) -> float:
    """The objective value of a cost: MFLOPs, Mparams or ms."""
    return value * COST_UNITS[kind][1]


# ------------------------------------------------------------------------------------------------- objective


def make_objective(space: SearchSpace, budgets: tuple[Budget, ...], objective: str,
                   evaluate: Callable[[ArchSpec], Evaluation], input_size: tuple[int, int, int],
                   device: str = "cpu", wait_s: float = 1.0) -> Callable[[optuna.Trial], tuple[float, float]]:
    """The Optuna objective: (validation accuracy, cost). `evaluate` trains a feasible, new architecture."""
    need_latency = objective == "latency" or any(b.kind == "latency" for b in budgets)

    def run(trial: optuna.Trial) -> tuple[float, float]:
        start = time.perf_counter()
        spec = space.sample(trial)
        candidate = measure_candidate(space, spec, trial.params, budgets, input_size, need_latency, device)
        zoo = trial.user_attrs.get("zoo")
        name = zoo if zoo and candidate.width_multiplier is None else f"{space.name}_t{trial.number}"
        spec = dataclasses.replace(candidate.spec, name=name)
        digest = spec_hash(spec)
        attrs = {"spec": json.dumps(spec_to_dict(spec)), "spec_hash": digest, "flops": candidate.flops,
                 "params": candidate.params, "latency_ms": candidate.latency_ms, "reason": candidate.reason,
                 "width_fit": None if candidate.width_multiplier is None else float(candidate.width_multiplier)}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for budget in budgets:
            value = candidate.cost(budget.kind)
            trial.set_constraint(budget.kind, budget.violation(value) if value is not None else 0.0)
        cost = candidate.cost(objective)
        # the latency of a candidate already over a FLOPs/params budget is not measured: it gets the worst cost
        cost = 1e12 if cost is None else cost_value(objective, cost)
        if not candidate.feasible:
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("check_ms", (time.perf_counter() - start) * 1000)
            return 0.0, cost
        duplicate = _find_duplicate(trial.study, digest, trial.number, wait_s)
        if duplicate is not None:
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("duplicate_of", duplicate.number)
            trial.set_user_attr("val_accuracy", duplicate.values[0])
            return duplicate.values[0], cost
        trial.set_user_attr("status", "training")
        commit_trial(trial)  # other workers see this candidate in training (duplicates wait for it)
        result = evaluate(spec)
        trial.set_user_attr("status", "trained" if result.status == "completed" else result.status)
        trial.set_user_attr("val_accuracy", result.accuracy)
        trial.set_user_attr("train_seconds", result.seconds)
        return result.accuracy, cost

    return run


_EVALUATED = ("trained", "duplicate", "diverged")


def _find_duplicate(study: optuna.Study, digest: str, number: int, wait_s: float) -> FrozenTrial | None:
    """A finished trial of the same architecture; waits for one still training in another worker."""
    while True:
        running = False
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number == number or other.user_attrs.get("spec_hash") != digest:
                continue
            if other.state == TrialState.COMPLETE and other.user_attrs.get("status") in _EVALUATED:
                return other
            if other.state == TrialState.RUNNING and other.user_attrs.get("status") == "training" \
                    and other.number < number:
                running = True
        if not running:
            return None
        time.sleep(wait_s)


# --------------------------------------------------------------------------------------------------- studies


def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _sampler(config: SearchConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = config.seed + 1000 * worker
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)


def create_study(config: SearchConfig, space: SearchSpace, worker: int = 0) -> optuna.Study:
    """Create or load the study `config.name` in its storage; a resumed study must keep its settings."""
    _quiet_optuna()
    if config.storage is None:
        config.run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(config.storage_url)
    study = optuna.create_study(study_name=config.name, storage=storage, sampler=_sampler(config, worker),
                                directions=["maximize", "minimize"], load_if_exists=True)
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_metric_names(["val_accuracy", COST_UNITS[config.objective][0]])
        study.set_user_attr("settings", config.study_settings())
        study.set_user_attr("config", config.to_dict())
        study.set_user_attr("space", space.raw)
    elif saved != config.study_settings():
        raise BsnasError(f"study {config.name!r} in {config.storage_url} was created with {saved}; resume it with "
                         "the same --budget, --objective and --dataset, or give a new --name.")
    elif study.user_attrs.get("space") != space.raw:
        raise BsnasError(f"study {config.name!r} was created with another search space than {config.space_file}; "
                         "resume it with the same --space or give a new --name.")
    return study


def load_study(name: str, storage: str | None = None, runs_dir: str = "runs") -> optuna.Study:
    """Open an existing study for reports (`runs/<name>/study.db` unless `storage` is given)."""
    _quiet_optuna()
    url = storage or f"sqlite:///{Path(runs_dir) / name / 'study.db'}"
    if storage is None and not (Path(runs_dir) / name / "study.db").exists():
        raise BsnasError(f"{Path(runs_dir) / name / 'study.db'} does not exist; run `bsnas search --name {name}` "
                         "first or pass --storage.")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise BsnasError(f"no study named {name!r} in {url}.") from None


def study_space(study: optuna.Study, source: str = "study") -> SearchSpace:
    """The search space saved in a study."""
    raw = study.user_attrs.get("space")
    if raw is None:
        raise BsnasError(f"study {study.study_name!r} holds no bsnas search space; it was not made by bsnas search.")
    return space_from_dict(raw, source=source)


def study_config(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs.get("config", {}))


def enqueue_zoo(study: optuna.Study, space: SearchSpace, budgets: tuple[Budget, ...],
                input_size: tuple[int, int, int], pattern: str | None = None) -> list[str]:
    """Enqueue the zoo models of the space's family that are points of the space and fit the FLOPs/params budgets.

    Models already in the study (from an earlier run) are not enqueued again. Returns the names enqueued.
    """
    if space.family is None:
        return []
    done = {t.user_attrs.get("zoo") for t in study.get_trials(deepcopy=False)}
    static = tuple(b for b in budgets if b.kind != "latency")
    names = []
    for name in list_models("^cifar_"):
        if zoo_family(name) != space.family or name in done or (pattern and not re.search(pattern, name)):
            continue
        spec = get_spec(name, space.num_classes, space.in_channels)
        flops, n_params = spec_cost(spec, input_size)
        if _over({"flops": flops, "params": n_params}, static):
            continue
        params = space.params_of(spec)
        if params is None:
            continue
        names.append((flops, name, params))
    names.sort()
    for _, name, params in names:
        study.enqueue_trial(params, user_attrs={"zoo": name}, skip_if_exists=False)
    return [name for _, name, _ in names]


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state, plus `feasible`, `trained` and `duplicate` counts of the complete ones."""
    counts = {"complete": 0, "running": 0, "waiting": 0, "fail": 0, "feasible": 0, "trained": 0, "duplicate": 0}
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
        if trial.state == TrialState.COMPLETE:
            status = trial.user_attrs.get("status")
            counts["feasible"] += status != "infeasible"
            counts["trained"] += status == "trained"
            counts["duplicate"] += status == "duplicate"
    return counts


# ----------------------------------------------------------------------------------------------------- runs


def default_workers(device: str = "cpu") -> int:
    """One single-thread worker per CPU core on CPU; one worker on a GPU."""
    if device.startswith("cuda"):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _StopAt:
    """Stop a worker once the study holds `trials` complete trials (counting the ones still running)."""

    def __init__(self, trials: int | None):
        self.trials = trials

    def reached(self, study: optuna.Study, running_self: int = 0) -> bool:
        if self.trials is None:
            return False
        counts = count_trials(study)
        return counts["complete"] + counts["running"] - running_self >= self.trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.reached(study):
            study.stop()


@dataclass
class SearchResult:
    """How a search invocation ended."""

    study: optuna.Study
    enqueued: list[str] = field(default_factory=list)
    failed_workers: int = 0
    seconds: float = 0.0


def _worker(config: SearchConfig, space_raw: dict, shape: tuple, worker: int, threads: int | None,
            evaluate: Callable[[ArchSpec], Evaluation] | None = None,
            callbacks: tuple = ()) -> None:
    """One worker: optimize the shared study until the trial count or the timeout is reached."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    (input_size, classes) = shape
    space = space_from_dict(space_raw, source=config.space_file).for_data(input_size[0], classes)
    study = create_study(config, space, worker)
    if evaluate is None:
        evaluate = ProxyEvaluator(config.dataset, config.data_root, config.proxy_epochs, config.proxy_images,
                                  config.device, config.seed, config.proxy_val)
    objective = make_objective(space, config.budgets, config.objective, evaluate, input_size, config.device)
    stop = _StopAt(config.trials)
    if stop.reached(study):
        return
    study.optimize(objective, timeout=config.timeout, callbacks=[stop, *callbacks], catch=(RuntimeError,),
                   gc_after_trial=False)


def _worker_main(config: SearchConfig, space_raw: dict, input_size, worker: int, threads: int | None) -> None:
    try:
        _worker(config, space_raw, input_size, worker, threads)
    except KeyboardInterrupt:
        pass


def run_search(config: SearchConfig, space: SearchSpace, evaluate: Callable[[ArchSpec], Evaluation] | None = None,
               on_update: Callable[[optuna.Study], None] | None = None, poll_s: float = 2.0) -> SearchResult:
    """Run (or resume) the search of `config` over `space`; returns when the trial count or timeout is reached.

    With one worker the trials run in this process (and `evaluate` may be any callable); with more,
    `config.workers` processes share the storage, each with cores/workers torch threads.
    """
    if evaluate is not None and config.workers > 1:
        raise ValueError("an injected `evaluate` runs in this process only; use workers=1")
    start = time.perf_counter()
    input_size, classes = data_shape(config.dataset, config.data_root)
    space = space.for_data(input_size[0], classes)
    _check_space_fits(space, config.budgets, input_size)
    study = create_study(config, space)
    enqueued = []
    if config.warm_start:
        enqueued = enqueue_zoo(study, space, config.budgets, input_size, config.zoo_pattern)
    shape = (input_size, classes)
    threads = config.threads or max(1, default_workers("cpu") // config.workers)
    if config.workers == 1:
        import torch

        callbacks = (lambda s, t: on_update(s),) if on_update else ()
        if on_update:
            on_update(study)
        previous = torch.get_num_threads()
        try:
            _worker(config, space.raw, shape, 0, threads, evaluate, callbacks)
        finally:
            torch.set_num_threads(previous)
        return SearchResult(study, enqueued, 0, time.perf_counter() - start)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(config, space.raw, shape, index, threads),
                                 name=f"bsnas-worker-{index}") for index in range(config.workers)]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            if on_update:
                on_update(study)
            for process in processes:
                process.join(timeout=poll_s / len(processes))
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=10)
        raise
    failed = sum(process.exitcode not in (0, None) for process in processes)
    if on_update:
        on_update(study)
    return SearchResult(study, enqueued, failed, time.perf_counter() - start)


def _check_space_fits(space: SearchSpace, budgets: tuple[Budget, ...], input_size: tuple[int, int, int]) -> None:
    """Fail early when even the space's smallest point is over a FLOPs or parameter budget."""
    static = tuple(b for b in budgets if b.kind != "latency")
    if not static:
        return
    smallest = space.corner_spec(largest=False)
    flops, n_params = spec_cost(smallest, input_size)
    reason = _over({"flops": flops, "params": n_params}, static)
    if reason:
        raise BsnasError(f"{space.source}: even the smallest point of the space is over the budget ({reason}) at "
                         f"input {'x'.join(map(str, input_size))}; raise the budget or shrink the space.")
