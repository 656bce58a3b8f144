"""Trainer speed and the proxy protocol, on real Fashion-MNIST (numbers, not assertions).

    python benchmarks/bench_train.py overhead [--model M] [--images 5000] [--repeats 3] [--threads N]
        bsnas `train` vs a bare PyTorch loop (same model, data, batch size, optimizer), one epoch each,
        alternating, median of repeats: the trainer's overhead in percent.
    python benchmarks/bench_train.py layout [--model M] ...
        channels_last on vs off for one training epoch (median of repeats).
    python benchmarks/bench_train.py proxy [--model M] [--repeats 3] [--threads N] [--baseline CHANGES]
        wall time of one proxy evaluation as `bsnas search` runs it (`ProxyEvaluator` with the default proxy:
        build the model, train it with the `proxy` preset, score the validation subset); with --baseline, also
        the proxy with those changes to the preset, alternating, and the ratio of the medians.
    python benchmarks/bench_train.py workers [--model M] [--images 5000] [--repeats 3] [--threads 2]
        throughput of proxy trainings in one process with --threads threads vs that many single-thread
        processes (what `bsnas search --workers` does), same jobs, alternating, median of repeats.
    python benchmarks/bench_train.py evaluate [--model M] [--images 3000] [--eval-batch-sizes 128 64 32] [--repeats 3]
        validation speed (images/s) with BatchNorm kept vs folded into the convolutions (`fold_batchnorm`, the
        folding counted), per eval batch size, alternating, median of repeats, ratio to the first batch size kept.
    python benchmarks/bench_train.py proxy-rank [--models A,B,...] [--settings S1 S2 ...] [--reference-epochs E]
                                                [--reference-images N] [--jobs J]
        how well proxy settings rank models: validation accuracy of each model under each setting (changes
        to the proxy preset, e.g. lr=0.05,train_subset=5000,val_subset=3000) and the Spearman rank correlation
        with a longer reference training (E epochs of the paper schedule, crop padding 2 + flip, on N images).
        Trainings run in J single-thread processes; seeded CPU runs give the same accuracies for any J, so the
        reference accuracies are cached (--reference-cache, keyed by model, settings and torch version).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import pathlib
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec
from bsnas.nn.build import build_model
from bsnas.nn.fold import fold_batchnorm
from bsnas.search.evaluator import ProxyEvaluator
from bsnas.train.config import TrainConfig, preset
from bsnas.train.data import DataConfig, DataSplits, load_data
from bsnas.train.loader import BatchLoader
from bsnas.train.loop import train

PROXY_MODEL = "cifar_mobilenetv2_w1d2_bsconvs_p1d6"  # 22.7 MFLOPs at 1x28x28, the largest <= 25 MFLOPs seed
RANK_MODELS = ("cifar_mobilenetv3_small_w7d20", "cifar_resnet20_bsconvu", "cifar_mobilenetv2_w1d4",
               "cifar_mobilenetv1_w1d4_bsconvu", "cifar_mobilenetv2_w1d2_bsconvs_p1d6",
               "cifar_mobilenetv3_large_w7d20_bsconvs_p1d6_pfd", "cifar_mobilenetv1_w1d4",
               "cifar_mobilenetv3_small_w1d2_bsconvs_p1d6")


def fresh_model(name: str, data: DataSplits, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(get_spec(name, data.num_classes, data.in_channels, data.image_size))


def bare_epoch(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], config: TrainConfig) -> float:
    """Seconds of one epoch of the plainest loop over ready-made batches (no augmentation, no bookkeeping)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    start = time.perf_counter()
    for images, labels in batches:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def overhead(args: argparse.Namespace, data: DataSplits) -> None:
    config = preset("proxy", train_subset=args.images, alpha=0.0, device="cpu")
    plain = dataclasses.replace(data, val=data.val.subset(torch.arange(0)))  # no validation pass
    loader = BatchLoader(data.train.subset(torch.arange(args.images)), config.batch_size, data.mean, data.std,
                         channels_last=True)
    batches = list(loader.epoch())[: args.images // config.batch_size]
    times: dict[str, list[float]] = {"bsnas": [], "bare": []}
    runs = {"bsnas": lambda: train(fresh_model(args.model, data), plain, config).history[0].seconds,
            "bare": lambda: bare_epoch(fresh_model(args.model, data).to(memory_format=torch.channels_last),
                                       batches, config)}
    for repeat in range(args.repeats):
        for name in sorted(runs, reverse=repeat % 2 == 1):  # alternate which one runs first
            times[name].append(runs[name]())
        print(f"repeat {repeat + 1}: bsnas {times['bsnas'][-1]:.2f} s, bare loop {times['bare'][-1]:.2f} s", flush=True)
    ours, bare = statistics.median(times["bsnas"]), statistics.median(times["bare"])
    paired = statistics.median(a / b for a, b in zip(times["bsnas"], times["bare"], strict=True))
    print(f"{args.model}, {len(batches) * config.batch_size} images, batch {config.batch_size}, "
          f"threads {torch.get_num_threads()}: bsnas {ours:.2f} s, bare {bare:.2f} s (medians of {args.repeats}); "
          f"overhead {100 * (ours / bare - 1):+.1f} % (ratio of medians), {100 * (paired - 1):+.1f} % "
          "(median of the paired ratios of each repeat)")


def layout(args: argparse.Namespace, data: DataSplits) -> None:
    plain = dataclasses.replace(data, val=data.val.subset(torch.arange(0)))
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for channels_last in (True, False):
            config = preset("proxy", train_subset=args.images, device="cpu", channels_last=channels_last)
            rates[channels_last].append(train(fresh_model(args.model, data), plain, config).images_per_s)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"{args.model}, threads {torch.get_num_threads()}: channels_last {on:.0f} img/s, contiguous {off:.0f} img/s "
          f"(medians of {args.repeats}); ratio {on / off:.2f}x")


def proxy(args: argparse.Namespace, data: DataSplits) -> None:
    evaluators = {"preset": ProxyEvaluator()}  # exactly what `bsnas search` runs for a candidate by default
    if args.baseline:
        evaluators["baseline"] = BaselineEvaluator(changes=parse_setting(args.baseline))
    spec = get_spec(args.model, data.num_classes, data.in_channels, data.image_size)
    flops = cost(spec).flops
    evaluators["preset"].data()  # loaded once per worker process, before its first candidate
    walls: dict[str, list[float]] = {name: [] for name in evaluators}
    for repeat in range(args.repeats):
        for name in sorted(evaluators, reverse=repeat % 2 == 1):  # alternate which one runs first
            torch.manual_seed(0)
            start = time.perf_counter()
            result = evaluators[name](spec)
            walls[name].append(time.perf_counter() - start)
            print(f"{name} proxy of {args.model}: {walls[name][-1]:.1f} s ({result.seconds:.1f} s training), "
                  f"val accuracy {result.accuracy:.2%}", flush=True)
    print(f"{args.model} ({flops / 1e6:.1f} MFLOPs at {data.in_channels}x{data.image_size}x{data.image_size}), "
          f"threads {torch.get_num_threads()}, build + train + validation, medians of {args.repeats}:")
    for name, evaluator in evaluators.items():
        config = evaluator.train_config()
        print(f"  {name}: {config.train_subset} training + {config.val_subset or len(data.val)} validation images, "
              f"BatchNorm re-estimated on {config.bn_recalibration}, eval batch {config.eval_batch_size}: "
              f"{statistics.median(walls[name]):.1f} s per proxy evaluation")
    if args.baseline:
        print(f"  baseline / preset: {statistics.median(walls['baseline']) / statistics.median(walls['preset']):.2f}x")


@dataclasses.dataclass(frozen=True)
class BaselineEvaluator(ProxyEvaluator):
    """The search's proxy evaluation with `changes` to the proxy preset (any TrainConfig field)."""

    changes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(super().train_config(), **self.changes)


def inference_seconds(model: torch.nn.Module, loader: BatchLoader, fold: bool) -> float:
    """Seconds to predict every validation batch, with BatchNorm folded first (counted) or not."""
    start = time.perf_counter()
    with torch.inference_mode():
        model = fold_batchnorm(model) if fold else model.eval()
        for images, _ in loader.epoch():
            model(images).argmax(1)
    return time.perf_counter() - start


def evaluation(args: argparse.Namespace, data: DataSplits) -> None:
    """Validation speed with and without folded BatchNorm, per eval batch size, alternating, medians."""
    model = fresh_model(args.model, data).to(memory_format=torch.channels_last)
    val = data.val.subset(torch.arange(min(args.images, len(data.val))))
    seconds: dict[tuple[int, bool], list[float]] = {}
    for _ in range(args.repeats):
        for batch_size in args.eval_batch_sizes:
            loader = BatchLoader(val, batch_size, data.mean, data.std, channels_last=True)
            for fold in (False, True):
                seconds.setdefault((batch_size, fold), []).append(inference_seconds(model, loader, fold))
    baseline = statistics.median(seconds[args.eval_batch_sizes[0], False])
    print(f"{args.model}, {len(val)} validation images, threads {torch.get_num_threads()}, medians of {args.repeats}:")
    for (batch_size, fold), times in seconds.items():
        median = statistics.median(times)
        print(f"  eval batch {batch_size:4d}, BatchNorm {'folded' if fold else 'kept  '}: {median:.2f} s, "
              f"{len(val) / median:.0f} img/s, {baseline / median:.2f}x batch {args.eval_batch_sizes[0]} kept")


def spearman(first: list[float], second: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        return [order.index(i) for i in range(len(values))]

    a, b, n = ranks(first), ranks(second), len(first)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / (n * (n * n - 1))


def parse_setting(text: str) -> dict[str, Any]:
    """`lr=0.1,train_subset=5000,flip=false` -> changes to the proxy preset (TrainConfig field names)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--settings {text!r}: {key!r} is not a TrainConfig field ({', '.join(sorted(fields))}).")
        changes[key] = yaml.safe_load(value)
    return changes


def _accuracy(job: tuple[str, dict[str, Any], str, int]) -> tuple[float, float]:
    """(validation accuracy, seconds) of one training of a zoo model with `threads` torch threads."""
    name, changes, preset_name, threads = job
    torch.set_num_threads(threads)
    data = _worker_data()
    start = time.perf_counter()
    result = train(fresh_model(name, data), data, preset(preset_name, device="cpu", **changes))
    return result.val_accuracy, time.perf_counter() - start


@functools.cache
def _worker_data() -> DataSplits:
    return load_data(DataConfig("fashion-mnist"))


def _cache_key(job: tuple[str, dict[str, Any], str, int], torch_version: str) -> str:
    """A reference training is deterministic (seeded, one thread): its accuracy is cached under this key."""
    name, changes, preset_name, _ = job
    return json.dumps([name, preset_name, changes, torch_version], sort_keys=True)


def proxy_rank(args: argparse.Namespace, data: DataSplits) -> None:
    models = args.models.split(",")
    for name in models:
        get_spec(name)  # an unknown name fails now, not after an hour of training
    settings = [parse_setting(text) for text in args.settings]
    jobs = [(name, changes, "proxy", 1) for changes in settings for name in models]
    if args.reference_epochs:
        reference = {"epochs": args.reference_epochs, "train_subset": args.reference_images, "final_test": False,
                     "crop_padding": 2}
        jobs += [(name, reference, "paper", 1) for name in models]
    cache_path = pathlib.Path(args.reference_cache)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key = functools.partial(_cache_key, torch_version=torch.__version__)
    todo = [job for job in jobs if job[2] == "proxy" or key(job) not in cache]
    done = {}
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for job, (accuracy, seconds) in zip(todo, pool.imap(_accuracy, todo), strict=True):
            done[key(job)] = accuracy
            print(f"{job[2]} {job[0]} {job[1]}: val accuracy {accuracy:.2%} ({seconds:.0f} s)", flush=True)
            if job[2] == "paper":
                cache[key(job)] = accuracy
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_text(json.dumps(cache, indent=1))
    results = [done[key(job)] if key(job) in done else cache[key(job)] for job in jobs]
    rows = [results[i * len(models):(i + 1) * len(models)] for i in range(len(jobs) // len(models))]
    truth = rows[-1] if args.reference_epochs else None
    print("\n| proxy setting | " + " | ".join(name.removeprefix("cifar_") for name in models) + " | mean |"
          + (" Spearman vs reference |" if truth else ""))
    print("|---" * (len(models) + 2 + bool(truth)) + "|")
    for text, row in zip(args.settings, rows, strict=False):
        rho = f" {spearman(row, truth):+.2f} |" if truth else ""
        cells = " | ".join(f"{accuracy:.2%}" for accuracy in row)
        print(f"| {text or 'preset'} | {cells} | {statistics.mean(row):.2%} |{rho}")
    if truth:
        print(f"| reference ({args.reference_epochs} epochs, {args.reference_images} images) | "
              + " | ".join(f"{a:.2%}" for a in truth) + " | | |")


def workers(args: argparse.Namespace, data: DataSplits) -> None:
    """The same proxy trainings in one two-thread process vs two single-thread processes, alternating."""
    cores = args.threads or 2
    jobs = [(args.model, {"train_subset": args.images, "val_subset": 1000}, "proxy")] * (2 * cores)
    walls: dict[str, list[float]] = {"one process": [], "processes": []}
    for _ in range(args.repeats):
        for label, processes, threads in (("one process", 1, cores), ("processes", cores, 1)):
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                pool.map(_worker_data_loaded, range(processes))  # spawn and load the data before timing
                start = time.perf_counter()
                pool.map(_accuracy, [(*job, threads) for job in jobs], chunksize=1)
                walls[label].append(time.perf_counter() - start)
            print(f"{label} ({processes} x {threads} threads): {walls[label][-1]:.1f} s", flush=True)
    one, many = statistics.median(walls["one process"]), statistics.median(walls["processes"])
    print(f"{len(jobs)} proxy trainings of {args.model} on {args.images} images: one {cores}-thread process "
          f"{one:.1f} s, {cores} single-thread processes {many:.1f} s (medians of {args.repeats}); "
          f"{one / many:.2f}x the throughput")


def _worker_data_loaded(_: int) -> int:
    return len(_worker_data().train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("overhead", "layout", "proxy", "evaluate", "proxy-rank", "workers"))
    parser.add_argument("--model", default=PROXY_MODEL)
    parser.add_argument("--models", default=",".join(RANK_MODELS), help="proxy-rank only")
    parser.add_argument("--settings", nargs="+", default=[""],
                        help="proxy-rank only: proxy settings to compare, each a comma-separated list of TrainConfig "
                             "changes to the proxy preset, e.g. lr=0.05,train_subset=5000 ('' = the preset)")
    parser.add_argument("--reference-epochs", type=int, default=0, help="proxy-rank only")
    parser.add_argument("--reference-images", type=int, default=15_000, help="proxy-rank only")
    parser.add_argument("--reference-cache", default="runs/bench/proxy_rank_reference.json",
                        help="proxy-rank only: reference accuracies are kept in this file and not trained again")
    parser.add_argument("--jobs", type=int, default=2, help="proxy-rank only: single-thread training processes")
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--baseline", default="", help="proxy only: changes to the proxy preset to time alternately, "
                        "e.g. train_subset=5000,bn_recalibration=1024,eval_batch_size=128")
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[128, 64, 32], help="evaluate only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(DataConfig("fashion-mnist"))
    {"overhead": overhead, "layout": layout, "proxy": proxy, "evaluate": evaluation, "proxy-rank": proxy_rank,
     "workers": workers}[args.what](args, data)


if __name__ == "__main__":
    main()
