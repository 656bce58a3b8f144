"""Building a latency table: every distinct entry a space (or a model) can produce, measured once, resumably.

`space_entries` walks every point of a space within FLOPs/parameter limits (`bsnas.space.summary.cost_bounds`,
the walk that finds the space's exact cost bounds) and collects the entries of every node it keeps; `measure_table`
measures the ones a table file does not hold yet, appending each group as it is measured, then measures a few whole
networks beside their sums (the calibration the per-model overhead is fitted on) and records what the build covers.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from bsnas.arch.plan import plan
from bsnas.arch.spec import ArchSpec, spec_hash
from bsnas.errors import BsnasError, shown
from bsnas.latency.entries import GRANULARITIES, Entry, entry_key, network_entries, node_entries
from bsnas.latency.measure import BACKENDS, measure_entries
from bsnas.latency.table import (
    FORMAT,
    VERSION,
    LatencyTable,
    append_records,
    load_table,
    machine_key,
    space_digest,
)
from bsnas.nn.profile import torch_threads
from bsnas.search.budget import Budget
from bsnas.space.decode import SearchSpace
from bsnas.space.summary import cost_bounds

__all__ = ["CALIBRATION_MAX_FLOPS", "calibration_specs", "measure_table", "space_cover", "space_entries",
           "spec_entries"]

CALIBRATION_MAX_FLOPS = 300e6  # calibration networks of a space without a FLOPs limit stay this small
GROUP = 64  # entries measured (and appended to the file) at a time


def space_entries(space: SearchSpace, limits: tuple[float, float] = (math.inf, math.inf),
                  granularity: str = "layer") -> set[Entry]:
    """The distinct entries of the points of `space` (at its input size) within (FLOPs, params) `limits`."""
    found: set[Entry] = set()
    cost_bounds(space, limits, lambda node: found.update(node_entries(node, granularity)))
    return found


def spec_entries(specs: Iterable[ArchSpec], granularity: str = "layer") -> set[Entry]:
    """The distinct entries of some networks at their input sizes."""
    return {entry for spec in specs for entry in network_entries(plan(spec), granularity)}


def calibration_specs(space: SearchSpace, budgets: tuple[Budget, ...], count: int, seed: int = 0) -> list[ArchSpec]:
    """`count` random points of `space` as the search draws them: shrunk into the FLOPs/parameter `budgets` (and
    CALIBRATION_MAX_FLOPS) when the space allows, seeded; fewer when a bounded number of draws finds fewer."""
    from bsnas.search.candidate import measure_candidate

    rng = random.Random(seed)
    budgets = (*budgets, Budget("flops", CALIBRATION_MAX_FLOPS))
    specs: list[ArchSpec] = []
    for _ in range(50 * count):
        if len(specs) == count:
            break
        try:
            spec, params = space.random_spec(rng)
        except BsnasError:  # a point without blocks
            continue
        candidate = measure_candidate(space, spec, params, budgets)
        if candidate.feasible:
            specs.append(dataclasses.replace(candidate.spec, name=f"{space.name}_random{len(specs)}_seed{seed}"))
    return specs


def _open(path: Path, key: dict, granularity: str, timing: dict) -> LatencyTable:
    """The table at `path`, made with its header when new; an existing one must have been measured here, alike."""
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_records(path, [{"format": FORMAT, "version": VERSION, "key": key, "granularity": granularity,
                               "timing": timing}])
    data = path.read_bytes()
    if not data.endswith(b"\n"):  # a killed build tore its last line: drop it before appending
        with open(path, "r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
    table = load_table(path)
    table.check_key(key["backend"], key["threads"])
    held = {"granularity": table.granularity, **table.timing}
    for name, value in {"granularity": granularity, **timing}.items():
        if held.get(name) != value:
            raise BsnasError(f"{shown(path)}: the latency table was built with {name} {held.get(name)!r}, not "
                             f"{value!r}; give the same settings or another -o.")
    return table


def measure_table(path: str | Path, entries: set[Entry], calibration: list[ArchSpec], covers: list[dict],
                  backend: str = "torch", threads: int = 1, granularity: str = "layer", warmup: int = 5,
                  repeats: int = 25, progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Measure the `entries` the table at `path` lacks (creating it), then the `calibration` networks whole beside
    their sums, and record `covers`; returns the table. Killed and run again, it goes on where it stopped."""
    from bsnas.search.candidate import measure_latency_ms

    if backend not in BACKENDS:
        raise BsnasError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}.")
    if granularity not in GRANULARITIES:
        raise BsnasError(f"--granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}.")
    path = Path(path)
    table = _open(path, machine_key(backend, threads), granularity, {"warmup": warmup, "repeats": repeats})
    todo = sorted((entry for entry in entries if entry_key(entry) not in table.times), key=entry_key)
    for start in range(0, len(todo), GROUP):
        if progress:
            progress(start, len(todo))
        group = todo[start:start + GROUP]
        times = measure_entries(group, backend, threads, warmup, repeats)
        records = [{"entry": entry_key(entry), "us": us} for entry, us in zip(group, times, strict=True)]
        append_records(path, records)
        table.times.update((record["entry"], record["us"]) for record in records)
    if progress:
        progress(len(todo), len(todo))
    known = {point.get("spec_hash") for point in table.calibration}
    points = list(table.calibration)
    with torch_threads(threads):
        for spec in calibration:
            if spec_hash(spec) in known:
                continue
            points.append({"name": spec.name, "spec_hash": spec_hash(spec),
                           "sum_us": table.sum_us(plan(spec), spec.name),
                           "measured_us": measure_latency_ms(spec, "cpu", backend) * 1000})
    append_records(path, [{"calibration": points}, *({"covers": record} for record in covers)])
    return load_table(path)


def space_cover(space: SearchSpace, limits: tuple[float, float]) -> dict:
    """The `covers` record of a build of `space` within (FLOPs, params) `limits`."""
    return {"space": space.name, "digest": space_digest(space), "input_size": list(space.input_size),
            "num_classes": space.num_classes, "max_flops": None if limits[0] == math.inf else limits[0],
            "max_params": None if limits[1] == math.inf else limits[1]}
