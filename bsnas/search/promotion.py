"""Promotion across rungs: asynchronous successive halving (ASHA) within cost bins.

A short training underrates large networks: at rung 0 a net of 60 MFLOPs loses to nets of 5 MFLOPs that it
beats once trained, so ranking all candidates together (or by non-dominated sorting of accuracy and cost)
would never promote it. bsnas therefore splits the cost axis into `COST_BINS` log-spaced bins, from the
cheapest candidate of rung 0 to the budget, and runs ASHA's rule in each bin: of the n results a bin holds at
rung r, the best floor(n / eta) earn a training at rung r + 1. Asynchronous: a free worker promotes the first
candidate that has earned it (highest rung first) without waiting for a rung to fill, and it never promotes
a candidate twice; zoo models of the warm start compete under the same rule.

Everything lives in the rung studies (`bsnas.search.rungs`): a promotion is a queued ticket at the next rung,
so every worker and every resumed run agree on what is promoted, and a promotion whose worker died is queued
again (until the scheduler gives it up, `bsnas.search.scheduler.settled`).
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsnas.search.rungs import TICKET_KEY
from bsnas.search.scheduler import settled

__all__ = ["COST_BINS", "bin_edges", "cost_bin", "cost_edges", "best_first", "finished", "promotable",
           "next_promotion", "results", "top_rung"]

COST_BINS = 4


def results(study: optuna.Study) -> list[FrozenTrial]:
    """The finished trainings of a rung: complete tickets."""
    return finished(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def finished(tickets: list[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trainings among a rung's tickets (`results` of tickets read already)."""
    return [t for t in tickets if t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "trained"]


def bin_edges(low: float, high: float, bins: int = COST_BINS) -> list[float]:
    """`bins + 1` log-spaced edges from `low` to `high` (costs of zero or below share the first bin)."""
    low, high = max(low, 1e-12), max(high, low * (1 + 1e-9))
    step = (math.log(high) - math.log(low)) / bins
    return [math.exp(math.log(low) + i * step) for i in range(bins + 1)]


def cost_bin(cost: float, edges: list[float]) -> int:
    """The bin of `edges` that holds `cost` (costs beyond the last edge count in the last bin)."""
    for index, edge in enumerate(edges[1:-1]):
        if cost < edge:
            return index
    return len(edges) - 2


def best_first(ticket: FrozenTrial) -> tuple:
    """Sort key of a rung's results: the most accurate first; ties: the cheaper, then the earlier."""
    return -ticket.values[0], ticket.values[1], ticket.number


def promotable(tickets: list[FrozenTrial], eta: int, edges: list[float]) -> list[FrozenTrial]:
    """The tickets of one rung that earned promotion: in each cost bin, the best floor(n / eta) of its n results
    (ties: the cheaper, then the earlier), best first."""
    by_bin: dict[int, list[FrozenTrial]] = {}
    for ticket in tickets:
        by_bin.setdefault(cost_bin(ticket.values[1], edges), []).append(ticket)
    chosen = []
    for group in by_bin.values():
        group.sort(key=best_first)
        chosen += group[:len(group) // eta]
    return sorted(chosen, key=lambda t: (-t.values[0], t.number))


def cost_edges(base: list[FrozenTrial], budget: float | None) -> list[float]:
    """The cost bins of a search: from the cheapest result of rung 0 (`base`) to `budget` (the objective's, in its
    unit) or, without one, to rung 0's most costly result."""
    costs = [t.values[1] for t in base]
    return bin_edges(min(costs), budget if budget is not None else max(costs))


def next_promotion(rungs: list[optuna.Study], eta: int, budget: float | None) -> tuple[int, FrozenTrial] | None:
    """(rung, ticket) of the next candidate to train one rung higher, the highest rung first; None if none has
    earned it yet (or the rung above holds or gave up every one that has); cost bins as `cost_edges`."""
    base = results(rungs[0])
    if not base:
        return None
    edges = cost_edges(base, budget)
    for rung in range(len(rungs) - 2, -1, -1):
        above = rungs[rung + 1].get_trials(deepcopy=False)
        for ticket in promotable(base if rung == 0 else results(rungs[rung]), eta, edges):
            if not settled(above, TICKET_KEY, ticket.user_attrs[TICKET_KEY]):
                return rung, ticket
    return None


def top_rung(rungs: list[optuna.Study]) -> int:
    """The highest rung with a finished training (0 when none has one)."""
    return max((rung for rung, study in enumerate(rungs) if results(study)), default=0)
