"""The worker processes of a search or a calibration: started together (spawn), watched, stopped together.

A stop of the parent (Ctrl-C; SIGTERM, which the CLI raises as `Terminated`) stops its workers before it goes:
each takes SIGTERM like Ctrl-C (its running training fails and is queued again), and one still there after 10 s
is killed. A worker whose parent is killed outright (SIGKILL) goes on with the shared storage; its trainings are
kept.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable, Sequence

__all__ = ["run_processes"]


def run_processes(target: Callable, arguments: Sequence[tuple], name: str, poll_s: float,
                  on_poll: Callable[[], None] | None = None) -> int:
    """Run `target(*args)` in one spawned process per entry of `arguments` until all have ended; call `on_poll`
    at least every `poll_s` seconds meanwhile and once at the end. Returns how many exited with an error."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(target, args), name=f"{name}-{index}")
                 for index, args in enumerate(arguments)]
    try:
        for process in processes:
            process.start()
        while alive := [process.sentinel for process in processes if process.is_alive()]:
            if on_poll:
                on_poll()
            multiprocessing.connection.wait(alive, timeout=poll_s)
    except KeyboardInterrupt:
        _stop(processes)
        raise
    if on_poll:
        on_poll()
    return sum(process.exitcode != 0 for process in processes)


def _stop(processes: list) -> None:
    """Ask the workers to stop (SIGTERM), wait up to 10 s each, then kill the ones still there."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        if process.pid is None:
            continue  # never started
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _worker_main(target: Callable, args: tuple) -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # the parent's stop: end like Ctrl-C
    try:
        target(*args)
    except KeyboardInterrupt:
        pass
