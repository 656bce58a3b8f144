"""Which Optuna sampler proposes a search's candidates (`SearchConfig.sampler_name`), seeded per worker, and what a
sampler says of each trial it proposed."""

from __future__ import annotations

from typing import Any

import optuna

from bsnas.search.config import SearchConfig
from bsnas.search.evolution import EvolutionSampler, PlanningSampler, best_per_bin
from bsnas.search.front import trial_number
from bsnas.search.guided import PredictorSampler
from bsnas.search.promotion import results
from bsnas.space.decode import SearchSpace
from bsnas.train.config import MAX_SEED

__all__ = ["create_sampler", "sampler_attrs"]


def create_sampler(config: SearchConfig, space: SearchSpace, worker: int = 0,
                   rungs: list[optuna.Study] = ()) -> optuna.samplers.BaseSampler:
    """The sampler of `config` for worker `worker` (seed + 1000 * worker, modulo 2**32); evolution takes its parents
    from the `rungs` studies. The predictor's choice depends on the search's seed alone (every worker proposes the
    same for the same trial and storage); its evolution fallback, on the worker's seed."""
    seed = (config.seed + 1000 * worker) % (MAX_SEED + 1)
    if config.sampler_name == "predictor":
        return PredictorSampler(space, config.budgets, config.objective, list(rungs), seed=config.seed,
                                worker_seed=seed)
    if config.sampler_name == "evolution":
        budget = config.objective_budget
        return EvolutionSampler(lambda: [trial_number(t) for t in best_per_bin([results(s) for s in rungs], budget)],
                                seed=seed)
    if config.sampler_name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler_name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)


def sampler_attrs(sampler: optuna.samplers.BaseSampler, number: int) -> dict[str, Any]:
    """What `sampler` says of how it proposed trial `number` (the trial's user attributes to set); Optuna's own
    samplers say nothing."""
    return sampler.trial_attrs(number) if isinstance(sampler, PlanningSampler) else {}
