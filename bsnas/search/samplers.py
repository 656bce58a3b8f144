"""Which Optuna sampler proposes a search's candidates (`SearchConfig.sampler_name`), seeded per worker."""

from __future__ import annotations

import optuna

from bsnas.search.config import SearchConfig
from bsnas.search.evolution import EvolutionSampler, best_per_bin
from bsnas.search.front import trial_number
from bsnas.train.config import MAX_SEED

__all__ = ["create_sampler"]


def create_sampler(config: SearchConfig, worker: int = 0,
                   rungs: list[optuna.Study] = ()) -> optuna.samplers.BaseSampler:
    """The sampler of `config` for worker `worker` (seed + 1000 * worker, modulo 2**32); evolution takes its parents
    from the `rungs` studies."""
    seed = (config.seed + 1000 * worker) % (MAX_SEED + 1)
    if config.sampler_name == "evolution":
        budget = config.objective_budget
        return EvolutionSampler(lambda: [trial_number(t) for t in best_per_bin(rungs, budget)] if rungs else [],
                                seed=seed)
    if config.sampler_name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population, seed=seed)
    if config.sampler_name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    return optuna.samplers.RandomSampler(seed=seed)
