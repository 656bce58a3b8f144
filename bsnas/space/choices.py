"""One field of a search space: a fixed value, a list of choices or a range, optionally conditional."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["Choice", "close", "show_value"]


@dataclass(frozen=True)
class Choice:
    """One field: fixed (`values` of length 1), categorical (`values`), or an int/float range; `when` conditions it."""

    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def is_int(self) -> bool:
        return self.is_range and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    @property
    def fixed(self) -> bool:
        return self.values is not None and len(self.values) == 1

    def count(self) -> float:
        """Number of distinct values (inf for a continuous range)."""
        if self.values is not None:
            return len(self.values)
        if self.is_int:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.step:
            return math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return math.inf

    def enumerate(self) -> list:
        """All values of a finite choice in order."""
        if self.values is not None:
            return list(self.values)
        if self.is_int:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step:
            return [self.low + i * self.step for i in range(int(self.count()))]
        raise ValueError("a continuous range cannot be enumerated")

    def applies(self, context: dict[str, Any]) -> bool:
        return all(context.get(key) in allowed for key, allowed in self.when)

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        if self.values is not None:
            return trial.suggest_categorical(name, list(self.values))
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def random(self, rng: random.Random) -> Any:
        if self.values is not None:
            return rng.choice(self.values)
        if self.is_int or self.step:
            return rng.choice(self.enumerate())
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def contains(self, value: Any) -> bool:
        if self.values is not None:
            return any(value == v and type(value) is type(v) or close(value, v) for v in self.values)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return self.low - 1e-12 <= value <= self.high + 1e-12

    def describe(self) -> str:
        condition = ""
        if self.when:
            condition = " when " + ", ".join(f"{k} in [{', '.join(show_value(x) for x in v)}]" for k, v in self.when)
        if self.values is not None:
            text = show_value(self.values[0]) if self.fixed else \
                "[" + ", ".join(show_value(v) for v in self.values) + "]"
        else:
            text = f"{show_value(self.low)}..{show_value(self.high)}" + \
                (f" step {show_value(self.step)}" if self.step else "")
            text += " (log)" if self.log else ""
        return text + condition


def close(a: Any, b: Any) -> bool:
    """Equal as numbers up to float rounding (a YAML 0.35 against a stored 0.35000000000000003)."""
    return (isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool)
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))



def show_value(value: Any) -> str:
    """A value as the YAML file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
