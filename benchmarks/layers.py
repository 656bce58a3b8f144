"""The four operators' speed: time per FLOP of dsc, bsconv_u and bsconv_s relative to a regular convolution
(numbers, not assertions).

    python benchmarks/layers.py [--ops regular dsc bsconv_u bsconv_s] [--channels 32 64 128 256] [--sizes 32 16 8]
        [--kernels 3 5] [--strides 1 2] [--p 0.25] [--train-batch 16] [--infer-batch 1] [--threads 1]
        [--repeats 3] [--runs 5] [--no-onnx] [--device cpu|cuda] [--quick]

Every operator is `bsnas.create_conv(op, C, C, k, stride)` (BSConv-U without inner BatchNorm, BSConv-S with it and
p = --p, as in the zoo), with its FLOPs and parameters from the plan (`bsnas.cost`'s convention). For each
configuration (channels C in and out, input size, kernel, stride), in five modes: training (forward and backward of
a batch of --train-batch, contiguous and channels_last), inference in PyTorch eager (a batch of --infer-batch,
`measure_latency`, contiguous and channels_last), and inference in onnxruntime on the exported operator
(`measure_onnx_latency`, BatchNorm folded). Each time is the median of --repeats measurements (each the median of
--runs runs), the operators of a configuration measured in turn within every repeat, so a drift of the machine
reaches all of them alike. Printed: one line per configuration and mode, then per mode and operator the median over
the configurations of the time per FLOP relative to `regular` at the same configuration, of the time relative to
`regular`, and of the FLOPs relative to `regular`; the same time-per-FLOP ratio by channel count (thin layers).
--quick: 2 channel counts, 2 sizes, kernel 3, stride 1, 1 repeat of 2 runs (seconds; numbers meaningless).
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch

from bsnas.arch.cost import node_cost
from bsnas.arch.plan import plan_operator
from bsnas.nn.build import create_conv
from bsnas.nn.profile import measure_latency, median_ms, torch_threads

MODES = ("train", "train channels_last", "eager", "eager channels_last", "onnxruntime")


def _operator(op: str, channels: int, size: int, kernel: int, stride: int, p: float):
    """The module of an operator and its (FLOPs, params) at this input size."""
    options = {"p": p, "inner_bn": True} if op == "bsconv_s" else {}
    node, _, _ = plan_operator(op, channels, channels, kernel, stride, (size, size), **options)
    return create_conv(op, channels, channels, kernel, stride, **options), node_cost(node)


def _train_ms(module, shape: tuple[int, ...], batch: int, channels_last: bool, threads: int, runs: int,
              device: str) -> float:
    module = module.to(device).train()
    x = torch.randn(batch, *shape, device=device)
    if channels_last:
        module, x = module.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

    def step():
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    with torch_threads(threads):
        return median_ms(step, warmup=1, repeats=runs)


def _time(mode: str, module, shape, args) -> float:
    if mode.startswith("train"):
        return _train_ms(module, shape, args.train_batch, mode.endswith("channels_last"), args.threads, args.runs,
                         args.device)
    if mode == "onnxruntime":
        from bsnas.deploy.onnx import measure_onnx_latency

        return measure_onnx_latency(module, shape, args.infer_batch, args.threads, warmup=2,
                                    repeats=args.runs).median_ms
    return measure_latency(module, shape, args.infer_batch, args.device, args.threads, warmup=2, repeats=args.runs,
                           channels_last=mode.endswith("channels_last")).median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=["regular", "dsc", "bsconv_u", "bsconv_s"])
    parser.add_argument("--channels", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 16, 8])
    parser.add_argument("--kernels", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--strides", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--p", type=float, default=0.25, help="BSConv-S p (default 0.25, the zoo's ResNets')")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--infer-batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-onnx", action="store_true", help="skip onnxruntime (needs bsnas[onnx])")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where PyTorch runs (cuda: CUDA events for inference; onnxruntime stays on the CPU)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.channels, args.sizes, args.kernels, args.strides, args.repeats, args.runs = [32, 64], [16, 8], [3], \
            [1], 1, 2
    if "regular" not in args.ops:
        parser.error("--ops must include regular, the baseline")
    modes = [mode for mode in MODES if not ((args.no_onnx or args.device == "cuda") and mode == "onnxruntime")]
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, training batch {args.train_batch}, inference batch "
          f"{args.infer_batch}, median of {args.repeats} x {args.runs} runs", flush=True)
    ratios = {(mode, op): [] for mode in modes for op in args.ops}  # (time/FLOP ratio, time ratio, FLOP ratio, C)
    for channels, size, kernel, stride in itertools.product(args.channels, args.sizes, args.kernels, args.strides):
        shape = (channels, size, size)
        built = {op: _operator(op, channels, size, kernel, stride, args.p) for op in args.ops}
        flops = {op: built[op][1].flops for op in args.ops}
        params = {op: built[op][1].params for op in args.ops}
        for mode in modes:
            times = {op: [] for op in args.ops}
            for repeat in range(args.repeats):
                order = args.ops[repeat % len(args.ops):] + args.ops[:repeat % len(args.ops)]
                for op in order:
                    times[op].append(_time(mode, built[op][0], shape, args))
            median = {op: statistics.median(values) for op, values in times.items()}
            cells = "  ".join(f"{op} {median[op]:8.3f} ms" for op in args.ops)
            print(f"C {channels:3d} {size:2d}x{size:<2d} k{kernel} s{stride} {mode:20s} {cells}", flush=True)
            for op in args.ops:
                per_flop = (median[op] / flops[op]) / (median["regular"] / flops["regular"])
                ratios[mode, op].append((per_flop, median[op] / median["regular"], flops[op] / flops["regular"],
                                         channels))
        print("   FLOPs " + "  ".join(f"{op} {flops[op] / 1e6:.2f} M" for op in args.ops) + "   params "
              + "  ".join(f"{op} {params[op]:,}" for op in args.ops), flush=True)
    print("\nmedian over the configurations, relative to regular at the same configuration:")
    print("| mode | operator | time per FLOP | time | FLOPs | " + " | ".join(f"time per FLOP, C={c}"
                                                                         for c in args.channels) + " |")
    print("|---" * (5 + len(args.channels)) + "|")
    for mode in modes:
        for op in args.ops:
            if op == "regular":
                continue
            rows = ratios[mode, op]
            by_channels = [statistics.median(r[0] for r in rows if r[3] == c) for c in args.channels]
            print(f"| {mode} | {op} | {statistics.median(r[0] for r in rows):.2f}x | "
                  f"{statistics.median(r[1] for r in rows):.2f}x | {statistics.median(r[2] for r in rows):.3f}x | "
                  + " | ".join(f"{value:.2f}x" for value in by_channels) + " |")


if __name__ == "__main__":
    main()
