"""The live view of a running search: trial i/N, feasible share, the front so far and the ETA on a terminal;
one plain line per finished trial otherwise (stderr, so stdout stays free for results)."""

from __future__ import annotations

import sys
import time

from bsnas.search.front import pareto_trials, trial_spec
from bsnas.search.study import count_trials

__all__ = ["SearchProgress"]


class SearchProgress:
    """Live view on a terminal (trial i/N, feasible share, front so far, ETA); plain lines otherwise."""

    def __init__(self, total: int | None, timeout: float | None, quiet: bool = False):
        from rich.console import Console

        self.total, self.timeout, self.quiet = total, timeout, quiet
        self.console = Console(stderr=True)
        self.live_view = None
        self.start = time.perf_counter()
        self.first_complete: int | None = None
        self.last_complete = -1

    def __enter__(self) -> SearchProgress:
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live_view = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live_view.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live_view is not None:
            self.live_view.stop()

    def _eta(self, complete: int) -> str:
        if self.first_complete is None:
            self.first_complete = complete
        elapsed = time.perf_counter() - self.start
        done = complete - self.first_complete
        estimates = []
        if self.total is not None and done > 0:
            estimates.append(elapsed / done * max(self.total - complete, 0))
        if self.timeout is not None:
            estimates.append(max(self.timeout - elapsed, 0))
        if not estimates:
            return "?"
        seconds = min(estimates)
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"

    def __call__(self, study) -> None:

        if self.quiet:
            return
        counts = count_trials(study)
        complete = counts["complete"]
        eta = self._eta(complete)
        if complete == self.last_complete and self.live_view is None:
            return
        self.last_complete = complete
        share = counts["feasible"] / complete if complete else 0.0
        front = pareto_trials(study) if complete else []
        total = self.total if self.total is not None else "?"
        best = max(front, key=lambda t: t.values[0]) if front else None
        best_text = f"best {best.values[0]:.2%} @ {best.values[1]:.3g}" if best else "no feasible trial yet"
        line = (f"trial {complete}/{total}  running {counts['running']}  feasible {share:.0%}  "
                f"trained {counts['trained']}  duplicates {counts['duplicate']}  front {len(front)} ({best_text})  "
                f"ETA {eta}")
        if self.live_view is None:
            print(line, file=sys.stderr, flush=True)
            return
        from rich.table import Table

        table = Table(title=line, title_justify="left", show_edge=False)
        for column in ("trial", "architecture", "val acc", "cost"):
            table.add_column(column, justify="left" if column == "architecture" else "right", overflow="fold")
        for trial in front[:12]:
            table.add_row(str(trial.number), trial_spec(trial).name, f"{trial.values[0]:.2%}", f"{trial.values[1]:.4g}")
        self.live_view.update(table)
