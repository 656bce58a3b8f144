"""The hypervolume of a front of (accuracy, cost) points: exact, in two dimensions.

The area that the points dominate between them and the reference point (cost = the budget, accuracy 0), with
cost measured as a share of the budget, so that it lies in [0, 1]: 1 would be a network of accuracy 1 that costs
nothing. A point over the budget adds nothing; a dominated point adds nothing. On the log-cost axis the cost
share runs from `low` (a cost at or below it counts as `low`) to the budget on a log scale:
x = log(cost / low) / log(budget / low).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["hypervolume", "nondominated"]


def nondominated(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (accuracy, cost) points that no other point beats in both (ties: one of each), cheapest first."""
    front: list[tuple[float, float]] = []
    for accuracy, cost in sorted(set(points), key=lambda point: (point[1], -point[0])):
        if not front or accuracy > front[-1][0]:
            front.append((accuracy, cost))
    return front


def hypervolume(points: Iterable[tuple[float, float]], budget: float, low: float | None = None) -> float:
    """Hypervolume of (accuracy, cost) points against the reference (budget, accuracy 0), cost as a share of
    `budget`; with `low` (0 < low < budget) on the log-cost axis from `low` to the budget."""
    if budget <= 0 or (low is not None and not 0 < low < budget):
        raise ValueError(f"need 0 < low < budget, got low={low}, budget={budget}")

    def share(cost: float) -> float:
        if low is None:
            return max(cost, 0.0) / budget
        return math.log(max(cost, low) / low) / math.log(budget / low)

    front = [(accuracy, share(cost)) for accuracy, cost in nondominated(points) if cost <= budget]
    edges = [x for _, x in front] + [1.0]
    return sum((edges[i + 1] - x) * accuracy for i, (accuracy, x) in enumerate(front))
