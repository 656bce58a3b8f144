"""The evolution sampler: parents are the best of every cost bin at the highest rung that holds one, a mutation
changes one to three of a parent's choices, zoo slots and searches without parents are untouched."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from test_multifidelity import RungTrainer

from bsnas.search.budget import parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.evolution import MAX_MUTATIONS, EvolutionSampler, best_per_bin
from bsnas.search.promotion import results
from bsnas.search.rungs import open_rung_study
from bsnas.search.study import load_record
from bsnas.search.workers import run_search


def _ticket(trial: int, accuracy: float, cost_m: float):
    return create_trial(state=TrialState.COMPLETE, values=[accuracy, cost_m],
                        user_attrs={"spec_hash": f"h{trial}", "status": "trained", "trial": trial})


def _rungs(tmp_path, count: int, file: str = "r.db"):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / file}")
    return [open_rung_study(storage, "s", rung) for rung in range(count)]


def test_parents_are_the_best_of_every_cost_bin_at_the_highest_rung_holding_one(tmp_path):
    rungs = _rungs(tmp_path, 3)
    # bins of 1..100 MFLOPs: [1, 3.2), [3.2, 10), [10, 32), [32, 100]
    for trial, accuracy, cost_m in ((0, 0.80, 1.0), (1, 0.79, 1.5), (2, 0.70, 2.0), (3, 0.78, 5.0), (4, 0.76, 6.0),
                                    (5, 0.75, 15.0), (6, 0.74, 40.0), (7, 0.73, 50.0), (8, 0.65, 80.0)):
        rungs[0].add_trial(_ticket(trial, accuracy, cost_m))
    # rung 1 reverses bin [1, 3.2) and holds the large ones; rung 2 holds one large net, the worse one of rung 1
    for trial, accuracy, cost_m in ((0, 0.84, 1.0), (1, 0.85, 1.5), (6, 0.88, 40.0), (7, 0.90, 50.0)):
        rungs[1].add_trial(_ticket(trial, accuracy, cost_m))
    rungs[2].add_trial(_ticket(6, 0.91, 40.0))
    parents = best_per_bin([results(study) for study in rungs], budget=100.0)
    # bin 0: rung 1 says 1; bin 1: only rung 0, 3; bin 2: only rung 0, 5; bin 3: rung 2 holds 6 (7 never got there)
    assert [t.user_attrs["trial"] for t in parents] == [1, 3, 5, 6]
    empty = _rungs(tmp_path, 2, "empty.db")
    assert best_per_bin([results(study) for study in empty], budget=100.0) == []  # no result yet: no parent


def _parent_study(space, seed: int = 3):
    """A study whose trial 0 is a random point of the space (complete), to mutate."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    space.sample(trial)
    study.tell(trial, [0.9, 1.0])
    return study


@pytest.mark.parametrize("seed", range(8))
def test_a_mutation_changes_one_to_three_of_the_parents_choices(space, seed):
    study = _parent_study(space, seed)
    parent = study.trials[0].params
    study.sampler = EvolutionSampler(lambda: [0], rate=1.0, seed=seed)
    trial = study.ask()
    space.sample(trial)
    number, mutated = study.sampler.lineage(trial.number)
    changed = {name for name in parent if name in trial.params and trial.params[name] != parent[name]}
    assert number == 0 and 1 <= len(mutated) <= MAX_MUTATIONS
    assert changed and changed <= set(mutated)  # a mutated field whose new value hides another may not appear
    assert all(trial.params[name] == parent[name] for name in parent if name in trial.params and name not in mutated)


def test_without_parents_or_with_rate_zero_it_samples_as_the_random_sampler(space):
    def draw(sampler):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        trial = study.ask()
        space.sample(trial)
        return trial.params

    random_params = draw(optuna.samplers.RandomSampler(seed=5))
    assert draw(EvolutionSampler(lambda: [], rate=1.0, seed=5)) == random_params
    assert draw(EvolutionSampler(lambda: [0], rate=0.0, seed=5)) == random_params


def test_zoo_slots_keep_their_fixed_choices(space):
    study = _parent_study(space)
    fixed = _parent_study(space, seed=11).trials[0].params
    study.sampler = EvolutionSampler(lambda: [0], rate=1.0, seed=0)
    study.enqueue_trial(fixed)
    trial = study.ask()
    space.sample(trial)
    assert trial.params == fixed and study.sampler.lineage(trial.number) is None


def test_a_multi_fidelity_search_mutates_trained_parents_and_records_them(tmp_path, space):
    config = SearchConfig(name="ev", space_file="mobilenet", budgets=(parse_budget("3MFLOPs"),), trials=30,
                          runs_dir=str(tmp_path), dataset="synthetic", warm_start=False, threads=1, rungs=2, eta=3,
                          workers=1)
    assert config.sampler_name == "evolution"
    assert run_search(config, space, evaluate=RungTrainer()).ok
    trials = {t.number: t for t in load_record("ev", config.storage_url).study.trials}
    children = [t for t in trials.values() if "parent" in t.user_attrs]
    assert children  # half the samples once rung 0 holds results
    for child in children:
        parent = trials[child.user_attrs["parent"]]
        assert parent.user_attrs["status"] == "trained" and parent.number < child.number
        assert 1 <= len(child.user_attrs["mutated"].split()) <= MAX_MUTATIONS
