"""`bsnas profile NAME|spec.yaml`: parameters, FLOPs and (on request) latency of an architecture."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

from bsnas.arch.zoo import resolve_spec
from bsnas.errors import BsnasError
from bsnas.nn.build import build_model
from bsnas.nn.profile import ProfileResult, profile
from bsnas.report.tables import Column, print_table, table_console
from bsnas.text import plural
from bsnas.train.loop import resolve_device


def parse_input_size(text: str) -> tuple[int, int, int]:
    """`3x32x32` (C x H x W) to a tuple; a malformed value is a user error."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not match or min(int(v) for v in match.groups()) < 1:
        raise BsnasError(f"--input-size {text!r} is not of the form CxHxW with positive integers, e.g. 3x32x32.")
    return tuple(int(v) for v in match.groups())


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("profile", help="parameters, FLOPs and latency of a zoo model or spec file")
    parser.add_argument("model", help="a zoo name (see `bsnas zoo list`) or an ArchSpec YAML file")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the spec's)")
    parser.add_argument("--input-size", default=None,
                        help="CxHxW of one image (default: the input the spec or zoo name was designed for); C sets "
                             "the input channels")
    parser.add_argument("--latency", action="store_true", help="also measure latency (median after warm-up)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="latency of PyTorch (default), or also of onnxruntime running the exported model as a "
                             "CPU deployment does, beside PyTorch's (needs bsnas[onnx])")
    parser.add_argument("--latency-table", default=None, metavar="FILE",
                        help="also predict the latency of one image from this machine's table (`bsnas latency "
                             "build`; its backend is --backend's, its threads --threads')")
    parser.add_argument("--batch-size", type=int, default=32, help="the second latency batch size (default 32)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (latency only; default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for latency (default 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per latency (default 20)")
    parser.add_argument("--layers", action="store_true", help="one row per layer")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.model, args.num_classes)
    input_size = spec.input_size
    if args.input_size:
        input_size = parse_input_size(args.input_size)
        if input_size[0] != spec.in_channels:
            print(f"bsnas: note: --input-size {args.input_size} changes {args.model}'s input channels from "
                  f"{spec.in_channels} to {input_size[0]}, and with them its parameters", file=sys.stderr)
            spec = dataclasses.replace(spec, in_channels=input_size[0])
    predicted = None
    if args.latency_table:
        from bsnas.arch.plan import plan
        from bsnas.latency.table import load_table

        table = load_table(args.latency_table)
        table.check_key(args.backend, args.threads)
        predicted = {"file": args.latency_table, "backend": table.backend, "threads": table.threads,
                     "predicted_ms": table.predict_us(plan(spec, input_size), spec.name) / 1000}
    if args.backend == "onnxruntime":
        from bsnas.deploy.onnx import require_onnx

        if not args.latency and not args.latency_table:
            raise BsnasError("--backend onnxruntime measures latency: add --latency (or --latency-table).")
        require_onnx()
    device = resolve_device(args.device) if args.latency else "cpu"
    model = build_model(spec)
    batch_sizes = (1, args.batch_size)
    result = profile(model, input_size, latency=args.latency, batch_sizes=batch_sizes, device=device,
                     threads=args.threads, layers=args.layers, repeats=args.repeats)
    if args.backend == "onnxruntime" and args.latency:
        from bsnas.deploy.onnx import measure_onnx_latency, onnx_bytes

        data = onnx_bytes(model, input_size)
        result.latency += [measure_onnx_latency(data, input_size, b, args.threads, repeats=args.repeats)
                           for b in batch_sizes]
    if args.json:
        extra = {"latency_table": predicted} if predicted else {}
        print(json.dumps({"model": spec.name, **result.to_dict(), **extra}, indent=2))
    else:
        _print_tables(spec.name, result, predicted)
    return 0


def _print_tables(name: str, result: ProfileResult, predicted: dict | None = None) -> None:
    console = table_console()
    if result.layers:
        columns = [Column("layer", justify="left", fold=True), Column("type", justify="left"),
                   Column("output", justify="left"), Column("params"), Column("FLOPs")]
        print_table(console, f"{name}: layers", columns,
                    [[layer.name, layer.type, "x".join(map(str, layer.out_shape)), f"{layer.params:,}",
                      f"{layer.flops:,}"] for layer in result.layers])
    rows = [["params", f"{result.params:,} ({result.params / 1e6:.2f} M)"],
            ["FLOPs", f"{result.flops:,} ({result.flops / 1e6:.2f} M)"]]
    if result.ptflops_macs is not None:
        ratio = result.ptflops_macs / result.flops
        rows.append(["ptflops MACs (cross-check)", f"{result.ptflops_macs:,} ({ratio:.3f}x)"])
    for latency in result.latency:
        threads = f", {plural(latency.threads, 'thread')}" if latency.threads else ""
        where = f"{latency.backend}, {latency.device}{threads}"
        rows.append([f"latency, batch {latency.batch_size} ({where})", f"{latency.median_ms:.2f} ms"])
    if predicted:
        rows.append([f"latency, batch 1 (predicted by the table: {predicted['backend']}, cpu, "
                     f"{plural(predicted['threads'], 'thread')})", f"{predicted['predicted_ms']:.2f} ms"])
    print_table(console, f"{name} at {'x'.join(map(str, result.input_size))}",
                [Column("metric", justify="left", fold=True), Column("value")], rows)
