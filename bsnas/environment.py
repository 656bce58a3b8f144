"""Whether this Python has bsnas's core dependencies: `python3 -m bsnas` outside the environment bsnas was
installed into is one line saying how to run it, not a torch traceback."""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["CORE_MODULES", "environment_problem", "missing_modules"]

CORE_MODULES = ("torch", "torchvision", "optuna", "ptflops", "yaml", "rich", "matplotlib")  # pyproject's dependencies


def missing_modules() -> list[str]:
    """The core modules this Python cannot import (found without importing them)."""
    return [name for name in CORE_MODULES if importlib.util.find_spec(name) is None]


def environment_problem() -> str | None:
    """What keeps this Python from running bsnas, in one sentence (a core module it cannot import), or None."""
    missing = missing_modules()
    if not missing:
        return None
    return (f"this Python ({sys.executable}) has no {', '.join(missing)}: run bsnas from the environment it was "
            "installed into (.venv/bin/bsnas, or `source .venv/bin/activate` first), or install it here with "
            "pip install -e .")
