"""The performance predictor and the sampler it guides: it learns a known function of the encoding, is deterministic,
the acquisition picks the best proposal of a bin, proposals are new and within the budget, every worker and a resumed
search propose the same, and it falls back to evolution (saying so) until rung 0 holds enough trainings."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import optuna
import pytest
from test_multifidelity import RungTrainer

from bsnas.arch.cost import cost
from bsnas.arch.spec import spec_hash
from bsnas.arch.validate import spec_from_dict
from bsnas.cli import main
from bsnas.report.tables import sampler_line
from bsnas.report.trials import write_trials_csv
from bsnas.search.budget import parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.front import SearchRecord
from bsnas.search.guided import MIN_RESULTS, PredictorSampler, mutate, pick_in_bin
from bsnas.search.predictor import Predictor, Training, features
from bsnas.search.promotion import bin_edges
from bsnas.search.ranking import spearman_rho
from bsnas.search.rungs import open_rung_study
from bsnas.search.samplers import create_sampler
from bsnas.search.study import load_record
from bsnas.search.workers import run_search


def _points(space, count: int, seed: int = 0):
    rng = random.Random(seed)
    specs = {}
    while len(specs) < count:
        spec, _ = space.random_spec(rng)
        if cost(spec).flops < 60e6:
            specs[spec_hash(spec)] = spec
    return specs


def _known(spec, rung: int) -> float:
    """A function of the architecture that the encoding holds: depth, width and operators, raised per rung."""
    row = features(spec)
    return 0.5 + 0.02 * row[-7] + 0.01 * rung * row[-8] - 0.03 * sum(b.op == "dsc" for b in spec.blocks)


def test_the_encoding_has_one_length_for_every_point_and_reads_the_plan(space):
    specs = list(_points(space, 30).values())
    lengths = {len(features(spec)) for spec in specs}
    assert len(lengths) == 1
    spec = specs[0]
    assert features(spec)[-7] == len(spec.blocks)  # depth
    assert features(spec)[-9] == pytest.approx(np.log1p(cost(spec).flops))  # FLOPs of the whole plan


def test_it_learns_a_known_function_of_the_encoding_and_is_deterministic(space):
    specs = _points(space, 260)
    keys = list(specs)
    seen, unseen = keys[:200], keys[200:]
    trainings = [Training(key, rung, _known(specs[key], rung)) for key in seen for rung in (0, 1)]
    predictor = Predictor(seed=0).fit(trainings, specs)
    encoded = [predictor.encode(key, specs[key]) for key in unseen]
    mean, spread = predictor.predict(encoded, [0, 1])
    assert mean.shape == spread.shape == (2, len(unseen))
    assert spearman_rho(list(mean[1]), [_known(specs[key], 1) for key in unseen]) > 0.9
    assert (spread >= 0).all() and spread.max() > 0
    again = Predictor(seed=0).fit(trainings, specs).predict(encoded, [0, 1])
    assert np.array_equal(mean, again[0]) and np.array_equal(spread, again[1])
    # the ensemble's mean is the forest's own prediction
    rows = np.array([[*row, 1.0] for row in encoded], dtype=np.float32)
    assert np.allclose(mean[1], predictor.model.predict(rows), atol=1e-6)


def test_the_acquisition_picks_the_best_proposal_of_the_bin_in_turn():
    edges = bin_edges(1.0, 100.0)  # [1, 3.2), [3.2, 10), [10, 32), [32, 100]
    scored = [{"order": 0, "cost": 2.0, "acquisition": 0.95}, {"order": 1, "cost": 5.0, "acquisition": 0.80},
              {"order": 2, "cost": 6.0, "acquisition": 0.85}, {"order": 3, "cost": 8.0, "acquisition": 0.85},
              {"order": 4, "cost": 50.0, "acquisition": 0.70}]
    assert pick_in_bin(scored, edges, 1) == (scored[2], 1)  # the best of bin 1; a tie goes to the earlier
    assert pick_in_bin(scored, edges, 0) == (scored[0], 0)
    assert pick_in_bin(scored, edges, 3) == (scored[4], 3)
    assert pick_in_bin(scored, edges, 2) == (scored[2], 1)  # bin 2 is empty: the nearer cheaper bin


@pytest.mark.parametrize("seed", range(6))
def test_a_mutation_changes_choices_the_network_reads(space, seed):
    rng = random.Random(seed)
    _, parent = space.random_spec(rng)
    spec, child, mutated = mutate(space, parent, rng)
    assert 1 <= len(mutated) <= 3
    read = set()
    space.decode(lambda name, choice, hint: read.add(name) or parent[name])
    assert set(mutated) <= read  # only fields the parent's network reads
    assert any(child.get(name) != parent[name] for name in mutated)
    assert space.spec_from_params(child) == spec  # the child is a whole point, and the spec it makes


def _config(tmp_path, **changes):
    values = dict(name="pr", space_file="mobilenet", budgets=(parse_budget("3MFLOPs"),), trials=MIN_RESULTS + 12,
                  runs_dir=str(tmp_path), dataset="synthetic", warm_start=False, threads=1, sampler="predictor",
                  rungs=2, eta=3, workers=1)
    values.update(changes)
    return SearchConfig(**values)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, space):
    """A predictor-guided search with an injected training: (config, trainer, trials)."""
    config = _config(tmp_path_factory.mktemp("guided"))
    trainer = RungTrainer()
    assert run_search(config, space, evaluate=trainer).ok
    return config, trainer, load_record("pr", config.storage_url).study.trials


def test_it_falls_back_to_evolution_until_rung_0_holds_enough_and_says_so(searched):
    _, _, trials = searched
    said = [t.user_attrs["sampler"] for t in trials]
    first = said.index("predictor")
    assert first >= MIN_RESULTS and all(s.startswith("evolution (the predictor waits") for s in said[:first])
    assert all(s == "predictor" for s in said[first:])


def test_its_candidates_are_new_within_the_budget_and_record_the_prediction(searched):
    config, trainer, trials = searched
    assert len(trainer.trained) == len(set(trainer.trained))  # nothing trained twice
    guided = [t for t in trials if t.user_attrs["sampler"] == "predictor"]
    assert len(guided) >= 6
    earlier = set()
    for trial in sorted(trials, key=lambda t: t.number):
        attrs = trial.user_attrs
        if attrs["sampler"] == "predictor":
            assert attrs["status"] == "trained" and attrs["flops"] <= config.budgets[0].limit
            assert attrs["spec_hash"] not in earlier  # never a network sampled before
            assert 0 < attrs["predicted_accuracy"] < 1 and attrs["predicted_spread"] >= 0
            assert len(attrs["predicted_rungs"]) == config.rungs and attrs["proposals"] > 0
        earlier.add(attrs["spec_hash"])
    assert {t.user_attrs["cost_bin"] for t in guided} == {0, 1, 2, 3}  # the bins taken in turn


def test_every_worker_and_a_resumed_search_propose_the_same(searched, space, tmp_path):
    """Two samplers (two workers, or the same worker after a restart) on the same storage propose the same point for
    the same trial: the choice depends on the storage, the search seed and the trial number only."""
    config, _, trials = searched
    made = spec_from_dict(json.loads(trials[-1].user_attrs["spec"]))
    fitted_space = space.for_data(made.in_channels, made.image_size, made.num_classes)
    storage = optuna.storages.RDBStorage(config.storage_url)
    rungs = [open_rung_study(storage, "pr", rung) for rung in range(config.rungs)]
    study = optuna.load_study(study_name="pr", storage=storage)

    def proposal(sampler: PredictorSampler):
        copy = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for trial in study.trials:
            copy.add_trial(trial)
        trial = copy.ask()
        fitted_space.sample(trial)
        return trial.params, sampler.trial_attrs(trial.number)

    first = proposal(PredictorSampler(fitted_space, config.budgets, "flops", rungs, seed=0))
    second = proposal(PredictorSampler(fitted_space, config.budgets, "flops", rungs, seed=0))
    assert first == second and first[1]["sampler"] == "predictor"
    other_seed = proposal(PredictorSampler(fitted_space, config.budgets, "flops", rungs, seed=1))
    assert other_seed[0] != first[0]


def test_two_workers_sample_different_networks_while_it_waits_for_results(space, tmp_path):
    """Before the predictor has results, each worker's evolution sampler draws from its own seed: workers that
    share a storage do not propose the same networks (the duplicates a first benchmark run showed)."""
    config = _config(tmp_path)
    rungs = [optuna.create_study(directions=["maximize", "minimize"]) for _ in range(config.rungs)]  # no results
    proposed = []
    for worker in (0, 1):
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=create_sampler(config, space, worker, rungs))
        trials = [study.ask() for _ in range(3)]
        for trial in trials:
            space.sample(trial)
        proposed.append([trial.params for trial in trials])
    assert all(a != b for a, b in zip(*proposed, strict=True))


def test_the_report_says_which_sampler_ran_and_how_well_the_predictor_ranked(searched, tmp_path, capsys):
    config, _, trials = searched
    record = load_record("pr", config.storage_url)
    guided = [t for t in trials if t.user_attrs["sampler"] == "predictor"]
    (rung, candidates, rho), *_ = record.prediction_quality()
    assert (rung, candidates) == (0, len(guided)) and -1 <= rho <= 1
    line = sampler_line(record)
    assert line.startswith(f"sampler: predictor, {len(guided)} of {len(trials)} sampled candidates")
    assert f"Spearman rho {rho:+.2f} at rung 0 ({len(guided)} candidates)" in line
    csv_rows = write_trials_csv(record, tmp_path / "trials.csv").read_text().splitlines()
    assert "predicted_accuracy,predicted_spread" in csv_rows[0]
    other = optuna.create_study(directions=["maximize", "minimize"])
    other.set_user_attr("config", {"sampler": "auto", "rungs": 3})
    assert sampler_line(SearchRecord(other, [])) == "sampler: evolution"


def test_the_cli_runs_a_predictor_guided_search_and_reports_its_sampler(tmp_path, capsys):
    argv = ["search", "--budget", "2MFLOPs", "--trials", "36", "--runs-dir", str(tmp_path), "--name", "pg",
            "--dataset", "synthetic", "--rungs", "2", "--proxy-images", "64", "--proxy-epochs", "1", "--workers", "1",
            "--threads", "1", "--sampler", "predictor", "--no-warm-start", "--quiet"]
    assert main(argv) == 0
    with open(tmp_path / "pg" / "trials.csv", newline="") as file:
        said = [row["sampler"] for row in csv.DictReader(file)]
    assert "predictor" in said and all(s == "predictor" or s.startswith("evolution (") for s in said)
    capsys.readouterr()
    assert main(["report", "pg", "--runs-dir", str(tmp_path)]) == 0
    assert f"sampler: predictor, {said.count('predictor')} of {len(said)} sampled candidates" in capsys.readouterr().out
