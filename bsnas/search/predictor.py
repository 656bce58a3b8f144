"""A performance predictor: the validation accuracy of an architecture at any rung, learnt from every training of a
search, so that the sampler (`bsnas.search.guided`) trains only the proposals it rates best.

Features (`features`) come from the architecture as the plan sees it, in a fixed length whatever the space: per
stage (blocks between two downsamplings, `STAGES` at most, the deeper ones merged into the last) the blocks, their
FLOPs and parameters (log), widths (log2), kernel sizes, operators (`OPS`, shares), expansion, SE, activations,
BSConv-S subspace share and padding-free downsampling; per model the blocks of each operator, FLOPs, parameters,
depth, stem and head. The rung of a training is one more feature, so one model learns from rung 0 and the promoted
trainings alike and predicts the top rung (White et al. 2021: tree ensembles rank well from few training points).

The model is scikit-learn's `ExtraTreesRegressor` (randomized trees): its trees' spread is the uncertainty the
acquisition needs, it refits in well under a second on a search's few hundred trainings, and a fixed seed makes it
deterministic, so every worker and a resumed search fitting on the same storage agree.
`benchmarks/predictor_quality.py` compares it with other regressors on finished searches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial
from sklearn.ensemble import ExtraTreesRegressor

from bsnas.arch.cost import node_cost, plan_cost
from bsnas.arch.plan import plan
from bsnas.arch.spec import ArchSpec, BlockSpec
from bsnas.arch.validate import spec_from_dict

__all__ = ["OPS", "STAGES", "Predictor", "Training", "features", "rung_trainings"]

STAGES = 5  # stages of the encoding; deeper ones count in the last
OPS = ("regular", "dsc", "bsconv_u", "bsconv_s")
TREES = 64
MIN_LEAF = 2


def _log(value: float) -> float:
    return math.log(1.0 + value)


def _block_row(block: BlockSpec, in_channels: int) -> list[float]:
    """What one block adds to its stage's sums: count, width, kernel, operators, expansion, SE, hard-swish, p,
    padding-free."""
    expansion = block.mid_channels / in_channels if block.mid_channels else 1.0
    return [1.0, math.log2(block.out_channels), block.kernel_size, *(float(block.op == op) for op in OPS), expansion,
            float(block.se), float(block.act == "hswish"), block.p or 0.0, float(block.padding_free)]


def features(spec: ArchSpec) -> list[float]:
    """The encoding of `spec` (a fixed-length vector; see the module's docstring)."""
    network = plan(spec)
    width = len(_block_row(BlockSpec("conv", "regular", 1), 1))
    sums = [[0.0] * width for _ in range(STAGES)]
    flops = [0.0] * STAGES
    params = [0.0] * STAGES
    stage, in_channels = 0, spec.stem.out_channels
    for block, node in zip(spec.blocks, network.blocks, strict=True):
        if block.stride > 1 and any(flops):
            stage = min(stage + 1, STAGES - 1)
        row = _block_row(block, in_channels)
        sums[stage] = [a + b for a, b in zip(sums[stage], row, strict=True)]
        cost = node_cost(node)
        flops[stage] += cost.flops
        params[stage] += cost.params
        in_channels = block.out_channels
    encoded = []
    for total, stage_flops, stage_params in zip(sums, flops, params, strict=True):
        count = total[0]
        encoded += [count, _log(stage_flops), _log(stage_params), *(value / count if count else 0.0
                                                                    for value in total[1:])]
    total = plan_cost(network)
    head = spec.head
    return [*encoded, *(float(sum(block.op == op for block in spec.blocks)) for op in OPS),
            _log(total.flops), _log(total.params), float(len(spec.blocks)),
            math.log2(spec.stem.out_channels), float(spec.stem.padding_free), float(spec.stem.op == "regular"),
            math.log2(head.conv_channels or 1), float(head.se), float(spec.alpha > 0)]


@dataclass(frozen=True)
class Training:
    """One finished training: the architecture (by its hash), the rung and the accuracy it reached."""

    spec_hash: str
    rung: int
    accuracy: float


def rung_trainings(by_rung: Sequence[Sequence[FrozenTrial]], specs: dict[str, ArchSpec]) -> list[Training]:
    """Every finished training of every rung (`by_rung`: the rungs' `results`) in the order they finished (ties: by
    rung, then ticket number), so that the first N are the same whenever N have finished; `specs` gains the spec of
    every hash it did not hold (a cache kept across refits)."""
    found = []
    for rung, tickets in enumerate(by_rung):
        for ticket in tickets:
            key = ticket.user_attrs["spec_hash"]
            if key not in specs:
                specs[key] = spec_from_dict(json.loads(ticket.user_attrs["spec"]), source=f"ticket {key}")
            found.append((ticket.datetime_complete, rung, ticket.number, Training(key, rung, ticket.values[0])))
    return [training for *_, training in sorted(found, key=lambda row: row[:3])]


class Predictor:
    """Accuracy at a rung from `features(spec)` and the rung: an ensemble of randomized trees (`model`, or the one
    given), its mean and spread. Encodings are cached by spec hash, so a refit costs the trees, not the plans."""

    def __init__(self, seed: int = 0, trees: int = TREES, model=None):
        self.model = model if model is not None else ExtraTreesRegressor(
            n_estimators=trees, min_samples_leaf=MIN_LEAF, max_features=0.5, random_state=seed, n_jobs=1)
        self._encoded: dict[str, list[float]] = {}
        self.trained_on = 0

    def encode(self, key: str, spec: ArchSpec) -> list[float]:
        """`features(spec)`, once per spec hash `key`."""
        if key not in self._encoded:
            self._encoded[key] = features(spec)
        return self._encoded[key]

    def fit(self, trainings: Sequence[Training], specs: dict[str, ArchSpec]) -> Predictor:
        """Fit on `trainings` (their specs in `specs`)."""
        rows = [[*self.encode(t.spec_hash, specs[t.spec_hash]), float(t.rung)] for t in trainings]
        self.model.fit(np.array(rows), np.array([t.accuracy for t in trainings]))
        self.trained_on = len(trainings)
        return self

    def predict(self, encoded: Sequence[Sequence[float]], rungs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, spread) of the accuracy of encoded architectures at each of `rungs`, arrays of shape
        (len(rungs), len(encoded)); the spread is the standard deviation over a bagging ensemble's members (zero for
        other models). One pass of every member over all rows."""
        rows = np.array([[*row, float(rung)] for rung in rungs for row in encoded], dtype=np.float32)
        shape = (len(rungs), len(encoded))
        members = getattr(self.model, "estimators_", None)
        if not isinstance(members, list):  # not a bagging ensemble (boosting's members are not estimates)
            return self.model.predict(rows).reshape(shape), np.zeros(shape)
        each = np.stack([member.predict(rows, check_input=False) for member in members])  # rows: float32 already
        return each.mean(axis=0).reshape(shape), each.std(axis=0).reshape(shape)
