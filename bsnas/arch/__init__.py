"""Architectures as data, without torch: specs and their validation, the zoo, the plan and its cost.

`ArchSpec` (raw choices) -> `bsnas.arch.plan.plan` (every derived fact: layers, channels, shapes) ->
`bsnas.arch.cost.cost` (FLOPs and parameters; `bsnas.cost` at the top). `bsnas.nn` builds modules from the same plan.
"""

from __future__ import annotations

from bsnas.arch.cost import Cost
from bsnas.arch.files import load_spec, read_yaml, save_spec
from bsnas.arch.plan import Plan
from bsnas.arch.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec, spec_hash, spec_to_dict, spec_to_yaml
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import default_input, get_spec, list_models, resolve_spec

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "Cost",
    "HeadSpec",
    "Plan",
    "StemSpec",
    "default_input",
    "get_spec",
    "list_models",
    "load_spec",
    "read_yaml",
    "resolve_spec",
    "save_spec",
    "spec_from_dict",
    "spec_hash",
    "spec_to_dict",
    "spec_to_yaml",
]
