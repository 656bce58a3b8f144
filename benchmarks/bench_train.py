"""Trainer speed and the proxy protocol, on real Fashion-MNIST (numbers, not assertions).

    python benchmarks/bench_train.py overhead [--model M] [--images 5000] [--repeats 3] [--threads N]
        bsnas `train` vs a bare PyTorch loop (same model, data, batch size, optimizer), one epoch each,
        alternating, median of repeats: the trainer's overhead in percent.
    python benchmarks/bench_train.py layout [--model M] ...
        channels_last on vs off for one training epoch (median of repeats).
    python benchmarks/bench_train.py proxy [--model M] [--repeats 3] [--threads N]
        wall time of one proxy evaluation (preset `proxy`: train, then score the validation split).
    python benchmarks/bench_train.py proxy-lr [--models A,B,...] [--lrs 0.025,0.05,...] [--crop-padding P]
                                              [--flip on|off] [--threads N]
        the proxy's learning rate: validation accuracy of each model and lr after the proxy schedule,
        and the ranking of the models by a longer reference training (`--reference-epochs` epochs
        of the paper schedule on `--reference-images` images).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from bsnas.build import build_model
from bsnas.data import BatchLoader, DataConfig, DataSplits, load_data
from bsnas.profile import profile
from bsnas.train import TrainConfig, preset, train
from bsnas.zoo import get_spec

PROXY_MODEL = "cifar_mobilenetv2_w1d2_bsconvs_p1d6"  # 22.7 MFLOPs at 1x28x28, the largest <= 25 MFLOPs seed


def fresh_model(name: str, data: DataSplits, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(get_spec(name, data.num_classes, data.in_channels))


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
    for repeat in range(args.repeats):
        result = train(fresh_model(args.model, data), plain, config)
        times["bsnas"].append(result.history[0].seconds)
        model = fresh_model(args.model, data).to(memory_format=torch.channels_last)
        times["bare"].append(bare_epoch(model, batches, config))
        print(f"repeat {repeat + 1}: bsnas {times['bsnas'][-1]:.2f} s, bare loop {times['bare'][-1]:.2f} s", flush=True)
    ours, bare = statistics.median(times["bsnas"]), statistics.median(times["bare"])
    print(f"{args.model}, {len(batches) * config.batch_size} images, batch {config.batch_size}, "
          f"threads {torch.get_num_threads()}: bsnas {ours:.2f} s, bare {bare:.2f} s (medians of {args.repeats}); "
          f"overhead {100 * (ours / bare - 1):+.1f} %")


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
    model = fresh_model(args.model, data)
    flops = profile(model, (data.in_channels, data.image_size, data.image_size)).flops
    config = preset("proxy", device="cpu")
    walls, accuracies = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = train(fresh_model(args.model, data), data, config)
        walls.append(time.perf_counter() - start)
        accuracies.append(result.val_accuracy)
        print(f"proxy of {args.model}: {walls[-1]:.1f} s, val accuracy {result.val_accuracy:.2%}, "
              f"{result.images_per_s:.0f} img/s training", flush=True)
    print(f"{args.model} ({flops / 1e6:.1f} MFLOPs at {data.in_channels}x{data.image_size}x{data.image_size}), "
          f"{config.train_subset} training + {len(data.val)} validation images, threads {torch.get_num_threads()}: "
          f"median {statistics.median(walls):.1f} s per proxy evaluation (train + validation)")


def spearman(first: list[float], second: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        return [order.index(i) for i in range(len(values))]

    a, b, n = ranks(first), ranks(second), len(first)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / (n * (n * n - 1))


def proxy_lr(args: argparse.Namespace, data: DataSplits) -> None:
    models = args.models.split(",")
    lrs = [float(lr) for lr in args.lrs.split(",")]
    table: dict[float, list[float]] = {lr: [] for lr in lrs}
    for name in models:
        for lr in lrs:
            start = time.perf_counter()
            config = preset("proxy", lr=lr, device="cpu", crop_padding=args.crop_padding, flip=args.flip == "on")
            result = train(fresh_model(name, data), data, config)
            table[lr].append(result.val_accuracy)
            print(f"proxy {name} lr {lr}: val accuracy {result.val_accuracy:.2%} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    reference = []
    if args.reference_epochs:
        config = preset("paper", epochs=args.reference_epochs, train_subset=args.reference_images, final_test=False,
                        device="cpu", crop_padding=2)
        for name in models:
            reference.append(train(fresh_model(name, data), data, config).val_accuracy)
            print(f"reference {name}: val accuracy {reference[-1]:.2%}", flush=True)
    print("\n| lr | " + " | ".join(models) + " | mean |" + (" Spearman vs reference |" if reference else ""))
    print("|---" * (len(models) + 2 + bool(reference)) + "|")
    for lr in lrs:
        cells = " | ".join(f"{accuracy:.2%}" for accuracy in table[lr])
        rho = f" {spearman(table[lr], reference):+.2f} |" if reference else ""
        print(f"| {lr} | {cells} | {statistics.mean(table[lr]):.2%} |{rho}")
    if reference:
        print("| reference | " + " | ".join(f"{accuracy:.2%}" for accuracy in reference) + " | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("overhead", "layout", "proxy", "proxy-lr"))
    parser.add_argument("--model", default=PROXY_MODEL)
    parser.add_argument("--models", default="cifar_mobilenetv3_small_w7d20,cifar_resnet20_bsconvu,"
                                            "cifar_mobilenetv2_w1d4,cifar_mobilenetv1_w1d4_bsconvu")
    parser.add_argument("--lrs", default="0.025,0.05,0.1,0.2")
    parser.add_argument("--reference-epochs", type=int, default=0)
    parser.add_argument("--reference-images", type=int, default=20_000)
    parser.add_argument("--crop-padding", type=int, default=preset("proxy").crop_padding, help="proxy-lr only")
    parser.add_argument("--flip", choices=("on", "off"), default="on" if preset("proxy").flip else "off",
                        help="proxy-lr only")
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(DataConfig("fashion-mnist"))
    {"overhead": overhead, "layout": layout, "proxy": proxy, "proxy-lr": proxy_lr}[args.what](args, data)


if __name__ == "__main__":
    main()
