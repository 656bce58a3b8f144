"""Search spaces: YAML files of per-block choices, decoded into `ArchSpec`s (Optuna imported for hints only).

`load_space`/`resolve_space` (validate) -> `SearchSpace` -> `sample(trial)` / `spec_from_params` (decode);
`params_of` (invert: zoo models as points); `space_size` and `cost_bounds` (summary).
"""

from __future__ import annotations

from bsnas.space.choices import Choice
from bsnas.space.decode import SearchSpace
from bsnas.space.invert import params_of
from bsnas.space.load import SHIPPED_SPACES, load_space, resolve_space, space_from_dict
from bsnas.space.summary import CostBounds, cost_bounds, space_size

__all__ = ["SHIPPED_SPACES", "Choice", "CostBounds", "SearchSpace", "cost_bounds", "load_space", "params_of",
           "resolve_space", "space_from_dict", "space_size"]
