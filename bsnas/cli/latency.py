"""`bsnas latency build`: a latency lookup table of a space (or of models), measured once on this machine."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from bsnas.errors import BsnasError
from bsnas.text import plural

__all__ = ["add_parser", "run"]

DEFAULT_INPUT = "1x28x28"  # Fashion-MNIST's, the search's default dataset
DEFAULT_CLASSES = 10


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("latency", help="latency lookup tables: bsnas latency build")
    commands = parser.add_subparsers(dest="latency_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="measure every distinct layer a space can produce once, into a table that `bsnas search "
                      "--latency-table` and `bsnas profile --latency-table` sum instead of measuring")
    build.add_argument("--space", default=None,
                       help="a shipped space or a space YAML file (default mobilenet unless --model is given)")
    build.add_argument("--model", action="append", default=[], metavar="NAME|SPEC",
                       help="also (or only) the layers of a zoo model or ArchSpec file, repeatable")
    build.add_argument("--budget", action="append", default=[], metavar="COST",
                       help="only the layers of the space's points within this FLOPs/params budget (as the search's "
                            "--budget: 100MFLOPs, 1.5Mparams); repeatable. A search with a tighter budget can use it")
    build.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                       help="PyTorch eager (default) or onnxruntime on the exported layers (needs bsnas[onnx])")
    build.add_argument("--threads", type=int, default=1,
                       help="CPU threads, as the search's workers will use them (default 1)")
    build.add_argument("--input-size", default=None,
                       help=f"CxHxW of one image (default {DEFAULT_INPUT} for a space, Fashion-MNIST's; a model's own)")
    build.add_argument("--num-classes", type=int, default=None,
                       help=f"classifier outputs (default {DEFAULT_CLASSES} for a space; a model's own)")
    build.add_argument("--granularity", choices=("layer", "block"), default="layer",
                       help="one entry per layer (conv+BN+activation) with its container calls (default), or one "
                            "per block (exact within a block; a MobileNet space has about a million)")
    build.add_argument("--calibration", type=int, default=10, metavar="K",
                       help="random networks of the space measured whole to fit the per-model overhead (default 10)")
    build.add_argument("--repeats", type=int, default=25, help="timed runs per layer, median (default 25)")
    build.add_argument("-o", "--output", default=None,
                       help="the table file (default runs/latency/<backend>-<threads>threads.jsonl); an existing "
                            "one is extended: a killed build goes on where it stopped")
    build.add_argument("--runs-dir", default="runs", help="parent folder of the default output (default runs)")
    build.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bsnas.arch.zoo import resolve_spec
    from bsnas.cli.profile import parse_input_size
    from bsnas.latency.build import calibration_specs, measure_table, space_cover, space_entries, spec_entries
    from bsnas.search.budget import check_budgets, parse_budget
    from bsnas.space.load import resolve_space

    if not 1 <= args.threads <= 1024:
        raise BsnasError(f"--threads must be a whole number from 1 to 1024, got {args.threads}.")
    if not 1 <= args.repeats <= 10_000 or not 0 <= args.calibration <= 10_000:
        raise BsnasError("--repeats must be from 1 to 10000 and --calibration from 0 to 10000.")
    if args.backend == "onnxruntime":
        from bsnas.deploy.onnx import require_onnx

        require_onnx()
    budgets = tuple(check_budgets([parse_budget(text) for text in args.budget]))
    if any(b.kind == "latency" for b in budgets):
        raise BsnasError("--budget: a latency table is limited by FLOPs or parameters, not by a latency.")
    limits = tuple(min((b.limit for b in budgets if b.kind == kind), default=math.inf) for kind in ("flops", "params"))
    size = parse_input_size(args.input_size) if args.input_size else None
    if size is not None and size[1] != size[2]:
        raise BsnasError(f"--input-size {args.input_size}: images are square here (H = W).")
    started = time.perf_counter()
    entries, calibration, covers = set(), [], []
    space_name = args.space or (None if args.model else "mobilenet")
    if space_name:
        channels, image, _ = size or parse_input_size(DEFAULT_INPUT)
        space = resolve_space(space_name).for_data(channels, image, args.num_classes or DEFAULT_CLASSES)
        print(f"bsnas latency: listing the layers of space {space.name} at {'x'.join(map(str, space.input_size))}"
              f"{' within ' + ', '.join(map(str, budgets)) if budgets else ''} ...", file=sys.stderr)
        entries |= space_entries(space, limits, args.granularity)
        calibration += calibration_specs(space, budgets, args.calibration)
        covers.append(space_cover(space, limits))
    models = [resolve_spec(name, args.num_classes, *((size[0], size[1]) if size else ())) for name in args.model]
    entries |= spec_entries(models, args.granularity)
    calibration += models
    covers += [{"model": spec.name} for spec in models]
    output = Path(args.output) if args.output else \
        Path(args.runs_dir) / "latency" / f"{args.backend}-{args.threads}threads.jsonl"
    print(f"bsnas latency: {plural(len(entries), 'distinct ' + ('layer' if args.granularity == 'layer' else 'block'))}"
          f" ({args.backend}, {plural(args.threads, 'thread')}) into {output}", file=sys.stderr)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if done == total or time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(f"  measured {done} of {total} not yet in the table ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)

    table = measure_table(output, entries, calibration, covers, args.backend, args.threads, args.granularity,
                          repeats=args.repeats, progress=progress)
    overhead, scale = table.overhead
    print(f"bsnas latency: {output}: {plural(len(table.times), 'entry', 'entries')}, per-model overhead "
          f"{overhead:.1f} us, scale {scale:.3f}, from {plural(len(table.calibration), 'calibration network')}; "
          f"{time.perf_counter() - started:.0f} s. Use it with `bsnas search --objective latency --latency-table "
          f"{output}`.", file=sys.stderr)
    return 0
