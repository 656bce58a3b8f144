"""`bsnas analyze SOURCE [--compare SOURCE2|init]`: the paper's kernel analysis (Haase & Amthor 2020, Figure 3).

For every k x k convolution: how much of each filter's variance along the depth axis its first principal component
explains (BSConv's intra-kernel assumption), and the same across filters (the cross-kernel correlation depthwise
separable convolutions assume); `bsnas.nn.kernels` says exactly what is measured. Prints a table per stage and
writes kernels.png (histograms per stage) and kernels.json (every per-layer and per-filter value) to
<runs-dir>/analysis/<name>/.

SOURCE is a training run (folder or name: its trained weights), a checkpoint file, a zoo name or an ArchSpec YAML
file (initialised with --seed), or a torchvision model name with --weights FILE (a state dict; nothing is
downloaded). `--compare init` sets the same architecture as initialised beside it: a run's with its own seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bsnas.errors import BsnasError, shown

if TYPE_CHECKING:
    from torch import nn

__all__ = ["add_parser", "run"]

TORCHVISION_INPUT = (3, 224, 224)  # the image of the pass that finds a torchvision model's stages


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="the paper's kernel PCA of a model's k x k convolutions, per stage")
    parser.add_argument("source", metavar="SOURCE",
                        help="a training run (folder or name), a checkpoint file, a zoo name, an ArchSpec YAML file, "
                             "or a torchvision model name with --weights")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="SOURCE is a torchvision model name and FILE its state dict (read with "
                             "torch.load(weights_only=True); nothing is downloaded)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="a torchvision model's classifier outputs, as in its state dict (default 1000)")
    parser.add_argument("--compare", metavar="SOURCE2", default=None,
                        help="a second model beside the first (the same kinds as SOURCE), or `init`: SOURCE's "
                             "architecture as initialised before training (a run's with the run's own seed)")
    parser.add_argument("--compare-weights", metavar="FILE", default=None,
                        help="SOURCE2 is a torchvision model name and FILE its state dict")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initialisation of an untrained model (default 0, bsnas train's default)")
    parser.add_argument("--uncentered", action="store_true",
                        help="PCA without subtracting a filter's mean slice: the share of its energy the best "
                             "blueprint x weights fit (BSConv's exact form) captures (default: centered, the paper's)")
    parser.add_argument("--layers", action="store_true", help="also one table row per layer")
    parser.add_argument("--json", action="store_true", help="print the JSON (also written to kernels.json)")
    parser.add_argument("--name", default=None,
                        help="the output folder under <runs-dir>/analysis/ (default: the model's name, with "
                             "-vs-<other> when comparing)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run directories (default runs)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class _Model:
    """A model to analyse: `name` for the output folder, `label` for people, its stage-finding input, and how to
    make the same architecture as it was initialised."""

    name: str
    label: str
    note: str
    model: nn.Module
    input_size: tuple[int, int, int]
    initialise: Callable[[], nn.Module]
    seed: int


def run(args: argparse.Namespace) -> int:
    from bsnas.nn.kernels import analyze_kernels
    from bsnas.report.kernels import AnalyzedModel, analysis_json, plot_kernels
    from bsnas.train.rundir import run_path

    if args.compare_weights is not None and args.compare in (None, "init"):
        raise BsnasError("--compare-weights goes with --compare SOURCE2, a torchvision model name.")
    if args.num_classes is not None and args.weights is None and args.compare_weights is None:
        raise BsnasError("--num-classes applies to a torchvision model with --weights (a bsnas model's classes are "
                         "its spec's).")
    models = [_load(args.source, args.weights, args)]
    if args.compare == "init":
        first = models[0]
        models.append(_Model("init", f"{first.label} at initialisation", f"{first.label} initialised with seed "
                             f"{first.seed}", first.initialise(), first.input_size, first.initialise, first.seed))
    elif args.compare is not None:
        models.append(_load(args.compare, args.compare_weights, args))
    analyzed = []
    for model in models:
        analysis = analyze_kernels(model.model, model.input_size, centered=not args.uncentered)
        if not analysis.layers:
            raise BsnasError(f"{shown(model.label)} has no k x k convolution (k > 1) with 2 or more input channels "
                             "per filter: there are no slices to analyse.")
        analyzed.append(AnalyzedModel(model.label, model.note, analysis))
    folder = run_path(Path(args.runs_dir) / "analysis", args.name or "-vs-".join(model.name for model in models))
    folder.mkdir(parents=True, exist_ok=True)
    document = analysis_json(analyzed)
    (folder / "kernels.json").write_text(json.dumps(document) + "\n")
    plot = plot_kernels(analyzed, folder / "kernels.png")
    if args.json:
        print(json.dumps(document))
    else:
        _print_tables(analyzed, args.layers)
    print(f"bsnas: wrote {plot} and {folder / 'kernels.json'}", file=sys.stderr)
    return 0


def _print_tables(analyzed, layers: bool) -> None:
    from bsnas.report.kernels import layer_table, orthonormal_table, stage_table
    from bsnas.report.tables import table_console

    console = table_console()
    for model in analyzed:
        console.print(f"{model.label}: {model.note}", highlight=False, soft_wrap=True)
        if layers:
            console.print(layer_table(model))
        console.print(stage_table(model))
        if (table := orthonormal_table(model)) is not None:
            console.print(table)


def _load(source: str, weights: str | None, args: argparse.Namespace) -> _Model:
    """A torchvision model with its state dict when `weights` is given, else a bsnas model (run, checkpoint, zoo
    name or YAML file)."""
    import torch

    from bsnas.cli.sources import resolve_source
    from bsnas.nn.build import build_model
    from bsnas.train.rundir import load_model

    if weights is not None:
        return _torchvision(source, weights, args.num_classes, args.seed)
    try:
        found = resolve_source(source, args.runs_dir)
    except BsnasError:
        if source in _torchvision_names():
            raise BsnasError(f"{source!r} is a torchvision model name: pass --weights FILE, its state dict (nothing "
                             "is downloaded).") from None
        raise
    seed = found.checkpoint["train_config"]["seed"] if found.checkpoint is not None else args.seed

    def initialise() -> nn.Module:
        torch.manual_seed(seed)  # as `bsnas train` seeds before it builds the model
        return build_model(found.spec)

    name = found.folder.name if found.folder is not None else found.spec.name
    if found.checkpoint is not None:
        return _Model(name, name, found.note, load_model(found.checkpoint), found.spec.input_size, initialise, seed)
    return _Model(name, name, f"{found.note}, untrained (initialised with seed {seed})", initialise(),
                  found.spec.input_size, initialise, seed)


def _torchvision_names() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)


def _torchvision(name: str, weights: str, num_classes: int | None, seed: int) -> _Model:
    """torchvision's `name` (a classification model) with the state dict in `weights`."""
    import torch
    from torchvision import models

    if name not in _torchvision_names():
        raise BsnasError(f"{shown(name)} is not a torchvision classification model (with --weights SOURCE is one of "
                         "torchvision.models.list_models(module=torchvision.models), e.g. resnet18).")
    path = Path(weights)
    if not path.is_file():
        raise BsnasError(f"--weights {shown(path)}: no such file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged or foreign files
        raise BsnasError(f"--weights {shown(path)}: not readable with torch.load(weights_only=True) "
                         f"({type(error).__name__}).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BsnasError(f"--weights {shown(path)}: not a state dict (parameter names to tensors, as "
                         "torch.save(model.state_dict(), FILE) writes).")
    classes = 1000 if num_classes is None else num_classes

    def initialise() -> nn.Module:
        torch.manual_seed(seed)
        return models.get_model(name, weights=None, num_classes=classes)

    model = initialise()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
        raise BsnasError(f"--weights {shown(path)} does not fit torchvision's {name} with {classes} classes "
                         f"({reason[:200]}); --num-classes sets the classes.") from None
    return _Model(name, f"{name} ({path.name})", f"torchvision {name} with the weights of {path}",
                  model.eval(), TORCHVISION_INPUT, initialise, seed)
