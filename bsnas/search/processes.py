"""The worker processes of a search or a calibration: started together (spawn), watched, stopped together.

A stop of the parent (Ctrl-C, or SIGTERM) stops its workers before it goes: the parent notes the signal (an
exception raised in the middle of a storage read could come out as another error), asks each worker to stop
with SIGTERM, kills one still there after 10 s, and raises KeyboardInterrupt (`Terminated` for SIGTERM). A
worker stops at once, like Ctrl-C: its running training fails and is queued again (a stop that lands in a
storage write leaves that trial to the heartbeat check, as a kill would), and it exits quietly. A worker whose
parent is killed outright (SIGKILL) goes on with the shared storage; its trainings are kept.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from bsnas.errors import StorageFault, Terminated

__all__ = ["STORAGE_LOST", "run_processes"]

STOPS = (signal.SIGINT, signal.SIGTERM)
STORAGE_LOST = 75  # the exit status of a worker whose storage failed (EX_TEMPFAIL: run again once it is back)


def run_processes(target: Callable, arguments: Sequence[tuple], name: str, poll_s: float,
                  on_poll: Callable[[], None] | None = None) -> list[int]:
    """Run `target(*args)` in one spawned process per entry of `arguments` until all have ended; call `on_poll`
    every `poll_s` seconds meanwhile and once at the end. Returns their exit codes (`STORAGE_LOST` for a process
    whose storage failed, `StorageFault`). When `on_poll` fails, the processes are stopped first."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(target, args), name=f"{name}-{index}")
                 for index, args in enumerate(arguments)]
    stops: list[int] = []
    watching = threading.current_thread() is threading.main_thread()  # only the main thread gets signals
    previous = {stop: signal.signal(stop, lambda signum, frame: stops.append(signum)) for stop in STOPS} \
        if watching else {}
    try:
        for process in processes:
            process.start()
        next_poll = time.monotonic()
        while not stops and (alive := [process.sentinel for process in processes if process.is_alive()]):
            if on_poll and time.monotonic() >= next_poll:
                on_poll()
                next_poll = time.monotonic() + poll_s
            multiprocessing.connection.wait(alive, timeout=min(poll_s, 0.5))  # a stop is seen within 0.5 s
    except BaseException:
        _stop(processes)
        raise
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    if stops:
        _stop(processes)
        raise Terminated if stops[0] == signal.SIGTERM else KeyboardInterrupt
    if on_poll:
        on_poll()
    return [process.exitcode for process in processes]


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


_stopping = False


# where a stop must not land: the database driver and Optuna's storage (it would surface as a storage error or a
# logged traceback, 'Error closing cursor'), logging, and finalisers
_NOT_HERE = ("/sqlalchemy/", "/sqlite3/", "/psycopg/", "/optuna/storages/", "/logging/", "/weakref.py")


def _interrupt(signum, frame) -> None:
    """A worker's SIGTERM/SIGINT: stop like Ctrl-C, but not in the middle of a storage call (try again 50 ms later,
    SIGALRM): a training is where it lands."""
    global _stopping
    _stopping = True
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _NOT_HERE):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def _stop_again(unraisable) -> None:
    """A stop that landed in a finaliser or weakref callback, where Python can only print it ('Exception ignored
    in ...'): stop the worker at its next line instead, quietly."""
    if _stopping and isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # SIGALRM: the stop again, once this callback has returned
        return
    sys.__unraisablehook__(unraisable)


def _worker_main(target: Callable, args: tuple) -> None:
    for stop in (*STOPS, signal.SIGALRM):
        signal.signal(stop, _interrupt)
    sys.unraisablehook = _stop_again
    try:
        target(*args)
    except StorageFault:
        sys.exit(STORAGE_LOST)  # quietly: the parent says it once
    except BaseException:
        if not _stopping:
            raise  # a stop may surface as another error (raised inside a storage call): that one is quiet
