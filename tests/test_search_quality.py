"""The evidence benchmark (benchmarks/search_quality.py): what counts at equal compute, the answer and its
picks, and its smoke mode end to end on synthetic data, resumed without training anything twice."""

from __future__ import annotations

import json

import pytest

from benchmarks.search_quality import Settings, _summary, counted, curve, front_of, main, parse_args, picks


def _training(rung: int, accuracy: float, cost: float, completed: float, digest: str) -> dict:
    return {"rung": rung, "val_accuracy": accuracy, "cost": cost, "completed": completed, "spec_hash": digest}


# a made-up search of T = 100 s: rung 1 is reached at 40 s; the best training finishes after T
RECORD = {"seconds": 100.0, "wall_s": 103.0, "cpu_s": 206.0, "cpu_samples": [[50.0, 100.0]],
          "trainings": [_training(0, 0.60, 2.0, 10.0, "a"), _training(0, 0.70, 8.0, 20.0, "b"),
                        _training(0, 0.50, 1.0, 30.0, "c"), _training(1, 0.80, 8.0, 40.0, "b"),
                        _training(1, 0.75, 2.0, 60.0, "a"), _training(1, 0.99, 1.0, 101.0, "c")]}


def test_only_trainings_that_completed_by_t_count():
    assert [t["spec_hash"] for t in counted(RECORD)] == ["a", "b", "c", "b", "a"]


def test_the_answer_is_the_front_at_the_highest_rung_reached_by_t():
    assert [t["spec_hash"] for t in front_of(counted(RECORD))] == ["a", "b"]  # rung 1, cheapest first
    assert [t["spec_hash"] for t in front_of(counted(RECORD)[:3])] == ["c", "a", "b"]  # before rung 1 held any


def test_picks_are_the_most_accurate_the_knee_and_the_cheapest():
    front = [_training(0, acc, cost, 0.0, name) for acc, cost, name in
             ((0.5, 1.0, "cheap"), (0.8, 2.0, "knee"), (0.82, 10.0, "best"))]
    assert [p["spec_hash"] for p in picks(front, 3)] == ["best", "knee", "cheap"]
    assert [p["spec_hash"] for p in picks(front, 1)] == ["best"]
    assert [p["spec_hash"] for p in picks(front[:2], 3)] == ["knee", "cheap"]  # no knee of two points


def test_the_curve_follows_the_front_at_the_top_rung_against_interpolated_cpu_seconds():
    points = curve(RECORD, budget=10.0)
    assert [wall for wall, _, _ in points] == [10.0, 20.0, 30.0, 40.0, 60.0]
    assert points[0][1] == pytest.approx(20.0) and points[4][1] == pytest.approx(100 + 106 * 10 / 53)
    assert points[2][2] == pytest.approx(0.5 * 0.1 + 0.6 * 0.6 + 0.7 * 0.2)  # rung 0: c, a, b
    assert points[3][2] == pytest.approx(0.8 * 0.2)  # rung 1 holds b only: the answer moved up a rung


def test_every_method_is_compared_seed_by_seed_with_the_baseline_method():
    runs = [{"method": method, "seed": seed, "hypervolume": hv, "best_test_accuracy": acc, "hypervolume_log": hv,
             "cpu_s": 600.0} for method, seed, hv, acc in
            (("random", 0, 0.2, 0.70), ("random", 1, 0.5, 0.80), ("predictor-no-warm-start", 0, 0.4, 0.75),
             ("predictor-no-warm-start", 1, 0.3, 0.81), ("default", 0, 0.9, 0.90))]
    rows = {row["method"]: row for row in
            _summary(runs, Settings(seeds=(0, 1), methods=("default", "random", "predictor-no-warm-start"),
                                    baseline="predictor-no-warm-start"))}
    random = rows["random"]
    assert random["baseline_wins_hypervolume"] == 1 and random["baseline_wins_best_test_accuracy"] == 2
    assert random["baseline_minus_this_hypervolume"]["median"] == pytest.approx(0.0)  # +0.2 and -0.2
    assert rows["default"]["baseline_minus_this_hypervolume"]["n"] == 1  # seed 1 has no default run
    assert "baseline_wins_hypervolume" not in rows["predictor-no-warm-start"]


def test_an_unknown_baseline_is_refused_in_one_line():
    from bsnas.errors import BsnasError

    with pytest.raises(BsnasError, match="predictr is not one of"):
        parse_args(["--baseline", "predictr"])


def _run(runs, *extra) -> dict:
    assert main(["--smoke", "--runs-dir", str(runs), "--name", "q", *extra]) == 0
    return json.loads((runs / "q" / "results.json").read_text())


@pytest.mark.slow
def test_the_smoke_run_of_random_search_and_the_zoo_resumes_without_training_anything_again(tmp_path, capsys):
    first = _run(tmp_path, "--methods", "random,zoo", "--baseline", "random")
    assert first["new_searches"] == 1 and first["new_final_trainings"] > 0
    assert next(row for row in first["summary"] if row["method"] == "zoo")["baseline_minus_this_hypervolume"]
    methods = {run["method"] for run in first["runs"]}
    assert methods == {"random", "zoo"}
    zoo = next(run for run in first["runs"] if run["method"] == "zoo")
    assert zoo["points"] and all(p["cost"] <= first["budget"] for p in zoo["points"])
    assert first["noise"] and len(first["noise"][0]["test_accuracy_by_seed"]) == 2
    again = _run(tmp_path, "--methods", "random,zoo")
    assert again["new_searches"] == 0 and again["new_final_trainings"] == 0
    assert again["runs"] == first["runs"]
    for name in ("results.csv", "final.csv", "hypervolume.png", "fronts.png"):
        assert (tmp_path / "q" / name).is_file()
    assert "random" in capsys.readouterr().out


@pytest.mark.slow
def test_the_smoke_run_of_every_method_resumes_without_training_anything_again(tmp_path):
    pytest.importorskip("syne_tune", reason="the moasha method needs the bench extra")
    first = _run(tmp_path)
    assert first["new_searches"] == 7
    assert {run["method"] for run in first["runs"]} == {"default", "no-warm-start", "random", "single-fidelity",
                                                        "moasha", "zoo", "predictor", "predictor-no-warm-start"}
    assert next(run for run in first["runs"] if run["method"] == "moasha")["syne_tune"] == "0.16.0"
    again = _run(tmp_path)
    assert again["new_searches"] == 0 and again["new_final_trainings"] == 0
