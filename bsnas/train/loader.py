"""Batches of an in-memory split for training and evaluation, augmented per epoch with tensor ops.

The uint8 images move to the training device once; crop and flip run over the whole epoch at once (no
per-sample Python); batches are normalised on the fly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from bsnas.train.data import Split

__all__ = ["BatchLoader", "random_crop", "random_flip"]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop every image at a random offset after zero padding by `padding` pixels; output keeps the size.

    Runs 2 * (2 * padding + 1) masked copies over the whole batch (rows, then columns) instead of a
    Python loop over samples.
    """
    if padding == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (padding, padding, padding, padding))
    shifts = torch.randint(0, 2 * padding + 1, (2, len(images)), generator=generator, device=images.device)
    rows = torch.empty((*images.shape[:2], height, width + 2 * padding), dtype=images.dtype, device=images.device)
    for shift in range(2 * padding + 1):
        mask = shifts[0] == shift
        rows[mask] = padded[mask, :, shift:shift + height, :]
    out = torch.empty_like(images)
    for shift in range(2 * padding + 1):
        mask = shifts[1] == shift
        out[mask] = rows[mask, :, :, shift:shift + width]
    return out


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip a random half of the images horizontally."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class BatchLoader:
    """Normalised float batches of one in-memory split, augmented per epoch with tensor ops.

    The uint8 images move to `device` once. For training (`shuffle=True`) each epoch draws its
    permutation, crop offsets and flips from a generator seeded by (seed, epoch), so an epoch is the
    same whether or not the run was resumed before it. Without shuffling every sample is served once
    in order (evaluation); with shuffling the last incomplete batch is dropped unless it is the only one.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.crop_padding, self.flip, self.seed = shuffle, crop_padding, flip, seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        std_tensor = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_tensor)
        self.shift = -torch.tensor(mean, device=self.device).view(1, -1, 1, 1) / std_tensor

    def __len__(self) -> int:
        if self.shuffle:
            return max(1, len(self.labels) // self.batch_size)
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches of one epoch: float images normalised per channel."""
        images, labels = self.images, self.labels
        if self.shuffle:
            generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(len(labels), generator=generator, device=self.device)
            images, labels = images[order], labels[order]
            images = random_crop(images, self.crop_padding, generator)
            if self.flip:
                images = random_flip(images, generator)
        for index in range(len(self)):
            batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
            x = images[batch].to(dtype=torch.float32, memory_format=self.memory_format)
            yield x.mul_(self.scale).add_(self.shift), labels[batch]
