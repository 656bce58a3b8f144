"""The live view of a running search on a terminal (progress, the front so far, time left); one plain line
per finished trial otherwise (stderr, so stdout stays free for results)."""

from __future__ import annotations

import sys
import time

from bsnas.search.front import SearchRecord, trial_number, trial_spec
from bsnas.search.slots import count_trials

__all__ = ["SearchProgress"]


class SearchProgress:
    """Live view on a terminal; plain lines otherwise. Call it with anything (workers pass their study): it reads
    the record afresh."""

    def __init__(self, record: SearchRecord, total: int | None, timeout: float | None, quiet: bool = False):
        from rich.console import Console

        self.record, self.total, self.timeout, self.quiet = record, total, timeout, quiet
        self.console = Console(stderr=True)
        self.live_view = None
        self.start = time.perf_counter()
        self.first_done: int | None = None
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

    def _left(self, done: int) -> str:
        """Time left: the timeout's, or (without one) the trials left at the pace so far."""
        elapsed = time.perf_counter() - self.start
        if self.first_done is None:
            self.first_done = done
        if self.timeout is not None:
            seconds = max(self.timeout - elapsed, 0.0)
        elif self.total is not None and done > self.first_done:
            seconds = elapsed / (done - self.first_done) * max(self.total - done, 0)
        else:
            return "time left ?"
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s left"

    def __call__(self, _study=None) -> None:
        if self.quiet:
            return
        counts = count_trials(self.record.study)
        done = counts["slots"] if self.total is not None else counts["complete"]
        progress = f"trial {done}/{self.total}" if self.total is not None and self.timeout is None else \
            f"{done} trials"
        share = counts["feasible"] / counts["complete"] if counts["complete"] else 0.0
        front = self.record.front() if counts["complete"] else []
        best = max(front, key=lambda t: t.values[0]) if front else None
        unit = self.record.unit
        best_text = f"best {best.values[0]:.2%} at {best.values[1]:.3g} {unit}" if best else "nothing trained yet"
        rungs = ""
        if len(self.record.rungs) > 1:
            trainings = self.record.trainings()
            rungs = "  trainings per rung " + "/".join(str(sum(rung in t for t in trainings.values()))
                                                        for rung in range(len(self.record.rungs)))
        line = (f"{progress}  running {counts['running']}  feasible {share:.0%}  trained {counts['trained']}  "
                f"duplicates {counts['duplicate']}{rungs}  front {len(front)} ({best_text})  {self._left(done)}")
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
