"""`bsnas export SOURCE [--format yaml|onnx] [-o FILE]`: an architecture as ArchSpec YAML, or a model as a verified
ONNX file.

SOURCE is a training run (its folder, or its name under --runs-dir: the trained weights of its checkpoint), a
search (its --name: the trial that --pick names), an ArchSpec YAML file or a zoo name (the last two untrained).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.search.budget import format_cost
from bsnas.text import plural

__all__ = ["add_parser", "run"]

_SUFFIX = {"yaml": ".yaml", "onnx": ".onnx"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write an architecture as ArchSpec YAML or a model as ONNX")
    parser.add_argument("source", metavar="SOURCE",
                        help="a training run (folder or name), a search's --name, an ArchSpec YAML file or a zoo name")
    parser.add_argument("--format", choices=tuple(_SUFFIX), default="yaml",
                        help="yaml: the ArchSpec (default); onnx: the model, BatchNorm folded, checked with "
                             "onnx.checker and against PyTorch with onnxruntime (needs bsnas[onnx])")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (default: export.yaml / model.onnx in the run's folder; for a YAML file "
                             "or zoo name runs/exports/<name>.yaml|.onnx)")
    parser.add_argument("--pick", default="knee", help="of a search: max-acc, knee (default), min-cost or trial:N")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="ONNX: a fixed batch dimension (default: dynamic)")
    parser.add_argument("--num-classes", type=int, default=None, help="YAML file or zoo name: classifier outputs")
    parser.add_argument("--in-channels", type=int, default=None, help="YAML file or zoo name: input channels")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.add_argument("--storage", default=None, help="a search's Optuna RDB URL (default its study.db)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size is not None and args.batch_size < 1:
        raise BsnasError(f"--batch-size {args.batch_size}: a fixed batch is >= 1 (leave it out for a dynamic one).")
    if args.format == "onnx":
        from bsnas.deploy.onnx import require_onnx

        require_onnx()
    spec, trained, folder, note, score = _resolve(args)
    suffix = _SUFFIX[args.format]
    if args.output:
        output = Path(args.output)
    elif folder is not None:
        output = folder / ("model.onnx" if args.format == "onnx" else "export.yaml")
    else:
        output = Path(args.runs_dir) / "exports" / f"{spec.name}{suffix}"
    if args.format == "yaml":
        from bsnas.arch.files import save_spec

        save_spec(spec, output)
        print(f"{output}: {note}{score}", file=sys.stderr)
    else:
        _write_onnx(spec, folder, trained, output, args.batch_size, note, score)
    print(output)
    return 0


def _resolve(args: argparse.Namespace) -> tuple[ArchSpec, bool, Path | None, str, str]:
    """(spec, whether trained weights come with it, the run folder or None, a note on where it came from, and the
    search's score of the architecture: `, val accuracy 85.00% at rung 2`, or '')."""
    from bsnas.train.rundir import check_checkpoint, load_checkpoint, run_path

    source = args.source
    folder = Path(source) if Path(source).is_dir() else None
    if folder is None and _is_run_name(source):
        candidate = run_path(args.runs_dir, source)
        folder = candidate if candidate.is_dir() else None
    if folder is not None and (folder / "checkpoint.pt").is_file():
        _refuse_overrides(args, "a training run")
        checkpoint = load_checkpoint(folder / "checkpoint.pt")
        spec = check_checkpoint(checkpoint, folder / "checkpoint.pt")[0]
        history = checkpoint["history"]
        accuracy = f", val accuracy {history[-1]['val_accuracy']:.2%}" if history else ""
        return spec, True, folder, f"{spec.name} trained {plural(checkpoint['epoch'], 'epoch')}{accuracy}", ""
    if folder is not None and (folder / "search.yaml").is_file():
        _refuse_overrides(args, "a search")
        from bsnas.search.front import pick, trial_number, trial_spec
        from bsnas.search.study import load_record

        record = load_record(folder.name, args.storage, str(folder.parent))
        trial = pick(record, args.pick)
        spec, attrs = trial_spec(trial), trial.user_attrs
        rung, training = record.highest_training(trial) or (0, trial)
        at_rung = f" at rung {rung}" if len(record.rungs) > 1 else ""
        return spec, False, folder, (f"trial {trial_number(trial)} ({spec.name}), "
                                    f"{format_cost('flops', attrs.get('flops'))}, "
                                    f"{format_cost('params', attrs.get('params'))}"), \
            f", val accuracy {training.values[0]:.2%}{at_rung} in the search"
    if folder is not None:
        raise BsnasError(f"{folder}: neither a training run (checkpoint.pt) nor a search (search.yaml).")
    from bsnas.arch.zoo import resolve_spec

    try:
        spec = resolve_spec(source, args.num_classes, args.in_channels)
    except BsnasError as error:
        if not _is_run_name(source):
            raise
        raise BsnasError(f"{source!r} is neither a run in {args.runs_dir}/ nor a zoo name ({str(error).rstrip('.')})."
                         ) from None
    return spec, False, None, f"{spec.name} at {'x'.join(map(str, spec.input_size))}", ""


def _is_run_name(text: str) -> bool:
    from bsnas.train.rundir import RUN_NAME

    return bool(RUN_NAME.fullmatch(text)) and not text.endswith((".yaml", ".yml"))


def _refuse_overrides(args: argparse.Namespace, what: str) -> None:
    if args.num_classes is not None or args.in_channels is not None:
        raise BsnasError(f"--num-classes and --in-channels apply to a YAML file or zoo name; {args.source!r} is "
                         f"{what}, whose architecture is fixed.")


def _write_onnx(spec: ArchSpec, folder: Path | None, trained: bool, output: Path, batch_size: int | None,
                note: str, score: str) -> None:
    """Export and verify; the line says what the weights are (an untrained file does not carry the search's score:
    `score` goes into the note that says so)."""
    import torch

    from bsnas.deploy.onnx import export_onnx, export_run
    from bsnas.nn.build import build_model

    if trained:
        check = export_run(folder, output, batch_size)[1]
    else:
        torch.manual_seed(0)
        measured = f" (not the weights behind its{score.removeprefix(',')})" if score else ""
        print(f"bsnas: note: {spec.name} has no trained weights here{measured}: the file holds weights initialised "
              "with seed 0, for its graph and latency; train it (`bsnas train`), then export the training run",
              file=sys.stderr)
        check = export_onnx(build_model(spec), spec.input_size, output, batch_size)
    batch = f"batch {batch_size}" if batch_size else "dynamic batch"
    weights = "" if trained else ", untrained (seed 0)"
    print(f"{output}: {note}{weights}; input {batch} x {'x'.join(map(str, spec.input_size))}, BatchNorm folded; "
          f"{check.summary()}", file=sys.stderr)
