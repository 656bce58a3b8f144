"""`bsnas train NAME|spec.yaml`: train a zoo model or spec file into `runs/<RUN>/`, resumable."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from bsnas.arch.spec import ArchSpec
from bsnas.arch.zoo import resolve_spec
from bsnas.deploy.onnx import export_run, require_onnx
from bsnas.errors import BsnasError
from bsnas.names import name_from
from bsnas.search.reproduce import parse_trial_source, trial_training
from bsnas.search.study import load_record
from bsnas.text import plural
from bsnas.train import distributed
from bsnas.train.config import PRESETS, describe_preset, preset
from bsnas.train.data import DATASETS, DataConfig, load_data
from bsnas.train.loop import resolve_device
from bsnas.train.rundir import RunDir, run_path, train_in_run_dir

__all__ = ["add_parser", "run"]

# flag -> TrainConfig field; these override the preset and may not be combined with --resume
TRAIN_FLAGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "subset": "train_subset",
               "seed": "seed", "alpha": "alpha", "device": "device", "threads": "threads"}
DATA_FLAGS = ("data_root", "image_size", "val_fraction")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a zoo model or spec file; writes runs/<RUN>/")
    parser.add_argument("model", help="a zoo name (see `bsnas zoo list`), an ArchSpec YAML file, or RUN:trial:N: "
                                      "train trial N of search RUN again exactly as the search did")
    parser.add_argument("--rung", type=int, default=None,
                        help="with RUN:trial:N: the rung whose training to repeat (default the highest it reached)")
    parser.add_argument("--storage", default=None, help="with RUN:trial:N: the search's Optuna RDB URL")
    parser.add_argument("--dataset", default=None,
                        help=f"one of {', '.join(DATASETS)} (default fashion-mnist)")
    parser.add_argument("--data-root", default=None, help="folder with the dataset files (downloads go here)")
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images to this square size (default: native; 32 for imagefolder)")
    parser.add_argument("--val-fraction", type=float, default=None,
                        help="stratified share of the training set held out for validation (default 0.1)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="; ".join(f"{name}: {describe_preset(name)}" for name in PRESETS).replace("%", "%%")
                        + " (default paper)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (overrides the preset)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the preset)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (overrides the preset)")
    parser.add_argument("--subset", type=int, default=None, help="train on this many images (stratified)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="orthonormal-loss weight (default: the architecture's own)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's; 1 is faster when other processes share the cores)")
    parser.add_argument("--name", default=None, help="run name (default <model>-<dataset>-<preset>)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--resume", action="store_true", help="continue the run --name from its last checkpoint")
    parser.add_argument("--export", choices=("onnx",), default=None,
                        help="onnx: also write the trained model as model.onnx in the run folder, verified with "
                             "onnxruntime (needs bsnas[onnx])")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.set_defaults(run=run)


def _reproduce(args: argparse.Namespace, session: distributed.Session, run_name: str, number: int) -> int:
    """Train trial `number` of search `run_name` again as the search did, and compare with what it recorded."""
    given = [f"--{flag.replace('_', '-')}" for flag in (*TRAIN_FLAGS, *DATA_FLAGS, "dataset", "preset", "resume")
             if getattr(args, flag) not in (None, False)]
    if given:
        raise BsnasError(f"{args.model} repeats the search's own training; drop {', '.join(given)}.")
    training = trial_training(load_record(run_name, args.storage, args.runs_dir), number, args.rung)
    name = args.name or f"{run_name}-trial{number}-rung{training.rung}"
    run_dir = RunDir(run_path(args.runs_dir, name))
    result = train_in_run_dir(run_dir, training.spec, training.config, training.data, training.data_config,
                              model_name=args.model)
    if session.is_main and result.val_accuracy is not None:
        import torch

        same = result.val_accuracy == training.recorded_accuracy
        versions = "" if training.recorded_torch in (None, torch.__version__) else (
            f" (the search ran torch {training.recorded_torch}, this is {torch.__version__})")
        print(f"trial {number} at rung {training.rung}: val accuracy {result.val_accuracy:.4%} here, "
              f"{training.recorded_accuracy:.4%} in the search: {'the same' if same else 'different'}{versions}",
              file=sys.stderr)
    return _finish(args, run_dir, training.spec, result, session)


def _default_name(model: str, dataset: str, preset_name: str) -> str:
    stem = Path(model).stem if model.endswith((".yaml", ".yml")) else model
    return name_from(f"{stem}-{dataset.partition(':')[0]}-{preset_name}")


def _fit_to_data(spec: ArchSpec, model: str, data) -> ArchSpec:
    """The spec for the data's channels, image size and classes; a spec file made for other ones says so."""
    fitted = dataclasses.replace(spec, in_channels=data.in_channels, image_size=data.image_size,
                                 num_classes=data.num_classes)
    if model.endswith((".yaml", ".yml")) and fitted != spec:
        print(f"bsnas: note: {model} was made for {spec.num_classes} classes of "
              f"{'x'.join(map(str, spec.input_size))}; it trains on {data.name}'s {data.num_classes} classes of "
              f"{data.in_channels}x{data.image_size}x{data.image_size} (its parameters and FLOPs follow)",
              file=sys.stderr)
    return fitted


def run(args: argparse.Namespace) -> int:
    with distributed.session(args.device or "auto") as session:  # several ranks when torchrun started this
        return _run(args, session)


def _run(args: argparse.Namespace, session: distributed.Session) -> int:
    if args.export:
        require_onnx()
    dataset, preset_name = args.dataset or "fashion-mnist", args.preset or "paper"
    trial_source = parse_trial_source(args.model)
    if trial_source is None and (args.rung is not None or args.storage is not None):
        raise BsnasError("--rung and --storage go with RUN:trial:N (a trial of a search).")
    if trial_source:
        return _reproduce(args, session, *trial_source)
    run_dir = RunDir(run_path(args.runs_dir, args.name or _default_name(args.model, dataset, preset_name)))
    if args.resume:
        given = [f"--{flag.replace('_', '-')}" for flag in (*TRAIN_FLAGS, *DATA_FLAGS)
                 if getattr(args, flag) is not None]
        if given:
            raise BsnasError(f"--resume continues {run_dir.path} with its stored config; drop {', '.join(given)}.")
        checkpoint, spec, config, data_config = run_dir.resume()
        if args.dataset is not None and args.dataset != data_config.dataset:
            raise BsnasError(f"--resume: {run_dir.path} trains on {data_config.dataset}, not --dataset {args.dataset}.")
        data = load_data(data_config)
    else:
        checkpoint = None
        data_config = DataConfig(
            dataset=dataset, data_root=args.data_root, download=args.download, image_size=args.image_size,
            **({"val_fraction": args.val_fraction} if args.val_fraction is not None else {}),
        )
        changes = {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
        config = preset(preset_name, **changes)  # bad flags fail before the data load
        resolve_device(config.device)
        spec = resolve_spec(args.model)
        data = load_data(data_config)
        spec = _fit_to_data(spec, args.model, data)
    result = train_in_run_dir(run_dir, spec, config, data, data_config, checkpoint, model_name=args.model)
    return _finish(args, run_dir, spec, result, session)


def _finish(args: argparse.Namespace, run_dir: RunDir, spec: ArchSpec, result, session) -> int:
    """Export when asked, print the result line (or JSON); exit status 1 unless the training completed."""
    if not session.is_main:
        return 0 if result.status == "completed" else 1
    if args.export and result.status == "completed":
        onnx_path, check = export_run(run_dir.path)
        print(f"{onnx_path}: {check.summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps({"run": str(run_dir.path), "model": spec.name, **result.to_dict()}, indent=2))
    else:
        test = "" if result.test_accuracy is None else f", test accuracy {result.test_accuracy:.2%}"
        val = "" if result.val_accuracy is None else f", val accuracy {result.val_accuracy:.2%}"
        print(f"{run_dir.path}: {result.status} after {plural(result.epochs, 'epoch')}{val}{test}, "
              f"{result.train_seconds:.0f} s training, {result.images_per_s:.0f} img/s on {result.device}"
              + (f"; {result.message}" if result.message else ""))
    return 0 if result.status == "completed" else 1
