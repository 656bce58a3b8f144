"""Cost budgets of a search: `100MFLOPs`, `1.5Mparams`, `4ms`, `500us` to `Budget(kind, limit)`.

FLOPs and parameter counts take the SI prefixes k, M, G (x1e3, x1e6, x1e9); latency takes ms or us
(stored in milliseconds). FLOPs are counted in the convention of `bsnas.profile` at the dataset's
input size, latency is the median forward time of one image (batch 1) on the search device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bsnas.errors import BsnasError

__all__ = ["COST_KINDS", "Budget", "parse_budget", "format_cost", "check_budgets"]

COST_KINDS = ("flops", "params", "latency")
_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_UNITS = {"flops": "flops", "flop": "flops", "params": "params", "param": "params", "p": "params",
          "ms": "latency", "us": "latency", "µs": "latency"}
_PATTERN = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?\s*"
                      r"(?P<prefix>[kKMG]?)(?P<unit>(?i:flops?|params?|ms|us|µs))\s*$")
_NUMBER = r"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?\s*"
_WRONG_CASE = re.compile(_NUMBER + r"(?P<prefix>[mg])(?P<unit>(?i:flops?|params?))\s*$")  # m is milli, not mega
_NO_UNIT = re.compile(_NUMBER + r"(?P<prefix>[kKMGmg]?)\s*$")
_EXAMPLES = "e.g. 100MFLOPs, 1.5Mparams, 4ms or 500us"
_LARGEST = {"flops": 1e18, "params": 1e12, "latency": 1e9}  # far beyond any model bsnas builds; finite


@dataclass(frozen=True)
class Budget:
    """An upper limit on one cost: `kind` in COST_KINDS, `limit` in FLOPs, parameters or milliseconds."""

    kind: str
    limit: float

    def violation(self, value: float) -> float:
        """Optuna constraint value: relative excess over the limit (<= 0 is within the budget)."""
        return (value - self.limit) / self.limit

    def __str__(self) -> str:
        return format_cost(self.kind, self.limit)


def parse_budget(text: str) -> Budget:
    """Parse one `--budget` value; a malformed one is a BsnasError naming the value and the forms allowed."""
    match = _PATTERN.match(str(text))
    if match is None:
        raise BsnasError(_what_is_wrong(str(text)))
    number = float(f"{match['number']}e{match['exp'] or 0}")  # inf for a value beyond float, never an exception
    unit = match["unit"].lower()
    kind = _UNITS[unit]
    prefix = match["prefix"]
    if kind == "latency":
        if prefix:
            raise BsnasError(f"--budget {text!r}: a latency takes ms or us without a prefix; use {_EXAMPLES}.")
        limit = number / 1000.0 if unit in ("us", "µs") else number
    else:
        limit = number * _PREFIX[prefix]
    if not 0 < limit <= _LARGEST[kind]:
        raise BsnasError(f"--budget {text!r} must be greater than zero and at most "
                         f"{format_cost(kind, _LARGEST[kind])}.")
    return Budget(kind, limit)


def _what_is_wrong(text: str) -> str:
    """Why a budget does not parse, as the rest of its message: a prefix in the wrong case, no unit, or neither."""
    if match := _WRONG_CASE.match(text):
        number = text[:match.start("prefix")].strip()
        unit = "FLOPs" if match["unit"].lower().startswith("flop") else "params"
        return (f"--budget {text!r}: prefixes are case-sensitive and {unit} take k, M or G ({match['prefix']} is "
                f"not one); write {number}{match['prefix'].upper()}{unit}.")
    if match := _NO_UNIT.match(text):
        number = text[:match.start("prefix")].strip()
        prefix = match["prefix"].upper() if match["prefix"] in "mg" else match["prefix"]
        latency = f"{number}ms" if match["prefix"] == "m" else "a latency such as 4ms"
        return f"--budget {text!r} has no unit: write {number}{prefix}FLOPs, {number}{prefix}params or {latency}."
    return f"--budget {text!r} is not a number with a unit; use {_EXAMPLES}."


def check_budgets(budgets: list[Budget]) -> list[Budget]:
    """At most one budget per cost kind; returns the list unchanged."""
    seen: set[str] = set()
    for budget in budgets:
        if budget.kind in seen:
            raise BsnasError(f"--budget given twice for {budget.kind}; give at most one budget per cost.")
        seen.add(budget.kind)
    return budgets


def format_cost(kind: str, value: float | None) -> str:
    """Human form of a cost: `95.3 MFLOPs`, `1.52 Mparams`, `3.41 ms`."""
    if value is None:
        return "-"
    if kind == "latency":
        return f"{value:.2f} ms" if value >= 1 else f"{value * 1000:.0f} us"
    unit = "FLOPs" if kind == "flops" else "params"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.0f} {unit}"
