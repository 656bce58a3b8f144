"""The architecture search: a multi-objective Optuna study over a search space, trained in rungs of fidelity.

The modules follow the data flow: `config` (every setting, `SearchConfig`) and `budget` (cost budgets) ->
`candidate` (a sampled spec costed and shrunk into the budget) -> `objective` (one trial: sample, cost, train at
rung 0) and `evaluator` (the proxy trainings of each rung) -> `rungs` (trainings at a rung, once each) and
`promotion` (ASHA within cost bins) -> `scheduler` (every job on every study: queue, claim, own, recover, bounded
waits), `slots` (the N trials of a search), `warm_start` (the zoo's first slots), `samplers`, `evolution`, and
`guided` with its `predictor` (what is proposed) -> `workers` (`run_search`: the worker processes' priority list)
and `processes` (starting and stopping them) -> `study` (create, check and open a search's study) and `storage`
(Optuna's RDB storage) -> `front` (the Pareto front at the top rung and the picks) and `hypervolume` (how good a
front is); beside them `calibrate` (how well each rung ranks, with `ranking`'s correlations) and `reproduce` (a
trial trained again).
"""

from __future__ import annotations

from bsnas.search.budget import Budget, parse_budget
from bsnas.search.config import SearchConfig
from bsnas.search.front import SearchRecord, pick
from bsnas.search.study import load_record
from bsnas.search.workers import SearchResult, run_search, run_workers

__all__ = ["Budget", "SearchConfig", "SearchRecord", "SearchResult", "load_record", "parse_budget", "pick",
           "run_search", "run_workers"]
