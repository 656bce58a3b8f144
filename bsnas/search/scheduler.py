"""The scheduler: every piece of search work is a job in an Optuna study, and every rule about jobs lives here.

A study is a queue (`JobQueue`). A job is a trial queued WAITING with its attributes (and, for a zoo model, its
parameters) in one write (`put`); Optuna hands the lowest queued trial to exactly one worker (`run_next`, through
`Study.optimize`, which also keeps the job's heartbeats). A job names what it is for in one attribute, the queue's
`key`: `slot` for the trials of a search, `spec_hash` for the trainings of a rung or a calibration. Of the jobs for one
value of the key, the lowest-numbered one that is live (waiting, running) or done (complete, or failed for good)
owns it (`owner`); a later one is pruned when it starts, so two workers that queued the same thing at once never
both do it.

A worker that dies leaves its job RUNNING. `recover` fails such a job once its heartbeat went stale (Optuna's
`fail_stale_trials`) or, when it never beat (killed between taking the job and its first heartbeat), once it is
older than twice the grace period: a job beats once before its first attribute is written (`STARTED`), so a
RUNNING job without `STARTED` has no heartbeat that could ever go stale. Whoever still wants the work queues it
again (the slots, a waiting twin, promotion, calibration), until `MAX_DEATHS` of its jobs died (`settled`).

`work` is a worker: a priority list of sources of work, recovery before every look, and a wait bounded by the
grace period and the deadline while only other workers' jobs run. No wait here is longer than that.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.search.storage import grace_period

__all__ = ["MAX_DEATHS", "NO_DEADLINE", "STARTED", "Deadline", "JobFailed", "JobQueue", "Stopped", "attempts", "owner",
           "settled", "standing", "work"]

STARTED = "started"  # the first attribute of a job that runs (its number): it has beaten once (see the module doc)
MAX_DEATHS = 2  # jobs for one value of the key whose workers died before it is given up
LIVE, DONE = (TrialState.WAITING, TrialState.RUNNING), (TrialState.COMPLETE,)


class JobFailed(Exception):
    """A job that ran and failed (its training diverged, ran out of memory, or was given up). `final`: the failure
    is the job's result and owns its key (nothing runs it again); otherwise its source may queue new work."""

    def __init__(self, status: str, reason: str, final: bool = True):
        super().__init__(reason)
        self.status, self.reason, self.final = status, reason, final


class Stopped(Exception):
    """The deadline came before a job's work could start; the job ends `stopped` and runs again in a later run."""


class _Ended(Exception):
    """A job that failed or stopped with its reason recorded: Optuna marks it FAIL and the worker goes on."""


def standing(trial: FrozenTrial) -> str:
    """What a job is: `live` (waiting or running), `done` (complete, or failed for good), `failed` (ran and failed,
    not for good), `stopped` (the deadline came first), `died` (its worker died) or `surplus` (pruned)."""
    if trial.state in LIVE:
        return "live"
    if trial.state in DONE:
        return "done"
    if trial.state == TrialState.PRUNED:
        return "surplus"
    if "final" in trial.user_attrs:
        return "done" if trial.user_attrs["final"] else "failed"
    return "stopped" if trial.user_attrs.get("status") == "stopped" else "died"


@dataclass(frozen=True)
class Deadline:
    """A wall-clock time (`time.time()`, shared by the processes of a search) after which no work starts; None:
    none."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.time() + seconds)

    def passed(self) -> bool:
        return self.at is not None and time.time() >= self.at

    def left(self, most: float) -> float:
        """Seconds to wait: `most`, or less when the deadline comes first."""
        return most if self.at is None else max(0.0, min(most, self.at - time.time()))


NO_DEADLINE = Deadline()


@dataclass
class JobQueue:
    """An Optuna study as a queue of jobs that own the values of `key` (None: every trial is a job of its own,
    as in a search without --trials). `storage` is the study's (heartbeats are recorded through it)."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    key: str | None
    _study_id: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._study_id = self.storage.get_study_id_from_name(self.study.study_name)

    @property
    def grace_s(self) -> float:
        """Seconds without a heartbeat after which a job's worker counts as dead."""
        return grace_period(self.storage.get_heartbeat_interval())

    def jobs(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def has(self, *states: TrialState) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=states))

    def put(self, attrs: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        """Queue a job with its attributes (and fixed parameters), in one write."""
        self.study.enqueue_trial(params or {}, user_attrs=attrs, skip_if_exists=False)

    def owner(self, value: Any, jobs: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
        return owner(self.jobs() if jobs is None else jobs, self.key, value)

    def settled(self, value: Any, jobs: Sequence[FrozenTrial] | None = None) -> bool:
        return settled(self.jobs() if jobs is None else jobs, self.key, value)

    def run_next(self, job: Callable[[optuna.Trial], Sequence[float]],
                 callbacks: Sequence[Callable] = ()) -> None:
        """Take the lowest queued job and run `job(trial)` under heartbeats. A job whose key another owns, or a
        trial that found the queue empty after all (Optuna then makes a new one), is pruned at once; `JobFailed`
        and `Stopped` end it as FAIL with the reason; any other error stops the worker."""

        def run(trial: optuna.Trial) -> Sequence[float]:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)
            self.storage.record_heartbeat(trial_id)  # beats before STARTED: see the module doc
            trial.set_user_attr(STARTED, trial.number)
            if self.key is not None:
                value = trial.user_attrs.get(self.key)
                first = None if value is None else owner(self.jobs(), self.key, value)
                if first is None or first.number != trial.number:
                    trial.set_user_attr("status", "surplus")
                    raise optuna.TrialPruned("no queued job was left" if value is None else
                                             f"job {first.number} does it")
            try:
                return job(trial)
            except JobFailed as failure:
                for key, value in (("status", failure.status), ("reason", failure.reason), ("final", failure.final)):
                    trial.set_user_attr(key, value)
                raise _Ended(failure.reason) from None
            except Stopped as stop:
                trial.set_user_attr("status", "stopped")
                trial.set_user_attr("reason", str(stop))
                raise _Ended(str(stop)) from None

        self.study.optimize(run, n_trials=1, catch=(_Ended,), callbacks=list(callbacks), gc_after_trial=False)

    def recover(self) -> None:
        """Fail the jobs of dead workers: a stale heartbeat, or none at all after twice the grace period."""
        optuna.storages.fail_stale_trials(self.study)
        now = datetime.datetime.now()
        for job in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if STARTED in job.user_attrs or job.datetime_start is None or \
                    (now - job.datetime_start).total_seconds() < 2 * self.grace_s:
                continue
            try:
                self.study.tell(job.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker failed it first
                continue


def attempts(jobs: Iterable[FrozenTrial], key: str, value: Any) -> list[FrozenTrial]:
    """The jobs for `value` of `key`, in the order they were queued."""
    return [job for job in jobs if job.user_attrs.get(key) == value]


def owner(jobs: Iterable[FrozenTrial], key: str, value: Any) -> FrozenTrial | None:
    """The job that owns `value` of `key`: the lowest-numbered live or done one (the one rule of ownership)."""
    return next((job for job in attempts(jobs, key, value) if standing(job) in ("live", "done")), None)


def settled(jobs: Sequence[FrozenTrial], key: str, value: Any) -> bool:
    """Whether `value` of `key` needs no new job: one owns it, or `MAX_DEATHS` of its jobs died."""
    return owner(jobs, key, value) is not None or \
        sum(standing(job) == "died" for job in attempts(jobs, key, value)) >= MAX_DEATHS


def work(queues: Sequence[JobQueue], sources: Sequence[Callable[[], bool]], deadline: Deadline, wait_s: float,
         on_look: Callable[[], None] | None = None) -> None:
    """A worker: until the deadline, recover the queues' dead jobs, then do what the first source that has work
    does (a source returns whether it did something). When none has work but a job of another worker runs, wait
    `wait_s` (that job may die and come back) and look again; when nothing runs either, stop. `on_look` is called
    before every look (a live view)."""
    while not deadline.passed():
        for queue in queues:
            queue.recover()
        if on_look:
            on_look()
        if any(source() for source in sources):
            continue
        if not any(queue.has(TrialState.RUNNING) for queue in queues):
            return
        time.sleep(deadline.left(wait_s))
