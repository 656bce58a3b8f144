"""Hostile input, generated and mutated: architecture and space YAML, budgets, run names, CLI numbers. The only
outcomes are a valid result or one clear error line with exit status 2: never a traceback, never a file written
outside the runs folder."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import tempfile
import types
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import create_trial

from bsnas.arch.cost import cost
from bsnas.arch.files import MAX_YAML_BYTES, load_spec
from bsnas.arch.spec import spec_to_dict
from bsnas.arch.zoo import get_spec
from bsnas.cli import main
from bsnas.errors import BsnasError
from bsnas.names import is_name
from bsnas.report.trials import export_front
from bsnas.search.budget import parse_budget
from bsnas.space import load_space, space_size
from bsnas.space.load import shipped_space_path
from bsnas.train.rundir import run_path

SPEC = spec_to_dict(get_spec("cifar_mobilenetv3_small_w7d20_pfd", 10, 1, 28))
SPACE = load_space(shipped_space_path("mobilenet")).raw
TINY_SEARCH = ["--budget", "2MFLOPs", "--trials", "1", "--dataset", "synthetic", "--rungs", "1", "--proxy-images",
               "64", "--workers", "1", "--threads", "1", "--sampler", "random", "--no-warm-start", "--quiet"]
HOSTILE = st.one_of(
    st.sampled_from([3.0, True, False, None, 0, -1, 10**9, 10**30, "1e400", 1e300, float("inf"), float("nan"), "",
                     "../../etc", [], {}, [None], {"low": 1, "high": 10**8}, {"choices": []}, "11/0", "1e400/3"]),
    st.integers(-10**12, 10**12), st.floats(), st.text(max_size=12), st.lists(st.integers(-5, 9), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def _paths(value, prefix=()):
    """Every place in a nested dict/list document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def mutated(draw, document: dict):
    """The document with one to three places replaced, deleted, or given an unknown key."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = [path for path in _paths(document) if path]
        path = draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(HOSTILE)
        else:
            parent[path[-1]] = draw(HOSTILE)
    return document


def _one_line(error: BsnasError) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def _write(tmp_path: Path, document) -> Path:
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated(SPEC))
def test_mutated_architectures_give_a_spec_or_one_line(tmp_path, document):
    path = _write(tmp_path, document)
    try:
        spec = load_spec(path)
    except BsnasError as error:
        assert _one_line(error).startswith(f"{path}: ")
        return
    assert cost(spec).params >= 1  # a valid spec: it can be costed (and so built)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated(SPACE), seed=st.integers(0, 100))
def test_mutated_spaces_give_a_space_or_one_line(tmp_path, document, seed):
    path = _write(tmp_path, document)
    try:
        space = load_space(path).for_data(1, 28, 10)
        space_size(space)
        spec, _ = space.random_spec(random.Random(seed))
        cost(spec)
    except BsnasError as error:
        _one_line(error)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=20),
                      st.from_regex(r"-?[0-9.]{1,8}(e[-+]?[0-9]{1,4})? ?[kKMGmu]?(FLOPs|params|ms|us)",
                                    fullmatch=True)))
def test_any_budget_string_is_a_budget_or_one_line(text):
    try:
        budget = parse_budget(text)
    except BsnasError as error:
        _one_line(error)
        return
    assert 0 < budget.limit < float("inf")


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=120))
def test_any_run_name_stays_in_the_runs_folder_or_is_one_line(name):
    runs = Path("/tmp/bsnas-runs-that-do-not-exist")
    try:
        path = run_path(runs, name)
    except BsnasError as error:
        _one_line(error)
        return
    assert path.parent == runs and path.resolve().parent == runs.resolve() and path.name == name


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\xff\xfe\x00garbage", b"a: &x [*x]\n",
                                     b"[" * 5000, b"a: " + b"x" * (MAX_YAML_BYTES + 1)])
def test_binary_garbage_and_hostile_yaml_are_one_line(tmp_path, content):
    path = tmp_path / "input.yaml"
    path.write_bytes(content)
    for load in (load_spec, load_space):
        with pytest.raises(BsnasError) as error:
            load(path)
        assert _one_line(error.value).startswith(f"{path}: ")


def _spec_file(tmp_path: Path, **changes) -> str:
    document = {"name": "t", "stem": {"out_channels": 8}, "blocks": [{"type": "conv", "op": "bsconv_u",
                                                                        "out_channels": 8}], "in_channels": 1}
    document.update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize(("argv", "needle"), [
    (["search", "--budget", "1e400MFLOPs"], "--budget '1e400MFLOPs' must be greater than zero and at most"),
    (["search", "--budget", "1e308GFLOPs"], "at most"),
    (["search", "--budget", "10MFLOPs", "--population", "0"], "--population must be a whole number from 2"),
    (["search", "--budget", "10MFLOPs", "--zoo", "("], "--zoo '(' is not a valid regular expression"),
    (["search", "--budget", "10MFLOPs", "--threads", "0"], "--threads must be a whole number from 1"),
    (["search", "--budget", "10MFLOPs", "--workers", "-3"], "--workers must be a whole number from 1"),
    (["search", "--budget", "10MFLOPs", "--trials", "0"], "--trials must be a whole number from 1"),
    (["search", "--budget", "10MFLOPs", "--heartbeat", "0"], "--heartbeat must be a whole number of seconds"),
    (["search", "--budget", "10MFLOPs", "--name", "a" * 300], "a run name is 1 to 100"),
    (["search", "--budget", "10MFLOPs", "--name", "x\ny"], "a run name is 1 to 100"),
    (["search", "--budget", "10MFLOPs", "--timeout=-5m"], "--timeout '-5m' is not a duration"),
    (["search", "--budget", "10MFLOPs", "--space", "nospace"], "neither a file nor a shipped space"),
    (["train", "SPEC", "--threads", "0", "--dataset", "synthetic"], "TrainConfig.threads must be at least 1"),
    (["train", "SPEC", "--epochs", "0", "--dataset", "synthetic"], "TrainConfig.epochs must be at least 1"),
    (["train", "SPEC", "--batch-size", "abc"], "argument --batch-size: invalid int value"),
    (["train", "SPEC", "--dataset", "nosuchset"], "--dataset 'nosuchset' is not one of"),
    (["profile", "SPEC", "--input-size", "1x0x28"], "--input-size '1x0x28' is not of the form"),
    (["worker", "r", "--storage", "mysql://u:hunter2@nohost/db"], "--storage mysql://u:***@nohost/db"),
    (["search", *TINY_SEARCH, "--seed", "-1"], "--seed must be a whole number from 0 to 4294967295, got -1."),
    (["search", *TINY_SEARCH, "--seed", str(2**32)], "--seed must be a whole number from 0 to 4294967295"),
    (["search", *TINY_SEARCH, "--device", "bogus"], "--device 'bogus' is not one of auto, cpu, cuda, cuda:N."),
    (["search", *TINY_SEARCH, "--device", "cuda:x"], "--device 'cuda:x' is not one of auto, cpu, cuda, cuda:N."),
    (["train", "SPEC", "--dataset", "synthetic", "--seed", "-1"], "TrainConfig.seed must be a whole number from 0"),
    (["train", "SPEC", "--dataset", "synthetic", "--device", "bogus"],
     "TrainConfig.device: 'bogus' is not one of auto, cpu, cuda, cuda:N."),
])
def test_bad_command_lines_are_one_line_with_status_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    argv = [_spec_file(tmp_path) if arg == "SPEC" else arg for arg in argv]
    assert main([*argv, "--runs-dir", "runs"] if argv[0] in ("search", "train") else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bsnas: error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("changes", [{"num_classes": 10**9}, {"blocks": [{"type": "conv", "op": "regular",
                                                                        "out_channels": 10**9}]},
                                     {"blocks": [{"type": "conv", "op": "regular", "out_channels": 3,
                                                  "kernel_size": 3.0}]},
                                     {"blocks": [{"type": "conv", "op": "regular", "out_channels": 3,
                                                  "stride": True}]},
                                     {"blocks": [{"type": "conv", "op": "regular", "out_channels": 3,
                                                  "kernel_size": True}]}])
def test_the_specs_of_issue_11_are_refused_before_any_run(tmp_path, capsys, changes):
    spec = _spec_file(tmp_path, **changes)
    assert main(["train", spec, "--dataset", "synthetic", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bsnas: error: {spec}: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_the_deepest_yaml_the_size_cap_allows_is_refused_fast(tmp_path):
    """Issue 21: 500,000 nested '[' (1 MB) took 1134 s to refuse: PyYAML's scanner is quadratic in the depth."""
    import time

    path = tmp_path / "deep.yaml"
    path.write_bytes(b"[" * (MAX_YAML_BYTES // 2) + b"]" * (MAX_YAML_BYTES // 2))
    assert path.stat().st_size == MAX_YAML_BYTES  # the largest size that is read
    for load in (load_spec, load_space):
        start = time.perf_counter()
        with pytest.raises(BsnasError) as error:
            load(path)
        assert time.perf_counter() - start < 2.0
        assert _one_line(error.value).startswith(f"{path}: nested more than ")


@pytest.mark.parametrize("text", ["name: x\nnum_classes: " + "9" * 5000 + "\n", "name: x\nwhen: 2024-13-45\n"])
def test_a_number_or_date_yaml_cannot_hold_is_one_line(tmp_path, text):
    """Issue 21: a 5000-digit integer ended in `ValueError: Exceeds the limit (4300 digits)`."""
    path = tmp_path / "input.yaml"
    path.write_text(text)
    for load in (load_spec, load_space):
        with pytest.raises(BsnasError) as error:
            load(path)
        assert _one_line(error.value).startswith(f"{path}: ")


# Names that become file names: every writer refuses a name that could leave its folder (issue 21)

NAMES = st.one_of(st.text(max_size=120), st.from_regex(r"[A-Za-z0-9._/-]{1,12}", fullmatch=True),
                  st.sampled_from(["..", ".", "../x", "a/../..", "/tmp/bsnas-name", "-rf", ".hidden", "x" * 101,
                                   "x" * 100, "ok_name-1.2"]))
ESCAPE = "../../../../escaped/evilname"


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("export_format", ["yaml", "onnx"])
def test_export_refuses_a_spec_name_that_would_leave_the_runs_folder(tmp_path, capsys, export_format):
    """Issue 21: a spec named ../../../../tmp/x/evilname was exported to runs/exports/../../../../tmp/x/."""
    if export_format == "onnx":
        pytest.importorskip("onnxruntime")
    spec = Path(_spec_file(tmp_path, name=ESCAPE))
    runs = tmp_path / "a" / "b" / "runs"
    assert main(["export", str(spec), "--format", export_format, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bsnas: error: {spec}: name '{ESCAPE}': ") and "-o FILE" in err
    assert len(err.strip().splitlines()) == 1 and _files(tmp_path) == {spec}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_exported_spec_name_stays_in_the_runs_folder_or_is_one_line(tmp_path, capsys, name):
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        spec = Path(_spec_file(Path(folder), name=name))
        status = main(["export", str(spec), "--runs-dir", str(Path(folder) / "runs")])
        out, err = capsys.readouterr()
        if status == 0:
            written = Path(out.strip())
            assert written.resolve().parent == (Path(folder) / "runs" / "exports").resolve()
            assert _files(Path(folder)) == {spec, written} and written.name == f"{name}.yaml" and is_name(name)
        else:
            assert status == 2 and err.startswith("bsnas: error: ") and len(err.strip().splitlines()) == 1
            assert _files(Path(folder)) == {spec}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_trial_name_stays_in_the_pareto_folder_or_is_one_line(tmp_path, name):
    spec = dataclasses.replace(get_spec("cifar_mobilenetv3_small_w7d20", 10, 1, 28), name=name)
    trial = create_trial(values=[0.5, 1.0], user_attrs={"spec": json.dumps(spec_to_dict(spec)), "trial": 3})
    record = types.SimpleNamespace(front=lambda: [trial])  # export_front reads the front only
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        pareto = Path(folder) / "run" / "pareto"
        try:
            written = export_front(record, pareto)
        except BsnasError as error:
            assert _one_line(error).startswith(("trial 3: name ", "trial -1: name: "))  # the rule, or the spec's
            assert _files(Path(folder)) == set()
            return
        assert [path.resolve().parent for path in written] == [pareto.resolve()] and is_name(name)
        assert _files(Path(folder)) == set(written)


def test_a_space_name_that_would_leave_the_runs_folder_is_refused_before_the_search(tmp_path, monkeypatch,
                                                                                      capsys):
    """Issue 21: a space named ../../../../../tmp/x/spacename wrote spacename_t0.yaml outside the runs folder."""
    monkeypatch.chdir(tmp_path)
    space = _write(tmp_path, {**SPACE, "name": ESCAPE})
    assert main(["search", *TINY_SEARCH, "--space", str(space), "--runs-dir", "runs", "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bsnas: error: {space}: name: '{ESCAPE}' is not 1 to ")
    assert len(err.strip().splitlines()) == 1 and _files(tmp_path) == {space}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_space_name_names_its_trials_by_the_rule_or_is_one_line(tmp_path, name):
    path = _write(tmp_path, {**SPACE, "name": name})
    try:
        space = load_space(path)
    except BsnasError as error:
        assert _one_line(error).startswith(f"{path}: name: ")
        return
    assert is_name(f"{space.name}_t{10**8 - 1}")  # the largest trial number a search gets to


def test_a_space_file_without_a_name_is_named_after_its_file_by_the_rule(tmp_path):
    document = {key: value for key, value in SPACE.items() if key != "name"}
    path = tmp_path / ".my space (2).yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_space(path).name == "my_space_2_"


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
@pytest.mark.parametrize("command", [["search", *TINY_SEARCH], ["train", "SPEC", "--dataset", "synthetic",
                                                                "--epochs", "1", "--subset", "64"]])
def test_device_cuda_without_a_gpu_is_one_line_before_any_run(tmp_path, monkeypatch, capsys, command):
    """Issue 21: --device cuda on a machine without a GPU gave 70 lines and two tracebacks."""
    monkeypatch.chdir(tmp_path)
    argv = [_spec_file(tmp_path) if arg == "SPEC" else arg for arg in command]
    assert main([*argv, "--device", "cuda", "--runs-dir", "runs"]) == 2
    err = capsys.readouterr().err
    assert err == "bsnas: error: --device cuda was asked for but torch sees no CUDA GPU; use --device cpu.\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # TPE's group=True
@pytest.mark.parametrize("sampler", ["nsga2", "evolution", "tpe", "random", "predictor"])
def test_the_largest_seed_seeds_every_workers_sampler(sampler):
    """Worker k's sampler is seeded with seed + 1000 k: past 2**32 - 1, numpy refuses the seed."""
    from bsnas.search.config import SearchConfig
    from bsnas.search.samplers import create_sampler

    config = SearchConfig(name="s", space_file="mobilenet", budgets=(parse_budget("2MFLOPs"),), seed=2**32 - 1,
                          sampler=sampler, workers=8)
    space = load_space(shipped_space_path("mobilenet"))
    for worker in range(config.workers):
        create_sampler(config, space, worker).reseed_rng()


# Storages and run folders that cannot be used: one line, nothing half-made (issue 21)

@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://", "sqlite:///:memory:"])
def test_an_sqlite_url_without_a_file_is_one_line(tmp_path, monkeypatch, capsys, url):
    """Issue 21: --storage sqlite:/// (an in-memory database, one per connection) ended in 'no such table'."""
    monkeypatch.chdir(tmp_path)
    assert main(["search", *TINY_SEARCH, "--storage", url, "--runs-dir", "runs", "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bsnas: error: --storage {url}: an SQLite URL names a file") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def read_only(tmp_path, monkeypatch):
    """A folder whose file system is read-only: os.mkdir inside it fails with EROFS (chmod would not stop root)."""
    import errno
    import os

    folder = tmp_path / "read-only"
    folder.mkdir()
    mkdir = os.mkdir

    def refuse(path, *args, **kwargs):
        if Path(path).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refuse)
    return folder


@pytest.mark.parametrize("runs", ["read-only", "/proc/1", "a-file"])
@pytest.mark.parametrize("command", ["search", "train"])
def test_a_runs_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys, read_only, runs, command):
    """Issue 21: a read-only runs folder gave an 18-line OSError (search and train), --runs-dir /proc/1 a
    FileNotFoundError."""
    monkeypatch.chdir(tmp_path)
    Path("a-file").write_text("")
    argv = ["search", *TINY_SEARCH] if command == "search" else ["train", _spec_file(tmp_path), "--dataset",
                                                                  "synthetic", "--epochs", "1", "--subset", "64"]
    before = _files(tmp_path)
    assert main([*argv, "--runs-dir", runs, "--name", "r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"bsnas: error: {runs}/r: cannot create the run folder (") and len(err) <= 2  # a note
    assert err[-1].endswith("); give --runs-dir a folder you can write to.")
    assert _files(tmp_path) == before and list(read_only.iterdir()) == []


def _study_file(path: Path, name: str = "s", trials: int = 300) -> Path:
    """An SQLite study of `trials` trials with 2 kB of attributes each: some 200 pages, all in the file."""
    import optuna

    from bsnas.search.storage import open_storage

    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("config", {"rungs": 1})
    study.add_trials([create_trial(values=[0.5, float(n)], user_attrs={"spec": f"{n}" * 2000})
                      for n in range(trials)])
    storage.engine.dispose()  # the last connection closed: the write-ahead log is copied into the file
    return path


def _damage(path: Path, first_page: int = 20, last_page: int = 110) -> None:
    """Pages first..last of an SQLite file overwritten with random bytes (pages of 4096 bytes)."""
    with path.open("r+b") as file:
        assert path.stat().st_size > 4096 * last_page
        file.seek(4096 * first_page)
        file.write(random.Random(0).randbytes(4096 * (last_page - first_page + 1)))


def test_a_damaged_study_file_is_one_line_from_report_and_search(tmp_path, monkeypatch, capsys):
    """Issue 21: a study.db with pages 20-110 overwritten by random bytes: 95-125 lines ending in
    StorageInternalError, from report and search."""
    monkeypatch.chdir(tmp_path)
    study = _study_file(tmp_path / "runs" / "s" / "study.db")
    _damage(study)
    damaged = study.read_bytes()
    for argv in (["report", "s"], ["search", *TINY_SEARCH, "--name", "s"]):
        assert main([*argv, "--runs-dir", "runs"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("bsnas: error: runs/s/study.db: the SQLite file is damaged (") and err.count("\n") == 1
        assert "restore it from a backup" in err
    assert study.read_bytes() == damaged and sorted(p.name for p in study.parent.iterdir()) == ["study.db"]


def test_an_empty_study_file_is_said_to_be_empty_not_made_a_new_study(tmp_path, monkeypatch, capsys):
    """Issue 21: a zero-byte study.db silently started a new study."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "s"
    run.mkdir(parents=True)
    (run / "study.db").write_bytes(b"")
    (run / "search.yaml").write_text("name: s\n")  # a search ran here
    for argv in (["report", "s"], ["search", *TINY_SEARCH, "--name", "s"]):
        assert main([*argv, "--runs-dir", "runs"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("bsnas: error: runs/s/study.db is empty (0 bytes)") and err.count("\n") == 1
        assert (run / "study.db").stat().st_size == 0
    assert sorted(p.name for p in run.iterdir()) == ["search.yaml", "study.db"]
