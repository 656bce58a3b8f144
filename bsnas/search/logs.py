"""Optuna's log as a search wants it: warnings only, and nothing about a trial that a stop (Ctrl-C, SIGTERM) ended."""

from __future__ import annotations

import logging
import warnings

import optuna

__all__ = ["quiet_optuna"]


class _AfterAStop(logging.Filter):
    """Drops Optuna's log from the first record of a trial ended by Ctrl-C or SIGTERM on (its traceback, then
    'failed with value None'): the process is stopping, and a stop is not an error."""

    stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.stopping = True
        return not self.stopping


_AFTER_A_STOP = _AfterAStop()


def quiet_optuna() -> None:
    """Optuna's log at warnings only, without its traceback for a trial that was stopped, and without warnings
    about experimental features."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_AFTER_A_STOP)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
