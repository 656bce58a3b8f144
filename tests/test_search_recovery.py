"""Real processes, really killed: a search on SQLite and on PostgreSQL survives SIGKILL of a worker and of the
whole search, and several searches started at once on one PostgreSQL study share its trials exactly."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # real processes killed and waited for: minutes (CI runs them: .ci/run)

TRIALS = 6
# synthetic data, trainings of a few seconds (long enough to be killed in), heartbeats every second
ARGS = ["--dataset", "synthetic", "--rungs", "1", "--proxy-images", "512", "--proxy-epochs", "6",
        "--budget", "2MFLOPs", "--zoo", "v3_small_w7d20$", "--sampler", "random", "--heartbeat", "1", "--quiet",
        "--threads", "1"]


def _search(storage_url: str, runs: Path, name: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "bsnas", "search", *ARGS, "--storage", storage_url, "--runs-dir", str(runs),
            "--name", name, *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _study(storage_url: str, name: str) -> optuna.Study:
    from bsnas.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=open_storage(storage_url))


def _wait_for_training(storage_url: str, name: str, process: subprocess.Popen, timeout: float = 120):
    """The first trial in training (polls the storage), while `process` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            for trial in _study(storage_url, name).get_trials(states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("status") == "training":
                    return trial
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started training")


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the search hung") from None
    return process.returncode, err


def test_a_worker_killed_mid_trial_is_retried_and_the_search_reaches_its_target(storage_url, tmp_path):
    process = _search(storage_url, tmp_path, "k", "--trials", str(TRIALS), "--workers", "2")
    victim = _wait_for_training(storage_url, "k", process)
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    code, err = _finish(process)
    study = _study(storage_url, "k")
    assert study.trials[victim.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert retries and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["slot"] == victim.user_attrs["slot"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS == len({t.user_attrs["slot"] for t in complete})
    assert "1 worker process(es) exited with an error" in err and code == 1  # the kill is reported, not hidden


def test_a_search_killed_whole_resumes_with_its_finished_trials_unchanged(storage_url, tmp_path):
    process = _search(storage_url, tmp_path, "w", "--trials", str(TRIALS), "--workers", "2")
    _wait_for_training(storage_url, "w", process)
    time.sleep(2)
    os.killpg(process.pid, signal.SIGKILL)  # the parent and both workers
    process.wait(timeout=30)
    before = {t.number: (t.values, t.user_attrs["spec_hash"]) for t in _study(storage_url, "w").trials
              if t.state == TrialState.COMPLETE}
    code, err = _finish(_search(storage_url, tmp_path, "w", "--trials", str(TRIALS), "--workers", "2"))
    assert code == 0, err
    study = _study(storage_url, "w")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS == len({t.user_attrs["slot"] for t in complete})
    assert {n: v for n, v in ((t.number, (t.values, t.user_attrs["spec_hash"])) for t in complete)
            if n in before} == before


def test_three_searches_on_one_postgresql_study_share_it_exactly(postgres_url, tmp_path):
    import sqlalchemy

    database = f"three_{os.getpid()}"
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        connection.exec_driver_sql(f"CREATE DATABASE {database}")
    engine.dispose()
    url = sqlalchemy.engine.make_url(postgres_url).set(database=database).render_as_string(hide_password=False)
    zoo = "v3_small_w7d20(_pfd)?$|v2_w1d4_pfd$"
    searches = [_search(url, tmp_path / f"machine{i}", "shared", "--trials", "12", "--workers", "1",
                        "--zoo", zoo, "--proxy-epochs", "2") for i in range(3)]
    results = [_finish(process) for process in searches]
    assert [code for code, _ in results] == [0, 0, 0], [err[-1500:] for _, err in results]
    study = _study(url, "shared")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 == len({t.user_attrs["slot"] for t in complete})  # one per slot, none lost
    trained = [t.user_attrs["spec_hash"] for t in complete if t.user_attrs["status"] == "trained"]
    assert len(trained) == len(set(trained))  # no architecture trained twice
    zoo_counts = collections.Counter(t.user_attrs.get("zoo") for t in complete if t.user_attrs.get("zoo"))
    assert zoo_counts == {name: 1 for name in ("cifar_mobilenetv3_small_w7d20", "cifar_mobilenetv3_small_w7d20_pfd",
                                               "cifar_mobilenetv2_w1d4_pfd")}
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 3  # every search trained some
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _any_training_running(storage_url: str) -> bool:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        summaries = optuna.get_all_study_summaries(storage_url)
        return any(optuna.load_study(study_name=s.study_name, storage=storage_url)
                   .get_trials(deepcopy=False, states=(TrialState.RUNNING,)) for s in summaries)
    except Exception:  # the storage is still being created
        return False


@pytest.mark.parametrize("command", ["search", "calibrate"])
def test_sigterm_to_the_parent_stops_its_workers_and_leaves_no_training_running(command, tmp_path):
    """`kill PID` (a service manager's stop) reaches the parent only: it must stop its worker processes (they
    trained on for minutes, orphaned), then exit non-zero with one line and no traceback from anyone."""
    if command == "search":
        url = f"sqlite:///{tmp_path / 'search.db'}"
        argv = ["search", *ARGS, "--storage", url, "--trials", "100", "--name", "t"]
    else:
        url = f"sqlite:///{tmp_path / 't' / 'calibrate.db'}"
        argv = ["calibrate", "--dataset", "synthetic", "--budget", "2MFLOPs", "--candidates", "20", "--rungs", "1",
                "--proxy-images", "512", "--proxy-epochs", "6", "--reference-epochs", "3", "--name", "t"]
    process = subprocess.Popen([sys.executable, "-m", "bsnas", *argv, "--workers", "2", "--runs-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _any_training_running(url):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        process.terminate()  # SIGTERM to the parent alone
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(process.pid), "worker processes outlived their parent"
        _, err = process.communicate(timeout=10)
        assert process.returncode == 143 and err.strip().splitlines()[-1] == "bsnas: terminated", err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def test_the_database_going_away_mid_search_is_one_line_and_the_search_resumes_once_it_is_back(tmp_path):
    """PostgreSQL stopped mid-search (`pg_ctl stop -m immediate`): 500-740 lines with 13-17 tracebacks from the
    workers and the parent, rc 1. Now one line that says the storage went away and how to resume."""
    from conftest import PostgresServer

    server = PostgresServer(40000 + os.getpid() % 10000)
    try:
        process = _search(server.url, tmp_path, "gone", "--trials", str(TRIALS), "--workers", "2")
        _wait_for_training(server.url, "gone", process)
        server.stop()
        code, err = _finish(process, timeout=120)
        assert code == 1 and "Traceback" not in err, err[-3000:]
        lines = err.strip().splitlines()
        assert lines[-1].startswith("bsnas: error: the storage postgresql://") and \
            lines[-1].endswith("run the same command again to resume once it is back."), err[-3000:]
        assert len([line for line in lines if line.startswith("bsnas: error")]) == 1
        server.start()
        code, err = _finish(_search(server.url, tmp_path, "gone", "--trials", str(TRIALS), "--workers", "2"))
        assert code == 0, err[-3000:]
        study = _study(server.url, "gone")
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TRIALS == len({t.user_attrs["slot"] for t in complete})
        trained = [t.user_attrs["spec_hash"] for t in complete if t.user_attrs["status"] == "trained"]
        assert len(trained) == len(set(trained))
    finally:
        server.remove()
