"""End to end on synthetic data through the CLI: search, resume, report, export, train the export, retrain."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bsnas.arch.cost import cost
from bsnas.arch.files import load_spec
from bsnas.cli import main
from bsnas.nn.build import build_model

TINY = ["--dataset", "synthetic", "--rungs", "1", "--proxy-images", "64", "--proxy-epochs", "1", "--workers", "1",
        "--threads", "1", "--sampler", "random", "--quiet"]


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    argv = ["search", "--budget", "2MFLOPs", "--trials", "3", "--runs-dir", str(runs), "--name", "e2e",
            "--zoo", r"v3_small_w7d20$", *TINY]
    assert main(argv) == 0
    return runs, argv


def test_search_writes_the_report(searched):
    runs, _ = searched
    run = runs / "e2e"
    for name in ("study.db", "trials.csv", "pareto.png", "search.yaml", "space.yaml"):
        assert (run / name).is_file(), name
    rows = _rows(run / "trials.csv")
    assert len(rows) == 3
    assert rows[0]["zoo"] == "cifar_mobilenetv3_small_w7d20"  # the warm start runs first
    front = [row for row in rows if row["pareto"] == "1"]
    assert front and len(list((run / "pareto").glob("*.yaml"))) == len({row["spec_hash"] for row in front})
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_adds_trials_without_retraining(searched, capsys):
    runs, argv = searched
    before = {row["number"]: row for row in _rows(runs / "e2e" / "trials.csv")}
    argv = [a if a != "3" else "4" for a in argv]
    assert main(argv) == 0
    rows = _rows(runs / "e2e" / "trials.csv")
    assert len(rows) == 4
    for row in rows[:3]:
        assert row["train_seconds"] == before[row["number"]]["train_seconds"]  # not trained again
        assert row["val_accuracy"] == before[row["number"]]["val_accuracy"]


def test_report_json(searched, capsys):
    runs, _ = searched
    capsys.readouterr()
    assert main(["report", "e2e", "--runs-dir", str(runs), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["complete"] >= 3 and report["front"]
    # one rectangle per front point, from its cost share to the next point's (the last to the budget, 2 MFLOPs)
    shares = [point["cost"] / 2.0 for point in report["front"]] + [1.0]
    area = sum((shares[i + 1] - shares[i]) * max(p["val_accuracy"] for p in report["front"][:i + 1])
               for i in range(len(report["front"])))
    assert report["budget"] == 2.0 and report["hypervolume"] == pytest.approx(area)
    assert main(["report", "e2e", "--runs-dir", str(runs)]) == 0
    assert f"hypervolume of the front: {area:.4f}" in capsys.readouterr().out


def test_the_report_says_why_a_search_without_a_budget_on_its_objective_has_no_hypervolume():
    import optuna

    from bsnas.report.tables import hypervolume_line
    from bsnas.search.front import SearchRecord

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("config", {"objective": "latency", "budgets": [["flops", 2e6]]})
    record = SearchRecord(study, [])
    assert record.hypervolume() is None
    assert "no --budget on the objective's cost, latency" in hypervolume_line(record)


def test_export_is_trainable_and_within_budget(searched, tmp_path, capsys):
    runs, _ = searched
    out = tmp_path / "arch.yaml"
    assert main(["export", "e2e", "--runs-dir", str(runs), "--pick", "max-acc", "-o", str(out)]) == 0
    spec = load_spec(out)
    assert cost(spec).flops <= 2e6
    build_model(spec)
    assert main(["train", str(out), "--dataset", "synthetic", "--epochs", "1", "--subset", "64", "--threads", "1",
                 "--device", "cpu", "--runs-dir", str(tmp_path), "--name", "exported"]) == 0
    assert json.loads((tmp_path / "exported" / "result.json").read_text())["epochs"] == 1


def test_retrain_front_one_epoch(searched, capsys):
    runs, _ = searched
    argv = ["retrain", "e2e", "--runs-dir", str(runs), "--epochs", "1", "--device", "cpu", "--zoo", "none", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["epochs"] == 1 and row["test_accuracy"] is not None for row in rows)
    results = sorted((runs / "e2e" / "retrain").glob("*/result.json"))
    stamps = [path.stat().st_mtime_ns for path in results]
    assert main(argv[:-1]) == 0  # finished runs are not trained again; the table this time
    assert [path.stat().st_mtime_ns for path in results] == stamps
    table = capsys.readouterr().out
    assert all(row["name"] in table for row in rows)  # whole names, also when printing to a pipe


@pytest.mark.parametrize(("argv", "needle"), [
    (["search", "--budget", "100MFLOP5"], "--budget '100MFLOP5'"),
    (["search", "--budget", "100MFLOPs", "--budget", "200MFLOPs"], "twice"),
    (["search", "--budget", "100MFLOPs", "--timeout", "soon"], "--timeout 'soon'"),
    (["export", "nosuchrun", "--runs-dir", "/nonexistent"], "nosuchrun"),
    (["space", "show", "/nonexistent/space.yaml"], "/nonexistent/space.yaml"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bsnas: error:") and needle in err and "\n" not in err


def test_bad_space_file_exits_2_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text("model: {block_type: conv}\nstem: {out_channels: 8}\n"
                   "stages: [{repeats: 1, out_channels: 8, op: [dsc, bsconv_x]}]\n")
    assert main(["search", "--budget", "1MFLOPs", "--space", str(bad), "--runs-dir", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}: stages[0].op[1]: 'bsconv_x' is not one of" in err and "\n" not in err


def test_space_that_cannot_meet_budget_exits_2(tmp_path, capsys):
    assert main(["search", "--budget", "1kFLOPs", "--runs-dir", str(tmp_path), *TINY]) == 2
    assert "cheapest point of the space has 53.9 kFLOPs at input 3x16x16, over the budget" in capsys.readouterr().err


def test_space_show_json(capsys):
    assert main(["space", "show", "search_spaces/mobilenet.yaml", "--samples", "20", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["log10_size"] > 20
    assert summary["flops_min"] < summary["flops_sampled"]["min"] <= summary["flops_max_found"]
    names = {z["name"] for z in summary["zoo_points"]}
    assert {"cifar_mobilenetv1_w1_bsconvu", "cifar_mobilenetv2_w1d2_bsconvs_p1d6",
            "cifar_mobilenetv3_large_w1_pfd"} <= names


def test_any_storage_url(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    argv = ["search", "--budget", "2MFLOPs", "--trials", "2", "--runs-dir", str(tmp_path), "--name", "url",
            "--storage", url, "--no-warm-start", *TINY]
    assert main(argv) == 0
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "url" / "study.db").exists()
    capsys.readouterr()
    assert main(["report", "url", "--runs-dir", str(tmp_path), "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["complete"] == 2


def test_space_show_text(capsys):
    assert main(["space", "show", "search_spaces/resnet.yaml", "--samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "[regular, dsc, bsconv_u, bsconv_s]" in out  # lists are printed, not eaten as rich markup
    assert "true when op in [bsconv_s]" in out and "size:" in out and "cifar_resnet20_bsconvs_p1d4" in out


def test_a_failed_invocation_leaves_the_run_files_as_they_were(searched, capsys):
    """Issue 11: a search refused on an existing run (other budget) overwrote its search.yaml."""
    runs, argv = searched
    before = {name: (runs / "e2e" / name).read_text() for name in ("search.yaml", "space.yaml")}
    bad = [a if a != "2MFLOPs" else "3MFLOPs" for a in argv]
    assert main(bad) == 2
    assert "other settings (--budget" in capsys.readouterr().err
    assert {name: (runs / "e2e" / name).read_text() for name in before} == before


@pytest.mark.parametrize("name", ["../escape", "/tmp/bsnas-abs-search", "..", "."])
def test_a_search_name_never_leaves_the_runs_folder(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--budget", "2MFLOPs", "--trials", "1", "--runs-dir", "runs", f"--name={name}", *TINY]) == 2
    assert "a run name is 1 to 100 letters" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not Path("/tmp/bsnas-abs-search").exists()


def test_trial_names_from_an_unchecked_study_never_leave_its_folders(searched, tmp_path, capsys):
    """Issue 21: a study whose trials are named ../../x (searched before space names were checked, or written by
    someone else) had its pareto/ files written outside the runs folder; retrain sanitised the name its own way."""
    import shutil
    import sqlite3

    runs, _ = searched
    copy = tmp_path / "runs"
    shutil.copytree(runs / "e2e", copy / "e2e", ignore=shutil.ignore_patterns("retrain*", "pareto*"))
    with sqlite3.connect(copy / "e2e" / "study.db") as connection:
        for row, value in connection.execute("SELECT trial_user_attribute_id, value_json FROM "
                                             "trial_user_attributes WHERE key = 'spec'").fetchall():
            spec = json.loads(json.loads(value))
            spec["name"] = "../../../../escaped"
            connection.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_user_attribute_id = ?",
                               (json.dumps(json.dumps(spec)), row))
    before = {path for path in tmp_path.rglob("*") if path.is_file()}
    for argv in (["report", "e2e"], ["retrain", "e2e", "--epochs", "1", "--zoo", "none", "--device", "cpu"]):
        assert main([*argv, "--runs-dir", str(copy)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bsnas: error: trial ") and "name '../../../../escaped': " in err
        assert len(err.strip().splitlines()) == 1
    assert {path for path in tmp_path.rglob("*") if path.is_file() and "-wal" not in path.name
            and "-shm" not in path.name} == {p for p in before if "-wal" not in p.name and "-shm" not in p.name}


def test_a_storage_password_is_never_printed_nor_stored(postgres_url, tmp_path, capsys):
    import sqlalchemy

    url = sqlalchemy.engine.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    argv = ["search", "--budget", "2MFLOPs", "--trials", "1", "--runs-dir", str(tmp_path), "--name", "pw",
            "--storage", url, "--no-warm-start", *TINY]
    assert main(argv) == 0  # trust authentication: the password is not needed, but it is given
    out, err = capsys.readouterr()
    assert "s3cret-pw" not in out + err and "***" in err
    assert "s3cret-pw" not in (tmp_path / "pw" / "search.yaml").read_text()
    from bsnas.search.study import load_study

    study = load_study("pw", url)
    assert "s3cret-pw" not in json.dumps(study.user_attrs)


def test_a_search_that_does_not_reach_its_target_exits_1(tmp_path, monkeypatch, capsys):
    """Issue 11: a search whose workers crashed, or that ended short of --trials, exited 0."""
    from bsnas.search import workers

    def crash(*args, **kwargs):
        raise RuntimeError("a worker crashed")

    argv = ["search", "--budget", "2MFLOPs", "--trials", "2", "--runs-dir", str(tmp_path), "--name", "short",
            "--no-warm-start", *TINY]
    monkeypatch.setattr(workers, "worker", crash)
    with pytest.raises(RuntimeError):
        main(argv)
    monkeypatch.undo()
    monkeypatch.setattr(workers, "worker", lambda *args, **kwargs: None)  # a worker that stops at once
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bsnas: error: the search short stopped after") and "holds 0 of the 2 trials" in err[-1]


def test_train_reproduces_a_trial_exactly(searched, capsys):
    runs, _ = searched
    rows = [row for row in _rows(runs / "e2e" / "trials.csv") if row["status"] == "trained"]
    row = rows[0]
    capsys.readouterr()
    assert main(["train", f"e2e:trial:{row['number']}", "--runs-dir", str(runs), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["val_accuracy"] == float(row["val_accuracy"])
    assert "in the search: the same" in captured.err
    assert main(["train", f"e2e:trial:{row['number']}", "--runs-dir", str(runs), "--epochs", "2"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["train", f"e2e:trial:{row['number']}", "--runs-dir", str(runs), "--rung", "3"]) == 2
    assert "was trained at rung(s) 0 only" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [
    [],
    ["--timeout", "20m"],
    ["--rungs", "1", "--trials", "8", "--sampler", "tpe", "--seed", "3", "--no-warm-start", "--zoo", "v2_"],
    ["--objective", "params", "--budget", "1Mparams", "--eta", "2", "--augment", "--workers", "1", "--threads", "2",
     "--heartbeat", "5", "--dataset", "synthetic", "--space", "resnet", "--population", "8", "--device", "cpu"],
])
def test_the_cli_and_the_library_run_the_same_search(flags, tmp_path):
    """The library defaulted to 1 rung (so NSGA-II) and 60 trials, the CLI to 5 rungs (so evolution) and 50: now the
    parser leaves every default to SearchConfig."""
    from bsnas.cli import build_parser
    from bsnas.cli.search import config_from_args
    from bsnas.search.budget import parse_budget
    from bsnas.search.config import SearchConfig

    args = build_parser().parse_args(["search", "--budget", "20MFLOPs", "--name", "s", *flags])
    given = {"--timeout": ("timeout", 1200.0), "--rungs": ("rungs", 1), "--trials": ("trials", 8),
             "--sampler": ("sampler", "tpe"), "--seed": ("seed", 3), "--no-warm-start": ("warm_start", False),
             "--zoo": ("zoo_pattern", "v2_"), "--objective": ("objective", "params"), "--eta": ("eta", 2),
             "--augment": ("augment", True), "--workers": ("workers", 1), "--threads": ("threads", 2),
             "--heartbeat": ("heartbeat_s", 5), "--dataset": ("dataset", "synthetic"),
             "--space": ("space_file", "resnet"), "--population": ("population", 8), "--device": ("device", "cpu")}
    values = dict(given[flag] for flag in flags if flag in given)
    budgets = [parse_budget("20MFLOPs")] + ([parse_budget("1Mparams")] if "1Mparams" in flags else [])
    assert config_from_args(args) == SearchConfig(name="s", budgets=tuple(budgets), **values)
    if not flags:
        default = config_from_args(args)
        assert (default.rungs, default.trials, default.sampler_name, default.space_file) == (5, 50, "evolution",
                                                                                             "mobilenet")
