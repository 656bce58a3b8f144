"""Latency predicted from a lookup table against latency measured, on random points of the shipped spaces and on
the zoo (numbers, not assertions).

    python benchmarks/latency_table.py [--backend torch|onnxruntime] [--threads 1] [--spaces mobilenet resnet]
        [--budget 100MFLOPs] [--points 100] [--granularity layer block] [--zoo '^cifar_'] [--zoo-max-mflops 100]
        [--calibration 10] [--entries space|points] [--tables runs/bench/latency] [--quick]

For each space (at Fashion-MNIST's 1x28x28, 10 classes) and granularity, the table is built (`bsnas latency build`'s
`measure_table`, resumable: a second run reuses it) within the budget, with its per-model overhead fitted on
--calibration random points (seed 0); then --points other random points (seed 1, drawn and shrunk into the budget as the
search does) are measured once (`latency_runner`, what `bsnas search --objective latency` measures) and predicted by
each granularity's table. The zoo: every zoo model matching --zoo of at most --zoo-max-mflops at its own input, in one
table whose overhead is fitted on random MobileNet points at that input. Printed per set: Spearman's rho and Kendall's
tau of predicted against measured, the median and 90th percentile of |error| (for the bare sum, the sum plus a fitted
offset, and the linear fit `bsnas.latency.table.FIT` chooses between), the worst cases by name, how the error of the
bare sum goes with the number of entries and with the FLOPs per layer (thin layers), and the time per candidate of the
table against measuring (ratio, this run). Machine drift: before each network, the first calibration network is measured
again; its time over its time at the build is the drift, printed with the errors of the predictions scaled by it (a
shared machine's speed changes within minutes; these rows show what the table predicts when the machine stays as it
was), and the noise floor: every network measured a second time, after all of them, and the median difference between
the two measurements (no prediction can be expected to do better). A granularity whose table would hold more than
--max-entries entries is skipped, with its count. `--entries points` builds each space's table from the entries of its
calibration and evaluated points only (the same measurement of each entry, so the same predictions for these points, in
minutes rather than the hours that the MobileNet space's 70,619 layer entries take). --quick runs in about a minute
(numbers meaningless).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from bsnas.arch.cost import cost
from bsnas.arch.plan import plan
from bsnas.arch.zoo import get_spec, list_models
from bsnas.latency.build import calibration_specs, measure_table, space_cover, space_entries, spec_entries
from bsnas.latency.entries import Layer, network_entries
from bsnas.latency.table import fit_overhead
from bsnas.search.budget import parse_budget
from bsnas.search.candidate import latency_runner
from bsnas.search.ranking import kendall_tau, spearman_rho
from bsnas.space.load import resolve_space

FITS = ("none", "offset", "linear")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(specs, backend: str, reference) -> list[dict]:
    """Each network measured as the search measures it (`latency_runner`: built and exported once, timed), with the
    probe (`reference`, built once) timed just before it, and timed a second time after all of them."""
    probe = latency_runner(reference, "cpu", backend)
    rows, runners = [], []
    for spec in specs:
        probe_us = probe() * 1000
        start = time.perf_counter()
        runners.append(latency_runner(spec, "cpu", backend))
        measured = runners[-1]() * 1000
        rows.append({"spec": spec, "measured": measured, "measure_s": time.perf_counter() - start,
                     "probe": probe_us, "flops": cost(spec).flops})
    for row, runner in zip(rows, runners, strict=True):
        row["again"] = runner() * 1000
    return rows


def _evaluate(label: str, table, measured_rows: list[dict], backend: str, reference) -> None:
    built = next(point["measured_us"] for point in table.calibration if point["name"] == reference.name)
    rows = []
    for row in measured_rows:
        start = time.perf_counter()
        network = plan(row["spec"])
        total = table.sum_us(network, row["spec"].name)
        predict_s = time.perf_counter() - start
        entries = network_entries(network, table.granularity)
        layers = sum(isinstance(entry, Layer) for entry in entries) or 1
        rows.append({**row, "name": row["spec"].name, "sum": total, "entries": len(entries),
                     "flops_per_layer": row["flops"] / layers, "predict_s": predict_s, "drift": row["probe"] / built})
    measured = [row["measured"] for row in rows]
    again = [abs(row["again"] - row["measured"]) / row["measured"] for row in rows]
    print(f"\n{label}: {len(rows)} networks, {table.granularity} table of {len(table.times)} entries, "
          f"{len(table.calibration)} calibration networks")
    print(f"  noise floor: the same networks measured again differ by a median {100 * statistics.median(again):.1f} %,"
          f" p90 {100 * _percentile(again, 0.9):.1f} %")
    for method in FITS:
        overhead, scale = fit_overhead([(p["sum_us"], p["measured_us"]) for p in table.calibration], method)
        predicted = [overhead + scale * row["sum"] for row in rows]
        errors = [(p - m) / m for p, m in zip(predicted, measured, strict=True)]
        absolute = [abs(e) for e in errors]
        print(f"  fit {method:6s} (overhead {overhead:8.1f} us, scale {scale:.3f}): Spearman rho "
              f"{spearman_rho(predicted, measured):.3f}, Kendall tau {kendall_tau(predicted, measured):.3f}, "
              f"|error| median {100 * statistics.median(absolute):.1f} %, p90 {100 * _percentile(absolute, 0.9):.1f} %"
              f", mean error {100 * statistics.mean(errors):+.1f} %")
        corrected = [p * row["drift"] for p, row in zip(predicted, rows, strict=True)]
        steady = [abs(c - m) / m for c, m in zip(corrected, measured, strict=True)]
        print(f"    drift-corrected (x the reference's drift): Spearman rho {spearman_rho(corrected, measured):.3f}, "
              f"|error| median {100 * statistics.median(steady):.1f} %, p90 {100 * _percentile(steady, 0.9):.1f} %")
        if method == "linear":
            worst = sorted(zip(absolute, errors, rows, predicted, strict=True), key=lambda t: -t[0])[:5]
            for _, error, row, guess in worst:
                print(f"    worst: {row['name']:40s} {row['flops'] / 1e6:7.2f} MFLOPs  measured "
                      f"{row['measured'] / 1000:7.3f} ms (again {row['again'] / 1000:7.3f} ms)  predicted "
                      f"{guess / 1000:7.3f} ms  {100 * error:+6.1f} %")
    drifts = [row["drift"] for row in rows]
    print(f"  machine drift: {reference.name} measured before each network took {min(drifts):.2f}x to "
          f"{max(drifts):.2f}x (median {statistics.median(drifts):.2f}x) its time when the table was built")
    ratio = [row["measured"] / row["sum"] for row in rows]
    rho = {key: spearman_rho(ratio, [row[key] for row in rows]) for key in ("entries", "flops_per_layer", "flops")}
    print(f"  measured / bare sum: median {statistics.median(ratio):.3f}, range {min(ratio):.3f} .. {max(ratio):.3f}; "
          f"Spearman rho of that ratio with the number of entries {rho['entries']:+.2f}, with FLOPs per layer "
          f"{rho['flops_per_layer']:+.2f}, with FLOPs {rho['flops']:+.2f}")
    predict = statistics.median(row["predict_s"] for row in rows) * 1000
    measure = statistics.median(row["measure_s"] for row in rows) * 1000
    print(f"  time per candidate: table {predict:.3f} ms, measuring {measure:.1f} ms ({backend}); "
          f"x{measure / predict:,.0f}")


def _compare(label: str, built: dict, specs, backend: str, reference) -> None:
    """The networks measured once, then predicted by each table that was built."""
    tables = {granularity: table for granularity, table in built.items() if table is not None}
    if not tables:
        return
    print(f"\n{label}: measuring {len(specs)} networks", flush=True)
    rows = _measure(specs, backend, reference)
    for granularity, table in tables.items():
        _evaluate(f"{label}, {granularity}", table, rows, backend, reference)


def _build(path: Path, entries, calibration, covers, args, granularity: str):
    if len(entries) > args.max_entries:
        print(f"\n{path.stem}: {len(entries):,} distinct entries at {granularity} granularity, over --max-entries "
              f"{args.max_entries:,}: not built", flush=True)
        return None
    start = time.perf_counter()
    table = measure_table(path, entries, calibration, covers, args.backend, args.threads, granularity,
                          repeats=args.repeats)
    print(f"\n{path.stem}: {len(entries):,} entries, table ready in {time.perf_counter() - start:.0f} s "
          f"(0 s when it was built before)", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--spaces", nargs="*", default=["mobilenet", "resnet"])
    parser.add_argument("--budget", default="100MFLOPs")
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--granularity", nargs="+", choices=("layer", "block"), default=["layer", "block"])
    parser.add_argument("--zoo", default=r"^cifar_", help="zoo models (regex); '' for none")
    parser.add_argument("--zoo-max-mflops", type=float, default=100.0)
    parser.add_argument("--calibration", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--max-entries", type=int, default=200_000)
    parser.add_argument("--entries", choices=("space", "points"), default="space",
                        help="table of every entry of the space within the budget, or of the evaluated points' only")
    parser.add_argument("--tables", default="runs/bench/latency")
    parser.add_argument("--quick", action="store_true",
                        help="resnet only, 5 MFLOPs, 6 points, 3 zoo models, 4 calibration networks, 5 repeats")
    args = parser.parse_args()
    if args.quick:
        args.spaces, args.budget, args.points, args.calibration, args.repeats = ["resnet"], "5MFLOPs", 6, 4, 5
    torch.set_num_threads(args.threads)
    budgets = (parse_budget(args.budget),)
    limits = (budgets[0].limit, math.inf) if budgets[0].kind == "flops" else (math.inf, budgets[0].limit)
    tables = Path(args.tables)
    print(f"{args.backend}, {args.threads} thread(s), torch {torch.__version__}, budget {args.budget}", flush=True)
    for name in args.spaces:
        space = resolve_space(name).for_data(1, 28, 10)
        points = calibration_specs(space, budgets, args.points, seed=1)
        calibration = calibration_specs(space, budgets, args.calibration)
        built = {}
        for granularity in args.granularity:
            if args.entries == "space":
                entries, covers = space_entries(space, limits, granularity), [space_cover(space, limits)]
            else:
                entries, covers = spec_entries([*points, *calibration], granularity), []
            built[granularity] = _build(tables / f"{name}-{args.budget}-{args.entries}-{args.backend}-"
                                                 f"{args.threads}t-{granularity}.jsonl", entries, calibration, covers,
                                        args, granularity)
        _compare(f"space {name} within {args.budget}", built, points, args.backend, calibration[0])
    if args.zoo:
        zoo = [get_spec(name) for name in list_models(args.zoo)]
        zoo = [spec for spec in zoo if cost(spec).flops <= args.zoo_max_mflops * 1e6]
        if args.quick:
            zoo = zoo[:3]
        size = zoo[0].input_size if zoo else (3, 32, 32)
        reference = resolve_space("mobilenet").for_data(size[0], size[1], zoo[0].num_classes if zoo else 10)
        calibration = calibration_specs(reference, (parse_budget(f"{args.zoo_max_mflops}MFLOPs"),), args.calibration)
        built = {granularity: _build(tables / f"zoo-{args.backend}-{args.threads}t-{granularity}.jsonl",
                                     spec_entries([*zoo, *calibration], granularity), calibration, [], args,
                                     granularity) for granularity in args.granularity}
        _compare(f"zoo {args.zoo!r} <= {args.zoo_max_mflops:g} MFLOPs", built, zoo, args.backend, calibration[0])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
