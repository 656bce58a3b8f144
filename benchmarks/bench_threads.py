"""The default torch thread count of `bsnas train`: training speed with each thread count, in one run (numbers, not
assertions).

    python benchmarks/bench_threads.py [--model M] [--images 3000] [--threads 1 2] [--repeats 5] [--load P]
                                       [--dataset fashion-mnist]

trains one epoch of the `paper` preset (batch 128, crop + flip, channels_last) on --images training images with
each thread count in turn (the order alternates from repeat to repeat) and prints the training images/s of every
run, the median per thread count and its ratio to the first count's. --load P starts P processes that spin on the
CPU for the whole measurement, as other jobs on a shared machine do; run it once with --load 0 and once with
--load 2 on an otherwise idle 2-core machine: the default (1 thread, `DEFAULT_THREADS`) should be the faster
under load and lose little when idle.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch

from bsnas.arch.zoo import get_spec
from bsnas.nn.build import build_model
from bsnas.train.config import preset
from bsnas.train.data import DataConfig, load_data
from bsnas.train.loop import train

MODEL = "cifar_mobilenetv3_small_w7d20"  # the quick start's `bsnas train` model
LOAD_LIMIT_S = 3600.0  # a spinning process stops by itself after this long, should this script be killed


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def images_per_s(model_name: str, data, images: int, threads: int) -> float:
    """Training images/s of one epoch of the paper preset on `images` images with `threads` torch threads."""
    torch.manual_seed(0)
    model = build_model(get_spec(model_name, data.num_classes, data.in_channels, data.image_size))
    config = preset("paper", epochs=1, train_subset=images, val_subset=64, final_test=False, device="cpu",
                    threads=threads)
    return train(model, data, config).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--dataset", default="fashion-mnist", help="synthetic for a quick check of the script")
    parser.add_argument("--images", type=int, default=3000, help="training images per run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts; the first is the base")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", type=int, default=0, help="processes spinning on the CPU while it measures")
    args = parser.parse_args()
    data = load_data(DataConfig(args.dataset))
    spinners = [multiprocessing.Process(target=_spin, args=(LOAD_LIMIT_S,), daemon=True) for _ in range(args.load)]
    for spinner in spinners:
        spinner.start()
    rates: dict[int, list[float]] = {threads: [] for threads in args.threads}
    try:
        for repeat in range(args.repeats):
            for threads in args.threads if repeat % 2 == 0 else reversed(args.threads):
                rates[threads].append(images_per_s(args.model, data, args.images, threads))
                print(f"repeat {repeat + 1}, {threads} thread(s): {rates[threads][-1]:.0f} images/s", flush=True)
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join(timeout=10)
    base = statistics.median(rates[args.threads[0]])
    print(f"{args.model}, {args.images} images, {args.load} spinning process(es), medians of {args.repeats}: "
          + "; ".join(f"{threads} thread(s) {statistics.median(rates[threads]):.0f} images/s "
                      f"({statistics.median(rates[threads]) / base:.2f}x)" for threads in args.threads))


if __name__ == "__main__":
    main()
