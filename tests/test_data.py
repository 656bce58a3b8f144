"""Datasets, the stratified split and the batched in-memory loader."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from bsnas.errors import BsnasError
from bsnas.train import data
from bsnas.train.data import DataConfig, Split, load_data, make_synthetic, stratified_split
from bsnas.train.loader import BatchLoader, random_crop, random_flip

HAS_FASHION_MNIST = (data.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()


# ------------------------------------------------------------------------------------------ stratified split


def test_stratified_split_holds_out_the_fraction_of_every_class():
    labels = torch.arange(10).repeat_interleave(torch.tensor([20, 30, 40, 50, 60, 20, 30, 40, 50, 60]))
    kept, held_out = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(torch.sort(torch.cat([kept, held_out])).values, torch.arange(len(labels)))
    expected = torch.round(torch.bincount(labels).double() * 0.1).long()
    assert torch.equal(torch.bincount(labels[held_out], minlength=10), expected)


def test_stratified_split_is_seeded():
    labels = torch.arange(500) % 5
    assert torch.equal(stratified_split(labels, 0.2, 1)[1], stratified_split(labels, 0.2, 1)[1])
    assert not torch.equal(stratified_split(labels, 0.2, 1)[1], stratified_split(labels, 0.2, 2)[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(BsnasError, match="validation fraction"):
        stratified_split(torch.arange(10), fraction, 0)


# ------------------------------------------------------------------------------------------------ datasets


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def _write_fashion_mnist(folder, train_size=40, test_size=20, compress=False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, size in (("train", train_size), ("t10k", test_size)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (size, 28, 28)), compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(size) % 10, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_data_root_in_torchvision_layout(tmp_path, compress):
    _write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=compress)
    splits = load_data(DataConfig("fashion-mnist", data_root=str(tmp_path), val_fraction=0.25))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (1, 28, 28)
    assert splits.classes[0] == "T-shirt/top" and splits.num_classes == 10 and splits.in_channels == 1
    assert torch.equal(splits.test.labels, torch.arange(20) % 10)


def test_fashion_mnist_rejects_a_corrupt_idx_file(tmp_path):
    _write_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(BsnasError, match="header says"):
        load_data(DataConfig("fashion-mnist", data_root=str(tmp_path)))


def test_missing_fashion_mnist_names_the_package_and_the_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(BsnasError, match="dataset-fashion-mnist, pass --data-root, or pass --download"):
        load_data(DataConfig("fashion-mnist"))


def test_a_data_root_is_never_ignored(tmp_path):
    """Issue 11: --data-root FILE (or a folder without the files) fell back to Debian's copy without a word."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(BsnasError, match="--data-root .*file is a file"):
        load_data(DataConfig("fashion-mnist", data_root=str(tmp_path / "file")))
    with pytest.raises(BsnasError, match="not found in --data-root .*no train-images-idx3-ubyte"):
        load_data(DataConfig("fashion-mnist", data_root=str(tmp_path)))


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_FASHION_MNIST, reason="needs the Debian package dataset-fashion-mnist")
def test_real_fashion_mnist_has_its_published_shape():
    splits = load_data(DataConfig("fashion-mnist"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert torch.equal(torch.bincount(splits.val.labels), torch.full((10,), 600))
    assert 0.2 < splits.mean[0] < 0.4 and 0.25 < splits.std[0] < 0.45


def _write_cifar(root, name: str, per_file: int = 10) -> None:
    """A tiny CIFAR dataset in torchvision's on-disk format (python pickles of numpy arrays)."""
    rng = np.random.default_rng(1)
    folder_name, train_files, test_files, meta_file, label_key, names_key = data.CIFAR_LAYOUT[name]
    folder = root / folder_name
    folder.mkdir(parents=True)
    num_classes = 10 if name == "cifar10" else 100
    for index, file in enumerate([*train_files, *test_files]):
        entry = {"batch_label": file, "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 label_key: [(index + i) % num_classes for i in range(per_file)], "filenames": ["x.png"] * per_file}
        with (folder / file).open("wb") as handle:
            pickle.dump(entry, handle)
    with (folder / meta_file).open("wb") as handle:
        pickle.dump({names_key: [f"c{i}" for i in range(num_classes)]}, handle)


@pytest.mark.parametrize("name,train_size,num_classes", [("cifar10", 50, 10), ("cifar100", 10, 100)])
def test_cifar_in_torchvision_format_loads(tmp_path, name, train_size, num_classes):
    _write_cifar(tmp_path, name)
    splits = load_data(DataConfig(name, data_root=str(tmp_path), val_fraction=0.0))
    assert len(splits.train) == train_size and len(splits.test) == 10 and len(splits.val) == 0
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.num_classes == num_classes
    with (tmp_path / data.CIFAR_LAYOUT[name][0] / data.CIFAR_LAYOUT[name][2][0]).open("rb") as handle:
        raw = pickle.load(handle)
    expected = torch.from_numpy(raw["data"]).reshape(-1, 3, 32, 32)
    assert torch.equal(splits.test.images, expected)  # rows are R, G, B planes of 32x32, as in torchvision


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    _write_cifar(tmp_path, "cifar10")

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({"data": Payload()}, handle)
    with pytest.raises(BsnasError, match="not a CIFAR batch file"):
        load_data(DataConfig("cifar10", data_root=str(tmp_path)))


def test_missing_cifar_names_the_flags(tmp_path):
    with pytest.raises(BsnasError, match="--data-root.*--download"):
        load_data(DataConfig("cifar100", data_root=str(tmp_path)))


def test_image_folder_is_resized_and_labelled_by_folder(tmp_path):
    from torchvision.transforms.v2.functional import to_pil_image

    for split, count in (("train", 6), ("test", 2)):
        for name in ("b_cat", "a_dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                image = torch.full((3, 20 + i, 30), 200 if name == "b_cat" else 0, dtype=torch.uint8)
                to_pil_image(image).save(tmp_path / split / name / f"{i}.png")
    splits = load_data(DataConfig(f"imagefolder:{tmp_path}", image_size=12, val_fraction=0.5))
    assert splits.classes == ("a_dog", "b_cat")
    assert splits.train.images.shape == (6, 3, 12, 12) and len(splits.test) == 4
    # a_dog (label 0) images are black, b_cat (label 1) images are 200 everywhere
    assert torch.equal(splits.test.images.float().mean(dim=(1, 2, 3)), splits.test.labels.float() * 200)


def test_image_folder_without_splits_is_a_user_error(tmp_path):
    with pytest.raises(BsnasError, match="train and .*test folders"):
        load_data(DataConfig(f"imagefolder:{tmp_path}"))


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(BsnasError, match="not one of fashion-mnist, cifar10"):
        load_data(DataConfig("mnist"))


def test_synthetic_is_seeded_and_named_synthetic():
    first, second = make_synthetic(seed=4), make_synthetic(seed=4)
    assert first.name == "synthetic" and torch.equal(first.train.images, second.train.images)
    assert not torch.equal(first.train.images, make_synthetic(seed=5).train.images)


def test_resize_changes_the_image_size(tmp_path):
    _write_fashion_mnist(tmp_path)
    splits = load_data(DataConfig("fashion-mnist", data_root=str(tmp_path), image_size=32))
    assert splits.image_size == 32 and splits.test.images.shape[1:] == (1, 32, 32)


# ------------------------------------------------------------------------------------- batched augmentation


def test_random_crop_takes_a_window_of_the_padded_image():
    images = torch.randint(1, 256, (64, 2, 8, 8), dtype=torch.uint8)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for image, padded_image in zip(cropped, padded, strict=True):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(image, padded_image[:, dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 12  # offsets are spread over the 25 possible ones
    assert random_crop(images, 0, torch.Generator()) is images


def test_random_flip_flips_about_half():
    images = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_eval_loader_serves_every_sample_once_in_order_normalised():
    split = make_synthetic(train_size=300, val_fraction=0.0).train
    mean = tuple(float(c) for c in split.images.float().mean(dim=(0, 2, 3)) / 255)
    std = tuple(float(c) for c in split.images.float().std(dim=(0, 2, 3)) / 255)
    loader = BatchLoader(split, 64, mean, std)
    batches = list(loader.epoch())
    assert len(loader) == len(batches) == 5
    images = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    assert images.dtype == torch.float32 and abs(float(images.mean())) < 1e-3
    assert abs(float(images.std()) - 1.0) < 1e-2


def test_training_loader_epochs_are_seeded_permutations():
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 4, 4).contiguous(),
                  torch.arange(100))
    loader = BatchLoader(split, 32, (0.0,), (1 / 255,), shuffle=True, crop_padding=1, flip=True, seed=7,
                         channels_last=True)
    first = list(loader.epoch(3))
    assert len(first) == len(loader) == 3  # the incomplete last batch is dropped
    labels = torch.cat([y for _, y in first])
    assert len(set(labels.tolist())) == 96
    for x, y in first:  # images travel with their labels (every pixel is the label or crop padding)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert bool(((x == y.view(-1, 1, 1, 1).float()) | (x == 0)).all())
    again = list(loader.epoch(3))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat([y for _, y in loader.epoch(4)]), labels)


def test_training_loader_with_fewer_samples_than_a_batch_gives_one_batch():
    split = make_synthetic(train_size=20, val_fraction=0.0).train
    loader = BatchLoader(split, 64, (0.5,) * 3, (0.25,) * 3, shuffle=True)
    assert [len(y) for _, y in loader.epoch(0)] == [20]
