"""`bsnas calibrate`: how well each rung of the search's fidelity ladder ranks candidates, against a longer
reference training, beside FLOPs and parameters as predictors."""

from __future__ import annotations

import argparse
import csv
import math
import sys

from bsnas.search.config import DEFAULT_ETA, DEFAULT_RUNGS
from bsnas.text import plural

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("calibrate", help="measure how well each rung ranks candidates (resumable)")
    parser.add_argument("--space", default="mobilenet", help="search-space file or shipped name (default mobilenet)")
    parser.add_argument("--budget", action="append", default=None, metavar="COST",
                        help="candidates within this budget, repeatable (default 100MFLOPs)")
    parser.add_argument("--candidates", type=int, default=16, help="random feasible candidates (default 16)")
    parser.add_argument("--zoo", default=None, metavar="REGEX",
                        help="also the zoo models of the space matching REGEX (default: none; '.' for all)")
    parser.add_argument("--reference-epochs", type=int, default=3,
                        help="epochs of the reference training: the paper schedule on the whole training split, "
                             "as bsnas retrain --epochs E (default 3)")
    parser.add_argument("--rungs", type=int, default=DEFAULT_RUNGS,
                        help=f"rungs of the ladder (default {DEFAULT_RUNGS})")
    parser.add_argument("--eta", type=int, default=DEFAULT_ETA,
                        help=f"each rung trains eta times longer (default {DEFAULT_ETA})")
    parser.add_argument("--proxy-images", type=int, default=None, help="rung 0's training images (default preset)")
    parser.add_argument("--proxy-epochs", type=int, default=None, help="rung 0's epochs (default preset)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="rung trainings with the final training's crop and flip (default: on with rungs)")
    parser.add_argument("--proxy-val", type=int, default=None, help="rung 0's validation images (default preset)")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset (default fashion-mnist)")
    parser.add_argument("--data-root", default=None, help="folder with the dataset files")
    parser.add_argument("--seed", type=int, default=0, help="candidate sampling and training seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default one per core)")
    parser.add_argument("--name", default="calibrate", help="run name (default calibrate)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bsnas.errors import BsnasError
    from bsnas.search import calibrate
    from bsnas.search.budget import check_budgets, parse_budget
    from bsnas.search.config import SearchConfig, default_workers
    from bsnas.search.evaluator import ProxyEvaluator
    from bsnas.search.workers import check_space_fits
    from bsnas.space.load import resolve_space
    from bsnas.train.rundir import make_run_dir, run_path

    budgets = tuple(check_budgets([parse_budget(text) for text in args.budget or ["100MFLOPs"]]))
    workers = args.workers or default_workers()
    # the same checks as a search of these settings (names, numbers, ranges)
    config = SearchConfig(name=args.name, space_file=args.space, budgets=budgets, runs_dir=args.runs_dir,
                          workers=workers, seed=args.seed, dataset=args.dataset, data_root=args.data_root,
                          proxy_images=args.proxy_images, proxy_epochs=args.proxy_epochs, proxy_val=args.proxy_val,
                          rungs=args.rungs, eta=args.eta, trials=args.candidates,
                          augment=args.augment)
    if not 1 <= args.reference_epochs <= 1000:
        raise BsnasError(f"--reference-epochs must be from 1 to 1000, got {args.reference_epochs}.")
    proxy = ProxyEvaluator.for_search(config)
    data = proxy.data()
    space = resolve_space(args.space).for_data(data.in_channels, data.image_size, data.num_classes)
    check_space_fits(space, budgets)
    folder = make_run_dir(run_path(args.runs_dir, args.name))
    specs = calibrate.candidates(space, budgets, args.candidates, args.seed, args.zoo)
    setup = calibrate.Calibration(args.name, f"sqlite:///{folder / 'calibrate.db'}", args.rungs,
                                  calibrate.CalibrationEvaluator(proxy, args.reference_epochs), tuple(specs),
                                  workers, max(1, default_workers() // workers))
    calibrate.prepare(setup)
    ladder = ", ".join(f"rung {r}: {proxy.train_config(r).train_subset} images x {proxy.train_config(r).epochs}"
                       for r in range(args.rungs))
    print(f"bsnas calibrate {args.name}: {plural(len(specs), 'candidate')}; {ladder}; reference: "
          f"{plural(args.reference_epochs, 'epoch')} of the paper schedule on {len(data.train)} images",
          file=sys.stderr)
    failed = calibrate.run(setup, report=lambda line: print(f"bsnas calibrate {args.name}: {line}",
                                                             file=sys.stderr, flush=True))
    rows = calibrate.collect(setup)
    table = calibrate.correlations(rows, args.rungs)
    _write(folder, rows, table, args.rungs)
    _print(table, rows, args.rungs)
    if failed or len(rows) < len(specs):
        print(f"bsnas: error: {len(rows)} of {len(specs)} candidates have a reference result"
              + (f"; {failed} worker(s) failed" if failed else "") + "; run the same command again to go on",
              file=sys.stderr)
        return 1
    return 0


def _write(folder, rows: list[dict], table: list[dict], rungs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["name", "flops", "params", *(f"rung{r}" for r in range(rungs)), "reference",
               *(f"rung{r}_seconds" for r in range(rungs)), "reference_seconds"]
    with open(folder / "calibrate.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / "correlations.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    figure, axes = plt.subplots(1, rungs, figsize=(4 * rungs, 3.8), dpi=100, squeeze=False)
    for rung, ax in enumerate(axes[0]):
        points = [row for row in rows if f"rung{rung}" in row]
        scatter = ax.scatter([r[f"rung{rung}"] for r in points], [r["reference"] for r in points],
                             c=[math.log10(r["flops"]) for r in points], cmap="viridis", s=24)
        rho = next(t["spearman"] for t in table if t["predictor"] == f"rung{rung}")
        ax.set_title(f"rung {rung}: Spearman {rho:+.2f}", fontsize=10)
        ax.set_xlabel(f"val accuracy at rung {rung}")
        ax.set_ylabel("val accuracy, reference")
        ax.grid(alpha=0.3)
    figure.colorbar(scatter, ax=axes[0].tolist(), label="log10 FLOPs")
    figure.savefig(folder / "calibrate.png")
    plt.close(figure)


def _print(table: list[dict], rows: list[dict], rungs: int) -> None:
    from rich.table import Table

    from bsnas.report.tables import table_console

    result = Table(title=f"ranking against the reference, {plural(len(rows), 'candidate')}", title_justify="left")
    for column in ("predictor", "Kendall tau", "Spearman rho", "rho, cheapest third", "rho, middle third",
                   "rho, costliest third"):
        result.add_column(column, justify="left" if column == "predictor" else "right")
    for entry in table:
        cells = [entry["kendall"], entry["spearman"], entry.get("spearman_third1", math.nan),
                 entry.get("spearman_third2", math.nan), entry.get("spearman_third3", math.nan)]
        result.add_row(entry["predictor"], *("-" if math.isnan(v) else f"{v:+.2f}" for v in cells))
    table_console().print(result)
