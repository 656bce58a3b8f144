"""`bsnas export SOURCE [--format yaml|onnx] [-o FILE]`: an architecture as ArchSpec YAML, or a model as a verified
ONNX file.

SOURCE is a training run (its folder, or its name under --runs-dir: the trained weights of its checkpoint), a
checkpoint file, a search (its --name: the trial that --pick names), an ArchSpec YAML file or a zoo name (the last
two untrained).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bsnas.cli.sources import ModelSource, refuse_overrides, resolve_source, source_folder
from bsnas.errors import BsnasError, shown
from bsnas.names import check_name
from bsnas.search.budget import format_cost

__all__ = ["add_parser", "run"]

_SUFFIX = {"yaml": ".yaml", "onnx": ".onnx"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write an architecture as ArchSpec YAML or a model as ONNX")
    parser.add_argument("source", metavar="SOURCE",
                        help="a training run (folder or name), a checkpoint file, a search's --name, an ArchSpec YAML "
                             "file or a zoo name")
    parser.add_argument("--format", choices=tuple(_SUFFIX), default=None,
                        help="yaml: the ArchSpec (default, unless -o names a .onnx file); onnx: the model, "
                             "BatchNorm folded, checked with onnx.checker and against PyTorch with onnxruntime "
                             "(needs bsnas[onnx])")
    parser.add_argument("-o", "--output", default=None,
                        help="output file (default: export.yaml / model.onnx in the run's folder; for a checkpoint "
                             "file, YAML file or zoo name runs/exports/<name>.yaml|.onnx)")
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
    args.format = _format(args.format, args.output)
    if args.format == "onnx":
        from bsnas.deploy.onnx import require_onnx

        require_onnx()
    source = _resolve(args)
    if args.output:
        output = Path(args.output)
    elif source.folder is not None:
        output = source.folder / ("model.onnx" if args.format == "onnx" else "export.yaml")
    else:
        exports = Path(args.runs_dir) / "exports"
        name = check_name(source.spec.name, f"{shown(args.source)}: name", "the name of an exported architecture",
                          f"it becomes the file name in {exports}/; pass -o FILE to write it elsewhere")
        output = exports / f"{name}{_SUFFIX[args.format]}"
    if args.format == "yaml":
        from bsnas.arch.files import save_spec

        save_spec(source.spec, output)
        print(f"{output}: {source.note}{source.score}", file=sys.stderr)
    else:
        _write_onnx(source, output, args.batch_size)
    print(output)
    return 0


def _format(given: str | None, output: str | None) -> str:
    """--format, or the one the output file's suffix names (.onnx; else yaml); a suffix of the other format is
    refused."""
    suffix = Path(output).suffix.lower() if output else ""
    named = {".yml": "yaml", **{ending: kind for kind, ending in _SUFFIX.items()}}.get(suffix)
    if given is None:
        return named or "yaml"
    if named is not None and named != given:
        raise BsnasError(f"-o {output}: a {suffix} file holds {named.upper()}, but --format is {given}; drop --format "
                         f"or name the file {_SUFFIX[given]}.")
    return given


def _resolve(args: argparse.Namespace) -> ModelSource:
    """The model SOURCE names; a search's is the trial --pick names, untrained, with the search's score of it."""
    folder = source_folder(args.source, args.runs_dir)
    if folder is not None and (folder / "search.yaml").is_file():
        refuse_overrides(args.source, "a search", args.num_classes, args.in_channels)
        from bsnas.search.front import pick, trial_number, trial_spec
        from bsnas.search.study import load_record

        record = load_record(folder.name, args.storage, str(folder.parent))
        trial = pick(record, args.pick)
        spec, attrs = trial_spec(trial), trial.user_attrs
        rung, training = record.highest_training(trial) or (0, trial)
        at_rung = f" at rung {rung}" if len(record.rungs) > 1 else ""
        return ModelSource(spec, None, folder, (f"trial {trial_number(trial)} ({spec.name}), "
                                               f"{format_cost('flops', attrs.get('flops'))}, "
                                               f"{format_cost('params', attrs.get('params'))}"),
                           f", val accuracy {training.values[0]:.2%}{at_rung} in the search")
    if folder is not None and not (folder / "checkpoint.pt").is_file():
        raise BsnasError(f"{folder}: neither a training run (checkpoint.pt) nor a search (search.yaml).")
    return resolve_source(args.source, args.runs_dir, args.num_classes, args.in_channels)


def _write_onnx(source: ModelSource, output: Path, batch_size: int | None) -> None:
    """Export and verify; the line says what the weights are (an untrained file does not carry the search's score:
    it goes into the note that says so)."""
    import torch

    from bsnas.deploy.onnx import export_onnx
    from bsnas.nn.build import build_model
    from bsnas.train.rundir import load_model

    spec = source.spec
    if source.checkpoint is not None:
        model = load_model(source.checkpoint)
    else:
        torch.manual_seed(0)
        measured = f" (not the weights behind its{source.score.removeprefix(',')})" if source.score else ""
        print(f"bsnas: note: {spec.name} has no trained weights here{measured}: the file holds weights initialised "
              "with seed 0, for its graph and latency; train it (`bsnas train`), then export the training run",
              file=sys.stderr)
        model = build_model(spec)
    check = export_onnx(model, spec.input_size, output, batch_size)
    batch = f"batch {batch_size}" if batch_size else "dynamic batch"
    weights = "" if source.checkpoint is not None else ", untrained (seed 0)"
    print(f"{output}: {source.note}{weights}; input {batch} x {'x'.join(map(str, spec.input_size))}, BatchNorm folded; "
          f"{check.summary()}", file=sys.stderr)
