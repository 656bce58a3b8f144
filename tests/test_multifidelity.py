"""Multi-fidelity search: promotion within cost bins (hand-checked), rung studies, resume, workers, the CLI."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from bsnas.arch.cost import cost
from bsnas.cli import main
from bsnas.errors import BsnasError
from bsnas.search.budget import parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.evaluator import Evaluation
from bsnas.search.evolution import EvolutionSampler
from bsnas.search.promotion import bin_edges, next_promotion, promotable
from bsnas.search.rungs import open_rung_study
from bsnas.search.slots import count_trials
from bsnas.search.study import load_record
from bsnas.search.workers import run_search


def _ticket(number: int, accuracy: float, cost_m: float, digest: str | None = None):
    ticket = create_trial(state=TrialState.COMPLETE, values=[accuracy, cost_m],
                          user_attrs={"spec_hash": digest or f"h{number}", "status": "trained", "trial": number})
    ticket.number = number
    return ticket


# rung 0 of a made-up search, budget 100 MFLOPs: short trainings favour the small nets; the nets of 40-80 MFLOPs
# score below every small one (they are all dominated), yet the best of them would win once trained longer
RUNG0 = [_ticket(0, 0.80, 1.0), _ticket(1, 0.79, 1.5), _ticket(2, 0.70, 2.0),
         _ticket(3, 0.78, 5.0), _ticket(4, 0.76, 6.0), _ticket(5, 0.60, 8.0),
         _ticket(6, 0.74, 40.0), _ticket(7, 0.73, 50.0), _ticket(8, 0.65, 80.0)]


def test_promotion_takes_the_best_third_of_every_cost_bin():
    edges = bin_edges(1.0, 100.0, bins=4)  # 1, 3.2, 10, 32, 100 MFLOPs
    assert edges[0] == pytest.approx(1.0) and edges[2] == pytest.approx(10.0) and edges[4] == pytest.approx(100.0)
    promoted = promotable(RUNG0, eta=3, edges=edges)
    # bin [1, 3.2): 0, 1, 2 -> the best 1 is trial 0; [3.2, 10): 3, 4, 5 -> 3; [32, 100): 6, 7, 8 -> 6
    assert [t.number for t in promoted] == [0, 3, 6]


def test_the_large_candidate_is_promoted_although_rung_0_dominates_it():
    large = next(t for t in RUNG0 if t.number == 6)
    assert any(o.values[0] > large.values[0] and o.values[1] < large.values[1] for o in RUNG0)  # dominated
    front = [t for t in RUNG0 if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o is not t
                                         for o in RUNG0)]
    assert large not in front  # plain non-dominated sorting would never promote it
    assert large in promotable(RUNG0, eta=3, edges=bin_edges(1.0, 100.0, bins=4))


def test_a_bin_promotes_nothing_until_it_holds_eta_results():
    assert promotable(RUNG0[:2], eta=3, edges=bin_edges(1.0, 100.0)) == []


def _rung_studies(tmp_path, rungs: int):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'r.db'}")
    return [open_rung_study(storage, "s", rung) for rung in range(rungs)]


def test_next_promotion_goes_to_the_highest_rung_first_and_never_twice(tmp_path):
    rungs = _rung_studies(tmp_path, 3)
    for ticket in RUNG0:
        rungs[0].add_trial(ticket)
    for number, accuracy in ((0, 0.85), (3, 0.86), (6, 0.90)):
        rungs[1].add_trial(_ticket(number, accuracy, RUNG0[number].values[1], f"h{number}"))
    assert next_promotion(rungs, eta=3, budget=100.0) is None  # rung 1's bins hold one result each
    rungs[1].add_trial(_ticket(9, 0.84, 45.0, "h9"))
    rungs[1].add_trial(_ticket(10, 0.83, 60.0, "h10"))  # bin [32, 100) at rung 1: 6, 9, 10 -> 6 earned rung 2
    rung, ticket = next_promotion(rungs, eta=3, budget=100.0)
    assert (rung, ticket.user_attrs["spec_hash"]) == (1, "h6")
    rungs[2].enqueue_trial({}, user_attrs={"spec_hash": "h6"})  # promoted (queued)
    assert next_promotion(rungs, eta=3, budget=100.0) is None  # nothing else has earned it


class RungTrainer:
    """Accuracy that a longer training raises more for larger nets: rung 0 underrates them."""

    def __init__(self):
        self.trained: list[tuple[str, int]] = []

    def __call__(self, spec, rung=0):
        from bsnas.arch.spec import spec_hash

        self.trained.append((spec_hash(spec), rung))
        flops, params = cost(spec)
        return Evaluation(min(0.99, 0.6 + 0.02 * rung * (1 + flops / 1e6) - flops / 1e8), 0.0)


def _config(tmp_path, **changes):
    values = dict(name="mf", space_file="mobilenet", budgets=(parse_budget("3MFLOPs"),), trials=12,
                  runs_dir=str(tmp_path), dataset="synthetic", warm_start=False, threads=1, sampler="random",
                  rungs=2, eta=3, workers=1)
    values.update(changes)
    return SearchConfig(**values)


def test_a_two_rung_search_promotes_trains_once_and_reports_the_top_rung(tmp_path, space):
    trainer = RungTrainer()
    config = _config(tmp_path)
    result = run_search(config, space, evaluate=trainer)
    assert result.ok
    assert len(trainer.trained) == len(set(trainer.trained))  # every (architecture, rung) once
    record = load_record("mf", config.storage_url)
    promoted = [digest for digest, rung in trainer.trained if rung == 1]
    rung0 = len([1 for _, rung in trainer.trained if rung == 0])
    assert promoted and len(promoted) <= rung0 // 3 + 4  # a third of each bin (four bins)
    assert record.top == 1 and {t.user_attrs["spec_hash"] for t in record.front()} <= set(promoted)
    # resumed with more trials: more candidates and promotions, nothing trained again
    again = run_search(_config(tmp_path, trials=18), space, evaluate=trainer)
    assert again.ok and count_trials(again.study)["slots"] == 18 and len(trainer.trained) == len(set(trainer.trained))


def test_one_rung_is_the_single_fidelity_search(tmp_path, space):
    trainer = RungTrainer()
    config = _config(tmp_path, rungs=1, trials=8)
    assert run_search(config, space, evaluate=trainer).ok
    assert {rung for _, rung in trainer.trained} == {0}
    record = load_record("mf", config.storage_url)
    feasible = [t for t in record.study.trials if t.user_attrs.get("status") == "trained"]
    best = [t for t in feasible if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                                           and tuple(o.values) != tuple(t.values) for o in feasible)]
    assert {t.user_attrs["spec_hash"] for t in record.front()} == {t.user_attrs["spec_hash"] for t in best}


def test_two_worker_processes_never_train_an_architecture_twice_at_a_rung(tmp_path, space, capfd):
    # eta 2: any cost bin with two results promotes one, so rung 1 is reached whatever the workers' timing made of
    # the 8 candidates (with eta 3 a run whose bins held at most two results each promoted nothing: CI failed once)
    config = _config(tmp_path, workers=2, trials=8, eta=2, proxy_images=64, proxy_epochs=1)
    assert run_search(config, space).ok
    assert "Using an existing study" not in capfd.readouterr().err  # workers keep Optuna's info lines quiet
    record = load_record("mf", config.storage_url)
    for study in record.rungs:
        trained = [t.user_attrs["spec_hash"] for t in study.trials if t.user_attrs.get("status") == "trained"]
        assert len(trained) == len(set(trained))
    assert record.top == 1


def test_the_cli_runs_a_two_rung_search_and_exports_from_the_top_rung(tmp_path, capsys):
    argv = ["search", "--budget", "5MFLOPs", "--trials", "14", "--rungs", "2", "--eta", "3", "--runs-dir",
            str(tmp_path), "--name", "cli", "--dataset", "synthetic", "--proxy-images", "64", "--proxy-epochs", "1",
            "--workers", "1", "--threads", "1", "--sampler", "random", "--quiet", "--zoo", "v3_small_w7d20$"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "at rung 1" in out and "proxy acc (rung 0)" in out
    with open(tmp_path / "cli" / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {"rung_reached", "val_accuracy_rung0", "val_accuracy_rung1"} <= set(rows[0])
    assert any(row["rung_reached"] == "1" for row in rows)
    output = str(tmp_path / "a.yaml")
    assert main(["export", "cli", "--runs-dir", str(tmp_path), "--pick", "max-acc", "-o", output]) == 0
    record = load_record("cli", runs_dir=str(tmp_path))
    exported = (tmp_path / "a.yaml").read_text()
    assert json.loads(max(record.front(), key=lambda t: t.values[0]).user_attrs["spec"])["name"] in exported
    promoted = next(row for row in rows if row["rung_reached"] == "1")  # its note gives its highest rung's accuracy
    capsys.readouterr()
    assert main(["export", "cli", "--runs-dir", str(tmp_path), "--pick", f"trial:{promoted['number']}", "-o",
                 output]) == 0
    score = f"val accuracy {float(promoted['val_accuracy_rung1']):.2%} at rung 1 in the search"
    assert score in capsys.readouterr().err


def test_auto_sampler_and_rung_0_size_follow_the_rungs(tmp_path):
    from bsnas.search.config import MULTI_FIDELITY_IMAGES
    from bsnas.search.evaluator import ProxyEvaluator
    from bsnas.search.guided import PredictorSampler
    from bsnas.search.samplers import create_sampler
    from bsnas.space.load import resolve_space
    from bsnas.train.config import preset

    def config(**changes):
        return SearchConfig(name="s", space_file="mobilenet", budgets=(parse_budget("1MFLOPs"),),
                            runs_dir=str(tmp_path), dataset="synthetic", **changes)

    one, three = config(rungs=1), config(rungs=3)
    assert config().sampler_name == "evolution"  # the default ladder has rungs
    assert (one.sampler_name, three.sampler_name, config(rungs=3, sampler="tpe").sampler_name) == (
        "nsga2", "evolution", "tpe")
    space = resolve_space("mobilenet")
    assert isinstance(create_sampler(one, space), optuna.samplers.NSGAIISampler)
    assert isinstance(create_sampler(three, space), EvolutionSampler)
    assert isinstance(create_sampler(config(rungs=3, sampler="random"), space), optuna.samplers.RandomSampler)
    assert isinstance(create_sampler(config(rungs=3, sampler="predictor"), space), PredictorSampler)
    assert (one.rung0_images, three.rung0_images, config(rungs=3, proxy_images=500).rung0_images) == (
        None, MULTI_FIDELITY_IMAGES, 500)
    assert ProxyEvaluator.for_search(three).images == MULTI_FIDELITY_IMAGES
    assert ProxyEvaluator.for_search(one).images is None  # the proxy preset's, as before
    # with rungs, every rung trains with the final training's crop and flip (the calibration's choice)
    paper = preset("paper")
    augmented = ProxyEvaluator.for_search(three).train_config(2)
    assert (augmented.crop_padding, augmented.flip) == (paper.crop_padding, paper.flip) == (4, True)
    assert (ProxyEvaluator.for_search(one).train_config(0).crop_padding, three.study_settings()["augment"]) == (0, True)
    plain = ProxyEvaluator.for_search(config(rungs=3, augment=False)).train_config(2)
    assert (plain.crop_padding, plain.flip) == (0, False)


def test_a_study_made_before_rungs_could_augment_is_read_as_unaugmented(tmp_path, space):
    from bsnas.search.config import config_from_dict
    from bsnas.search.study import create_study

    config = _config(tmp_path)
    study = create_study(config, space)
    for key in ("settings", "config"):  # what a study made before --augment existed holds
        study.set_user_attr(key, {k: v for k, v in study.user_attrs[key].items() if k != "augment"})
    assert config_from_dict(study.user_attrs["config"]).rung_augment is False  # e.g. `bsnas train RUN:trial:N`
    with pytest.raises(BsnasError, match=r"other settings \(--augment off, now on\)"):
        create_study(config, space)
    assert create_study(_config(tmp_path, augment=False), space).study_name == "mf"


def test_the_report_names_the_best_zoo_model_at_the_highest_rung_a_zoo_model_reached(tmp_path):
    from bsnas.report.tables import zoo_line
    from bsnas.search.front import SearchRecord

    rungs = _rung_studies(tmp_path, 3)
    for rung, (number, accuracy, cost_m, zoo) in ((0, (1, 0.70, 5.0, "zoo_a")), (0, (2, 0.72, 9.0, "zoo_b")),
                                                  (1, (1, 0.80, 5.0, "zoo_a")), (1, (2, 0.79, 9.0, "zoo_b")),
                                                  (2, (3, 0.90, 4.0, None))):
        ticket = _ticket(number, accuracy, cost_m)
        ticket.set_user_attr("zoo", zoo) if zoo else None
        ticket.set_user_attr("flops", cost_m * 1e6)
        rungs[rung].add_trial(ticket)
    record = SearchRecord(rungs[0], rungs)
    rung, best = record.best_zoo()
    assert (rung, best.user_attrs["zoo"]) == (1, "zoo_a")  # the timeout ended the search before a zoo model got to 2
    assert zoo_line(record) == "best zoo model at rung 1 (none reached rung 2): zoo_a, 80.00% at 5 MFLOPs"
    promoted = _ticket(1, 0.85, 5.0)
    promoted.set_user_attr("zoo", "zoo_a")
    promoted.set_user_attr("flops", 5e6)
    rungs[2].add_trial(promoted)
    assert zoo_line(record) == "best zoo model at rung 2: zoo_a, 85.00% at 5 MFLOPs (dominated by the front)"


def test_pareto_png_labels_of_front_points_close_in_cost_do_not_overlap(tmp_path, monkeypatch):
    import matplotlib.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bsnas.report.plots import plot_front
    from bsnas.search.front import SearchRecord

    rungs = _rung_studies(tmp_path, 2)
    for rung, tickets in ((0, [_ticket(1, 0.60, 5.0), _ticket(2, 0.62, 20.4), _ticket(3, 0.61, 20.5),
                               _ticket(4, 0.63, 60.0)]),
                          (1, [_ticket(1, 0.88, 5.0), _ticket(2, 0.9027, 20.4), _ticket(3, 0.9037, 20.5),
                               _ticket(4, 0.911, 60.9)])):
        for ticket in tickets:
            rungs[rung].add_trial(ticket)
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path: drawn.append(figure))
    record = SearchRecord(rungs[0], rungs)
    assert len(record.front()) == 4
    plot_front(record, tmp_path / "pareto.png")
    canvas = FigureCanvasAgg(drawn[0])
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in drawn[0].axes[0].texts]
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_pareto_png_explains_every_mark_itself(tmp_path, monkeypatch):
    """Issue 25: promotion lines not in the legend, rung markers alike in grey, the legend over points, ticks
    `2x10^0`, accuracy a fraction."""
    import matplotlib.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bsnas.report.plots import plot_front
    from bsnas.search.front import SearchRecord

    rungs = _rung_studies(tmp_path, 3)
    for rung, tickets in enumerate(RUNG0[:6 - 2 * rung] for rung in range(3)):
        for ticket in tickets:
            ticket = _ticket(ticket.number, ticket.values[0] + 0.05 * rung, ticket.values[1])
            if ticket.number == 0:
                ticket.set_user_attr("zoo", "zoo_a")
            rungs[rung].add_trial(ticket)
    rungs[0].set_user_attr("settings", {"budgets": [["flops", 10e6]]})
    rungs[0].add_trial(create_trial(state=TrialState.COMPLETE, values=[0.0, 12.0], user_attrs={"status": "infeasible"}))
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path: drawn.append(figure))
    plot_front(SearchRecord(rungs[0], rungs), tmp_path / "pareto.png")
    figure = drawn[0]
    axes = figure.axes[0]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    legend = axes.get_legend()
    labels = [text.get_text() for text in legend.get_texts()]
    artists = [*axes.lines, *axes.collections]
    assert len(artists) == len(labels) == 9  # promotions, 3 rungs, zoo, over budget, front, knee, budget
    assert all(artist.get_label() in labels for artist in artists)
    renderer = canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer))  # beside the points
    ticks = [label.get_text() for label in axes.get_xticklabels() if label.get_text()]
    assert ticks and all(tick.replace(".", "").isdigit() for tick in ticks)  # 1, 2, 5, 10: plain, in MFLOPs
    assert all(label.get_text().endswith("%") for label in axes.get_yticklabels() if label.get_text())
    shapes = [tuple(map(tuple, c.get_paths()[0].vertices.round(3))) for c in axes.collections[1:4]]
    assert [c.get_label() for c in axes.collections[1:4]] == ["rung 0", "rung 1", "rung 2"]
    assert len(set(shapes)) == 3  # apart in grey-scale print too


def test_pareto_png_keeps_a_far_over_budget_candidate_at_the_axis_edge(tmp_path, monkeypatch):
    """The quick start's demo: one candidate of 770 MFLOPs over a 20 MFLOPs budget stretched the cost axis to
    1000 MFLOPs, and every trained point sat in its left 40 %."""
    import matplotlib.figure

    from bsnas.report.plots import plot_front
    from bsnas.search.front import SearchRecord

    rungs = _rung_studies(tmp_path, 1)
    for ticket in RUNG0[:6]:  # trained: 1 to 8 MFLOPs
        rungs[0].add_trial(ticket)
    rungs[0].set_user_attr("settings", {"budgets": [["flops", 10e6]]})
    for flops in (12.0, 770.0):
        rungs[0].add_trial(create_trial(state=TrialState.COMPLETE, values=[0.0, flops],
                                        user_attrs={"status": "infeasible"}))
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path: drawn.append(figure))
    plot_front(SearchRecord(rungs[0], rungs), tmp_path / "pareto.png")
    axes = drawn[0].axes[0]
    right = axes.get_xlim()[1]
    assert 12.0 < right < 20.0  # 1.5x the budget (the larger of it and the costliest training), not 770
    over = [c for c in axes.collections if c.get_label().startswith("over budget")]
    drawn_costs = sorted(x for c in over for x, _ in c.get_offsets())
    assert drawn_costs[0] == 12.0 and drawn_costs[1] <= right  # the far one at the edge, its label says so
    assert any("beyond" in c.get_label() for c in over)
