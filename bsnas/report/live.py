"""The live view of a running search on a terminal (progress, the front so far, time left); one plain line
per change otherwise (stderr, so stdout stays free for results).

Work in progress is every training that runs, at any rung: a worker training a promotion is as busy as one
training a new candidate. The time left comes from the work the rung ladder still holds (ASHA: of the candidates
rung 0 trains, the best 1/eta**r reach rung r, each training there as long as the ones finished there, or eta
times the rung below's while none has) at the pace this search has trained so far.
"""

from __future__ import annotations

import sys
import time

from optuna.trial import FrozenTrial, TrialState

from bsnas.search.front import SearchRecord, trial_number, trial_spec
from bsnas.search.promotion import results
from bsnas.search.slots import count_trials

__all__ = ["SearchProgress", "ladder_seconds_left", "running_trainings"]


def running_trainings(record: SearchRecord) -> list[int]:
    """Trainings in progress at each rung: the rung studies' running tickets that train (a promotion is one; a
    search trial waiting for its twin's result is not)."""
    return [sum(t.user_attrs.get("status") == "training" for t in study.get_trials(deepcopy=False,
                                                                                   states=(TrialState.RUNNING,)))
            for study in record.rungs]


def ladder_seconds_left(planned: float, eta: int, done: list[int], seconds: list[float | None]) -> float | None:
    """Training seconds the ladder still needs: `planned` trainings at rung 0 in all, int(planned / eta**r) at rung
    r; `done[r]` are finished there and took `seconds[r]` on average (None while none has: eta times the rung
    below's). None when not even rung 0 has a finished training."""
    left, below = 0.0, None
    for rung, (count, mean) in enumerate(zip(done, seconds, strict=True)):
        each = mean if mean is not None else (None if below is None else below * eta)
        if each is None:
            return None
        left += max(int(planned / eta**rung) - count, 0) * each
        below = each
    return left


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class SearchProgress:
    """Live view on a terminal; plain lines otherwise. Call it with anything (workers pass their study): it reads
    the record afresh."""

    def __init__(self, record: SearchRecord, total: int | None, timeout: float | None, quiet: bool = False):
        from rich.console import Console

        self.record, self.total, self.timeout, self.quiet = record, total, timeout, quiet
        self.eta = record.study.user_attrs.get("config", {}).get("eta", 3)
        self.console = Console(stderr=True)
        self.live_view = None
        self.start = time.perf_counter()
        self.work_at_start: float | None = None  # training seconds finished before this invocation
        self.last_line = ""

    def __enter__(self) -> SearchProgress:
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live_view = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live_view.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live_view is not None:
            self.live_view.stop()

    def _left(self, slots_done: int, by_rung: list[list[FrozenTrial]]) -> str:
        """Time left: the ladder's work left (with --trials) at this invocation's pace, and the timeout's."""
        elapsed = time.perf_counter() - self.start
        seconds = [[t.user_attrs.get("train_seconds") or 0.0 for t in tickets] for tickets in by_rung]
        work = sum(map(sum, seconds))
        if self.work_at_start is None:
            self.work_at_start = work
        estimates = []
        if self.timeout is not None:
            estimates.append(max(self.timeout - elapsed, 0.0))
        if self.total is not None and slots_done and work > self.work_at_start:
            planned = len(by_rung[0]) * self.total / slots_done  # rung-0 trainings per slot so far, for every slot
            left = ladder_seconds_left(planned, self.eta, [len(tickets) for tickets in by_rung],
                                       [sum(s) / len(s) if s else None for s in seconds])
            if left is not None:
                estimates.append(left * elapsed / (work - self.work_at_start))
        return f"{_duration(min(estimates))} left" if estimates else "time left ?"

    def __call__(self, _study=None) -> None:
        if self.quiet:
            return
        counts = count_trials(self.record.study)
        by_rung = [results(study) for study in self.record.rungs]
        done = counts["slots"] if self.total is not None else counts["complete"]
        progress = f"trial {done}/{self.total}" if self.total is not None and self.timeout is None else \
            f"{done} trials"
        share = counts["feasible"] / counts["complete"] if counts["complete"] else 0.0
        front = self.record.front() if counts["complete"] else []
        best = max(front, key=lambda t: t.values[0]) if front else None
        unit = self.record.unit
        best_text = f"best {best.values[0]:.2%} at {best.values[1]:.3g} {unit}" if best else "nothing trained yet"
        running = running_trainings(self.record)
        rungs = ""
        if len(by_rung) > 1:
            rungs = "  trainings per rung " + "/".join(str(len(tickets)) for tickets in by_rung)
            running_text = f"training {sum(running)} (per rung {'/'.join(map(str, running))})"
        else:
            running_text = f"training {sum(running)}"
        quality = self.record.prediction_quality() if self.record.sampler == "predictor" else []
        predictor = f"  predictor rho {quality[0][2]:+.2f} (rung 0, {quality[0][1]})" if quality else ""
        line = (f"{progress}  {running_text}  feasible {share:.0%}  trained {counts['trained']}  "
                f"duplicates {counts['duplicate']}{rungs}  front {len(front)} ({best_text}){predictor}  "
                f"{self._left(counts['slots'], by_rung)}")
        if self.live_view is None:
            status = line.rsplit("  ", 1)[0]
            if status != self.last_line:  # one line when something changed, not one per poll
                print(line, file=sys.stderr, flush=True)
                self.last_line = status
            return
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(show_edge=False)
        for column in ("trial", "architecture", "val acc", f"cost ({unit})"):
            table.add_column(column, justify="left" if column == "architecture" else "right", overflow="fold")
        for point in front[:12]:
            table.add_row(str(trial_number(point)), trial_spec(point).name, f"{point.values[0]:.2%}",
                          f"{point.values[1]:.4g}")
        self.live_view.update(Group(Text(line), table))
