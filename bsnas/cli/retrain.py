"""`bsnas retrain RUN`: fully train every Pareto architecture of a search (and the zoo models in the same budget).

One resumable run directory per architecture under runs/<RUN>/retrain/<name>/; a finished one is not
trained again. The final table (test accuracy, params, FLOPs, latency) goes to stdout and
runs/<RUN>/retrain.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from bsnas.arch.cost import cost
from bsnas.deploy.onnx import export_run, require_onnx
from bsnas.errors import BsnasError
from bsnas.names import check_name
from bsnas.report.tables import table_console
from bsnas.search.budget import format_cost
from bsnas.search.study import load_record
from bsnas.text import plural, regex
from bsnas.train.rundir import run_path

__all__ = ["add_parser", "run", "retrain_spec"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("retrain", help="fully train the Pareto architectures of a search")
    parser.add_argument("run_name", metavar="RUN", help="the search's --name")
    parser.add_argument("--preset", default="paper", help="training preset (default paper: 200 epochs)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (overrides the preset)")
    parser.add_argument("--zoo", default=None, metavar="REGEX",
                        help="zoo baselines to train beside the front: the warm-start zoo models matching REGEX "
                             "(default: those on the search's front and the most accurate one); none: no baselines")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default auto)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///runs/<RUN>/study.db)")
    parser.add_argument("--export", choices=("onnx",), default=None,
                        help="onnx: also write each retrained model as model.onnx in its run folder, verified with "
                             "onnxruntime (needs bsnas[onnx])")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(run=run)


def retrain_spec(spec, run_path: Path, data, data_config, config, quiet: bool = False) -> dict:
    """Train `spec` in `run_path` (resuming a checkpoint, skipping a finished run); returns result.json's dict."""
    from bsnas.train.rundir import RunDir, train_in_run_dir

    run_dir = RunDir(run_path)
    result_file = run_path / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    checkpoint = run_dir.resume()[0] if run_dir.checkpoint.exists() else None
    return train_in_run_dir(run_dir, spec, config, data, data_config, checkpoint, quiet).to_dict()


def _run_folder(root: Path, spec, number: int | None) -> Path:
    """The run folder of one retraining, named after its architecture (a name by the rule of `bsnas.names`)."""
    where = "zoo model" if number is None else f"trial {number}"
    return root / check_name(spec.name, f"{where}: name", "a trial name", f"it names its run folder in {root}/")


def _zoo_baselines(record, pattern: str | None) -> list[str]:
    """Zoo models of the warm start (they fit the budget): those matching `pattern`, else the most accurate one at
    the top rung (at rung 0 when none got there)."""
    from optuna.trial import TrialState

    zoo = [t for t in record.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
           if t.user_attrs.get("zoo") and t.user_attrs.get("status") not in ("infeasible", None)
           and t.user_attrs.get("width_fit") is None]
    if pattern == "none":
        return []
    if pattern:
        return sorted({t.user_attrs["zoo"] for t in zoo if regex(pattern, "--zoo").search(t.user_attrs["zoo"])})
    found = record.best_zoo()
    best = found[1] if found else max(zoo, key=lambda t: t.values[0], default=None)
    return [] if best is None else [best.user_attrs["zoo"]]


def run(args: argparse.Namespace) -> int:
    from bsnas.train import distributed

    with distributed.session(args.device or "auto") as session:  # several ranks when torchrun started this
        return _run(args, session)


def _run(args: argparse.Namespace, session) -> int:
    from bsnas.arch.zoo import get_spec
    from bsnas.nn.build import build_model
    from bsnas.nn.profile import measure_latency
    from bsnas.search.front import trial_number, trial_spec
    from bsnas.train.config import preset
    from bsnas.train.data import DataConfig, load_data

    if args.export:
        require_onnx()
    record = load_record(args.run_name, args.storage, args.runs_dir)
    settings = record.study.user_attrs.get("config", {})
    changes = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.device is not None:
        changes["device"] = args.device
    config = preset(args.preset, **changes)
    data_config = DataConfig(dataset=settings.get("dataset", "fashion-mnist"), data_root=settings.get("data_root"))
    data = load_data(data_config)
    front = record.front()
    if not front:
        raise BsnasError(f"study {args.run_name!r} has no finished training to retrain.")
    entries = [("zoo" if t.user_attrs.get("zoo") else "search", trial_spec(t), trial_number(t)) for t in front]
    entries += [("zoo", get_spec(name, data.num_classes, data.in_channels, data.image_size), None)
                for name in _zoo_baselines(record, args.zoo) if name not in {spec.name for _, spec, _ in entries}]
    root = run_path(args.runs_dir, args.run_name) / "retrain"
    folders = [_run_folder(root, spec, number) for _, spec, number in entries]  # every name checked before training
    rows = []
    for index, ((kind, spec, number), folder) in enumerate(zip(entries, folders, strict=True), 1):
        if session.is_main:
            print(f"[{index}/{len(entries)}] {kind} {spec.name}: {plural(config.epochs, 'epoch')} in {folder}",
                  file=sys.stderr)
        result = retrain_spec(spec, folder, data, data_config, config)
        if not session.is_main:
            continue
        if args.export and result.get("status") == "completed":
            onnx_path, check = export_run(folder)
            print(f"{onnx_path}: {check.summary()}", file=sys.stderr)
        flops, params = cost(spec)
        latency = measure_latency(build_model(spec), spec.input_size, 1, "cpu", threads=1, repeats=20).median_ms
        rows.append({"source": kind, "trial": number, "name": spec.name, "test_accuracy": result.get("test_accuracy"),
                     "val_accuracy": result.get("val_accuracy"), "epochs": result.get("epochs"),
                     "params": params, "flops": flops, "latency_ms_cpu1": latency, "run": str(folder)})
    if not session.is_main:
        return 0
    rows.sort(key=lambda row: row["flops"])
    table_path = run_path(args.runs_dir, args.run_name) / "retrain.csv"
    with table_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{args.run_name}: retrained with preset {args.preset} ({config.epochs} epochs)",
                  title_justify="left")
    for column in ("source", "architecture", "test acc", "params", "FLOPs", "latency (1 thread, batch 1)"):
        table.add_column(column, justify="left" if column in ("source", "architecture") else "right")
    for row in rows:
        test = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.2%}"
        table.add_row(row["source"] + ("" if row["trial"] is None else f" #{row['trial']}"), row["name"], test,
                      format_cost("params", row["params"]), format_cost("flops", row["flops"]),
                      format_cost("latency", row["latency_ms_cpu1"]))
    table_console().print(table)
    print(f"wrote {table_path}", file=sys.stderr)
    return 0
