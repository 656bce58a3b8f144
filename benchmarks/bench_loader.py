"""Input pipeline: one augmented Fashion-MNIST training epoch, bsnas vs torchvision's DataLoader.

Both sides produce normalised float batches of 128 with random crop (padding 4) and horizontal flip,
measured in the same run, alternating, median of `--repeats`. The baseline is torchvision's own
`FashionMNIST` dataset (PIL image per sample) with per-sample `transforms` in a `DataLoader`.

    python benchmarks/bench_loader.py [--repeats 3] [--workers 0] [--threads N]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from bsnas.train.data import DEBIAN_FASHION_MNIST, DataConfig, load_data
from bsnas.train.loader import BatchLoader


def time_epoch(batches) -> tuple[float, int]:
    """Seconds and images of one pass over `batches` (an iterable of (images, labels))."""
    start = time.perf_counter()
    count = 0
    for images, _ in batches:
        count += len(images)
    return time.perf_counter() - start, count


def torchvision_root(folder: Path) -> str:
    """Unpack the Debian idx files into torchvision's FashionMNIST/raw layout under `folder`."""
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in DEBIAN_FASHION_MNIST.glob("*.gz"):
        with gzip.open(path) as source, (raw / path.stem).open("wb") as target:
            shutil.copyfileobj(source, target)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_data(DataConfig("fashion-mnist"))
    ours = BatchLoader(data.train, 128, data.mean, data.std, shuffle=True, crop_padding=4, flip=True,
                       channels_last=True)
    with tempfile.TemporaryDirectory() as folder:
        transform = transforms.Compose([
            transforms.RandomCrop(28, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ])
        dataset = FashionMNIST(torchvision_root(Path(folder)), train=True, transform=transform)
        baseline = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=args.workers)
        rates: dict[str, list[float]] = {"bsnas": [], "torchvision": []}
        for repeat in range(args.repeats):
            seconds, count = time_epoch(ours.epoch(repeat))
            rates["bsnas"].append(count / seconds)
            seconds, count = time_epoch(baseline)
            rates["torchvision"].append(count / seconds)
            print(f"repeat {repeat + 1}: bsnas {rates['bsnas'][-1]:,.0f} img/s, "
                  f"torchvision {rates['torchvision'][-1]:,.0f} img/s", flush=True)
    ours_rate, base_rate = statistics.median(rates["bsnas"]), statistics.median(rates["torchvision"])
    print(f"bsnas BatchLoader:        {ours_rate:12,.0f} img/s (median of {args.repeats}, {len(data.train)} images)")
    print(f"torchvision DataLoader:   {base_rate:12,.0f} img/s (median of {args.repeats}, {len(dataset)} images, "
          f"{args.workers} workers)")
    print(f"ratio: {ours_rate / base_rate:.1f}x  (torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
