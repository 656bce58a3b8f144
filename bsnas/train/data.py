"""Datasets held in memory as uint8 tensors, with a seeded stratified validation split.

Every split is one uint8 tensor of shape (N, C, H, W) plus int64 labels (`bsnas.train.loader` batches it).

Datasets, by name:

- ``fashion-mnist``: the idx files (``*-idx?-ubyte`` or ``.gz``) from ``data_root`` (also its
  torchvision sub-folder ``FashionMNIST/raw``) when it is given, else from the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); a torchvision download when ``download``
  is set.
- ``cifar10``, ``cifar100``: torchvision's on-disk folders (``cifar-10-batches-py``,
  ``cifar-100-python``) under ``data_root``. ``download`` fetches them with torchvision, which
  checks the md5 of the archive and of every file. Reading does not check md5s: the pickles are
  read here with the same layout as torchvision, through an unpickler that only admits numpy
  arrays, so a tiny dataset written in that format by the tests goes through the same code path.
- ``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` images, decoded once,
  converted to RGB and resized to ``image_size`` (default 32).
- ``synthetic``: random images with learnable class structure, for tests only.
"""

from __future__ import annotations

import gzip
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bsnas.errors import BsnasError

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DOWNLOAD_HELP",
    "DataConfig",
    "DataSplits",
    "Split",
    "fetch_data",
    "load_data",
    "make_synthetic",
    "stratified_split",
]

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_HELP = "let torchvision download the dataset (fashion-mnist, cifar10, cifar100) into --data-root first"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision's CIFAR layout: folder, training files, test files, meta file, label key, class-name key.
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and how to split it; saved with every run so that it can be resumed."""

    dataset: str = "fashion-mnist"  # one of DATASETS
    data_root: str | None = None  # folder searched first; torchvision downloads go here
    download: bool = False  # let torchvision download fashion-mnist / cifar10 / cifar100
    image_size: int | None = None  # resize every image to this square size; None keeps the native size
    val_fraction: float = 0.1  # stratified share of the training set held out for validation
    split_seed: int = 0  # seed of the validation split


@dataclass(frozen=True)
class Split:
    """One split in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> Split:
        """Return the samples at `indices`."""
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class DataSplits:
    """A dataset: train, validation and test splits, class names and per-channel mean/std (0..1 scale)."""

    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into (kept, held_out), holding out round(fraction * n_c) samples of each class."""
    if not 0.0 <= fraction < 1.0:
        raise BsnasError(f"the validation fraction must be in [0, 1), got {fraction}.")
    generator = torch.Generator().manual_seed(seed)
    kept, held_out = [], []
    for label in torch.unique(labels):
        indices = torch.nonzero(labels == label).flatten()
        indices = indices[torch.randperm(len(indices), generator=generator)]
        count = round(fraction * len(indices))
        held_out.append(indices[:count])
        kept.append(indices[count:])
    return torch.sort(torch.cat(kept)).values, torch.sort(torch.cat(held_out)).values


def load_data(config: DataConfig) -> DataSplits:
    """Load `config.dataset` into memory and hold out its stratified validation split."""
    name = config.dataset
    if name == "fashion-mnist":
        classes, train, test = _load_fashion_mnist(config.data_root, config.download)
    elif name in CIFAR_LAYOUT:
        classes, train, test = _load_cifar(name, config.data_root, config.download)
    elif name.startswith("imagefolder:"):
        classes, train, test = _load_image_folder(Path(name.partition(":")[2]), config.image_size or 32)
    elif name == "synthetic":
        return make_synthetic(image_size=config.image_size or 16, val_fraction=config.val_fraction,
                              seed=config.split_seed)
    else:
        raise BsnasError(f"--dataset {name!r} is not one of {', '.join(DATASETS)}.")
    if config.image_size is not None and config.image_size != train.images.shape[-1]:
        train, test = _resize(train, config.image_size), _resize(test, config.image_size)
    return _finish(name, classes, train, test, config.val_fraction, config.split_seed)


def fetch_data(dataset: str, data_root: str | None) -> None:
    """Download `dataset` into `data_root` with torchvision unless it is there (`--download` of the commands whose
    worker processes then read the files; it loads the dataset once to check it)."""
    load_data(DataConfig(dataset=dataset, data_root=data_root, download=True))


def make_synthetic(
    num_classes: int = 10,
    train_size: int = 1000,
    test_size: int = 200,
    image_size: int = 16,
    in_channels: int = 3,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> DataSplits:
    """Random images with learnable structure (a per-class colour and smooth pattern plus noise); for tests only.

    The class colour survives crops and flips, so a small network learns the task in a few steps.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, in_channels, 4, 4, generator=generator)
    colours = torch.randn(num_classes, in_channels, 1, 1, generator=generator)
    patterns = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False) + colours

    def draw(count: int) -> Split:
        labels = torch.arange(count) % num_classes
        noise = torch.randn(count, in_channels, image_size, image_size, generator=generator)
        images = (128 + 50 * patterns[labels] + 40 * noise).clamp(0, 255).to(torch.uint8)
        return Split(images, labels)

    classes = tuple(f"class{i}" for i in range(num_classes))
    return _finish("synthetic", classes, draw(train_size), draw(test_size), val_fraction, seed)


def _finish(
    name: str, classes: tuple[str, ...], train: Split, test: Split, val_fraction: float, seed: int
) -> DataSplits:
    kept, held_out = stratified_split(train.labels, val_fraction, seed)
    train, val = train.subset(kept), train.subset(held_out)
    mean, std = [], []
    for channel in train.images.transpose(0, 1).reshape(train.images.shape[1], -1):
        # from the exact 256-bin histogram: the same numbers whatever the thread count
        counts = torch.bincount(channel, minlength=256).double()
        values = torch.arange(256, dtype=torch.float64) / 255
        channel_mean = float((counts * values).sum() / counts.sum())
        mean.append(channel_mean)
        std.append(math.sqrt(float((counts * (values - channel_mean) ** 2).sum() / (counts.sum() - 1))))
    return DataSplits(name, classes, train, val, test, tuple(mean), tuple(std))


def _resize(split: Split, size: int) -> Split:
    chunks = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round().clamp(0, 255).to(torch.uint8)
        for chunk in split.images.split(4096)
    ]
    return Split(torch.cat(chunks), split.labels)


# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (optionally gzipped): big-endian header, then uint8 data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise BsnasError(f"{path} is not an idx file of unsigned bytes.")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    if data.numel() != math.prod(shape):
        raise BsnasError(f"{path} holds {data.numel()} bytes but its header says {shape}.")
    return data.reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _fashion_mnist_folders(data_root: str | None) -> list[Path]:
    """Where the idx files may be: the --data-root (and torchvision's sub-folders of it), else Debian's folder."""
    if data_root is None:
        return [DEBIAN_FASHION_MNIST]
    root = Path(data_root)
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]


def _load_fashion_mnist(data_root: str | None, download: bool) -> tuple[tuple[str, ...], Split, Split]:
    if data_root is not None and Path(data_root).exists() and not Path(data_root).is_dir():
        raise BsnasError(f"--data-root {data_root} is a file; give the folder that holds the Fashion-MNIST idx files.")
    folders = _fashion_mnist_folders(data_root)
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    missing = [stem for stem in stems if _find_idx(folders, stem) is None]
    if missing:
        if download:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(data_root or "data", download=True)  # fetches and checks all four files
            folders = _fashion_mnist_folders(data_root or "data")
        elif data_root is None:
            raise BsnasError("Fashion-MNIST was not found in /usr/share/datasets/fashion-mnist: install the Debian "
                             "package dataset-fashion-mnist, pass --data-root, or pass --download.")
        else:
            raise BsnasError(f"Fashion-MNIST was not found in --data-root {data_root} (no {missing[0]}[.gz] in it, "
                             "FashionMNIST/raw or fashion-mnist): point it at the idx files, drop it to use Debian's "
                             "dataset-fashion-mnist, or pass --download.")
    splits = []
    for images_stem, labels_stem in FASHION_MNIST_FILES.values():
        images = _read_idx(_find_idx(folders, images_stem)).unsqueeze(1)
        labels = _read_idx(_find_idx(folders, labels_stem)).long()
        splits.append(Split(images, labels))
    return FASHION_MNIST_CLASSES, splits[0], splits[1]


# ------------------------------------------------------------------------------------------------------- CIFAR


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches: admits numpy arrays and plain containers, nothing else."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with path.open("rb") as file:
            entry = _NumpyOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise BsnasError(f"{path} is not a CIFAR batch file in torchvision's format ({error}).") from error
    if not isinstance(entry, dict):
        raise BsnasError(f"{path} is not a CIFAR batch file in torchvision's format (no dict inside).")
    return entry


def _load_cifar(name: str, data_root: str | None, download: bool) -> tuple[tuple[str, ...], Split, Split]:
    folder_name, train_files, test_files, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    root = Path(data_root or "data")
    folder = root / folder_name
    needed = [folder / file for file in [*train_files, *test_files, meta_file]]
    if not all(path.is_file() for path in needed):
        if not download:
            raise BsnasError(
                f"{name} was not found: put torchvision's {folder_name} folder under --data-root "
                f"(looked in {root}) or pass --download."
            )
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(str(root), train=True, download=True)

    def read(files: list[str]) -> Split:
        entries = [_read_pickle(folder / file) for file in files]
        images = torch.cat([torch.as_tensor(entry["data"], dtype=torch.uint8) for entry in entries])
        labels = torch.tensor([label for entry in entries for label in entry[label_key]], dtype=torch.long)
        return Split(images.reshape(-1, 3, 32, 32), labels)

    classes = tuple(_read_pickle(folder / meta_file)[names_key])
    return classes, read(train_files), read(test_files)


# ------------------------------------------------------------------------------------------------ image folders


def _load_image_folder(root: Path, image_size: int) -> tuple[tuple[str, ...], Split, Split]:
    from torchvision.datasets.folder import default_loader
    from torchvision.transforms.v2.functional import pil_to_tensor

    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise BsnasError(
            f"--dataset imagefolder:{root} needs {root}/train and {root}/test folders with one sub-folder per class."
        )
    classes = tuple(sorted(path.name for path in (root / "train").iterdir() if path.is_dir()))
    if not classes:
        raise BsnasError(f"{root}/train has no class sub-folders.")

    def read(split: str) -> Split:
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in sorted((root / split / name).glob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    image = pil_to_tensor(default_loader(str(path))).float().unsqueeze(0)
                    image = F.interpolate(image, size=(image_size, image_size), mode="bilinear",
                                          antialias=True, align_corners=False)
                    images.append(image.round().clamp(0, 255).to(torch.uint8))
                    labels.append(label)
        if not images:
            raise BsnasError(f"{root}/{split} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
        return Split(torch.cat(images), torch.tensor(labels, dtype=torch.long))

    return classes, read("train"), read("test")
