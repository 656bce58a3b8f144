"""The Syne Tune MOASHA peer of the evidence benchmark (benchmarks/moasha_peer.py) on synthetic objectives."""

from __future__ import annotations

import dataclasses
import time

import pytest

from bsnas.arch.spec import spec_hash
from bsnas.search.budget import parse_budget
from bsnas.search.evaluator import Evaluation
from bsnas.space.load import load_space

pytest.importorskip("syne_tune", reason="the peer needs the bench extra (pip install -e '.[bench]')")

import numpy as np  # noqa: E402
from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority  # noqa: E402

from benchmarks.moasha_peer import Job, MoashaPeer, RankedNonDominatedPriority, drive  # noqa: E402

BUDGET = (parse_budget("20MFLOPs"),)


@pytest.fixture()
def peer():
    return MoashaPeer(load_space("search_spaces/mobilenet.yaml").for_data(1, 28, 10), BUDGET, rungs=3, eta=3, seed=0)


def _at(job: Job, mflops: float) -> Job:
    """The job with its cost set to `mflops` (the constructed case decides the costs)."""
    return dataclasses.replace(job, candidate=dataclasses.replace(job.candidate, flops=int(mflops * 1e6)))


def test_moasha_continues_what_its_rule_says_on_a_constructed_case(peer):
    # MOASHA's rule: a result at a rung continues when its rank by non-dominated sorting among the rung's results
    # (itself included) is within the top 1/eta; the first result at a rung always continues
    j0, j1, j2, j3 = (_at(peer.ask(), mflops) for mflops in (10, 12, 5, 11))
    up0 = peer.tell(j0, 0.50)
    assert up0 is not None and up0.rung == 1 and up0.trial is j0.trial  # the first at rung 0
    assert peer.tell(j1, 0.40) is None  # dominated by j0: rank 1 of 2 > 1/3
    assert peer.tell(j2, 0.60).rung == 1  # dominates both: rank 0
    assert peer.tell(j3, 0.45) is None  # behind j2 and j0: rank 2 of 4
    up1 = peer.tell(up0, 0.70)
    assert up1.rung == 2  # the first at rung 1
    assert peer.tell(up1, 0.80) is None  # the top rung: done


def test_the_peer_ranks_each_result_by_its_place_where_syne_tunes_priority_gives_the_sorted_order():
    # (error, cost) of four results of a rung in the order they came, the last one new: the sort puts 2 first
    # (least error at least cost), then 0, then the new one, then 1
    results = np.array([[0.5, 10.0], [0.6, 12.0], [0.4, 5.0], [0.55, 11.0]])
    assert list(NonDominatedPriority()(results)) == [2, 0, 3, 1]  # Syne Tune's: the indices in sorted order
    assert list(RankedNonDominatedPriority()(results)) == [1, 3, 0, 2]  # the peer's: each result's place
    # so stock MOASHA would rank the new result 1 of 4 (the worst one's index) and continue it; its place is 2


def test_a_failed_training_stops_its_trial(peer):
    assert peer.tell(peer.ask(), None) is None


def test_the_driven_search_trains_each_architecture_once_per_rung_within_the_budget(peer):
    done: list[tuple[Job, Evaluation]] = []
    pending: list[tuple[Job, Evaluation]] = []

    def evaluate(job: Job) -> Evaluation:  # synthetic: larger nets and higher rungs score better
        return Evaluation(min(0.99, 0.3 + job.candidate.flops / 4e7 + 0.1 * job.rung), 0.0)

    drive(peer, lambda job: pending.append((job, evaluate(job))), lambda timeout: pending.pop(0) if pending else None,
          slots=1, deadline=time.time() + 120, on_result=lambda job, e: done.append((job, e)), trials=20)
    assert peer.asked == 20 and peer.rejected > 0  # random points of the space are often over 20 MFLOPs
    assert all(job.candidate.flops <= BUDGET[0].limit for job, _ in done)
    keys = [(spec_hash(job.candidate.spec), job.rung) for job, _ in done]
    assert len(keys) == len(set(keys))  # once per rung
    trained = {(job.trial.trial_id, job.rung) for job, _ in done}
    assert all((trial, rung - 1) in trained for trial, rung in trained if rung)  # promoted from the rung below
    assert (0, 2) in trained  # the first trial is the first result at every rung: it reaches the top
    assert sum(rung == 0 for _, rung in trained) == 20 > sum(rung == 1 for _, rung in trained) > 0
