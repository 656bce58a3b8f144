"""PyTorch against onnxruntime latency over the zoo (numbers, not assertions).

    python benchmarks/bench_latency.py [--pattern '^cifar_'] [--max-mflops 100] [--threads 1] [--repeats 3]

For every zoo model matching --pattern (default: the CIFAR forms) of at most --max-mflops FLOPs at its input:
the median forward time of one image (batch 1, --threads threads) in PyTorch eager mode and in onnxruntime on the
exported file (BatchNorm folded, all graph optimisations), each the median of --repeats measurements of 30 runs;
the onnxruntime speed-up per model; and Spearman's rho and Kendall's tau of FLOPs against each latency: how well
FLOPs predict latency, and so when a latency objective (`bsnas search --objective latency`) changes the answer.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models
from bsnas.deploy.onnx import measure_onnx_latency, onnx_bytes
from bsnas.nn.build import build_model
from bsnas.nn.profile import measure_latency
from bsnas.search.ranking import kendall_tau, spearman_rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default=r"^cifar_")
    parser.add_argument("--max-mflops", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in list_models(args.pattern):
        spec = get_spec(name)
        flops = cost(spec).flops
        if flops > args.max_mflops * 1e6:
            continue
        torch.manual_seed(0)
        model = build_model(spec).eval()
        data = onnx_bytes(model, spec.input_size)
        eager = statistics.median(measure_latency(model, spec.input_size, 1, "cpu", args.threads, warmup=5,
                                                  repeats=30).median_ms for _ in range(args.repeats))
        ort = statistics.median(measure_onnx_latency(data, spec.input_size, 1, args.threads, warmup=5,
                                                     repeats=30).median_ms for _ in range(args.repeats))
        rows.append((name, flops, eager, ort))
        print(f"{name:48s} {flops / 1e6:8.2f} MFLOPs  torch {eager:7.3f} ms  onnxruntime {ort:7.3f} ms  "
              f"x{eager / ort:5.2f}", flush=True)
    flops, eager, ort = ([row[i] for row in rows] for i in (1, 2, 3))
    speedups = [e / o for e, o in zip(eager, ort, strict=True)]
    print(f"\n{len(rows)} models <= {args.max_mflops:g} MFLOPs, batch 1, {args.threads} thread(s), torch "
          f"{torch.__version__}")
    print(f"onnxruntime speed-up over PyTorch eager: median x{statistics.median(speedups):.2f}, range "
          f"x{min(speedups):.2f} .. x{max(speedups):.2f}")
    for label, latency in (("PyTorch", eager), ("onnxruntime", ort)):
        print(f"FLOPs vs {label} latency: Spearman rho {spearman_rho(flops, latency):.3f}, Kendall tau "
              f"{kendall_tau(flops, latency):.3f}")
    print(f"PyTorch vs onnxruntime latency: Spearman rho {spearman_rho(eager, ort):.3f}")


if __name__ == "__main__":
    main()
