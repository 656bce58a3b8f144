"""The study of a search: create or resume it in its storage, enqueue the zoo warm start, count its trials.

The study's user attributes hold the search settings (`config`) and the space (`space`), so that `bsnas
report/export/retrain` and joining workers need only the storage.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models, zoo_family
from bsnas.errors import BsnasError
from bsnas.search.budget import Budget
from bsnas.search.candidate import over_budget
from bsnas.search.config import COST_UNITS, SearchConfig
from bsnas.search.storage import open_storage
from bsnas.space.decode import SearchSpace
from bsnas.space.invert import params_of

__all__ = ["create_study", "load_study", "enqueue_zoo", "count_trials"]


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


def enqueue_zoo(study: optuna.Study, space: SearchSpace, budgets: tuple[Budget, ...],
                pattern: str | None = None) -> list[str]:
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
        spec = get_spec(name, space.num_classes, space.in_channels, space.image_size)
        flops, n_params = cost(spec)
        if over_budget({"flops": flops, "params": n_params}, static):
            continue
        params = params_of(space, spec)
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


