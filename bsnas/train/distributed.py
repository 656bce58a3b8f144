"""Data-parallel training under `torchrun` (DistributedDataParallel): one process per device (or CPU slot).

`bsnas train` and `bsnas retrain` open a session when torchrun started them (WORLD_SIZE > 1): gloo on the
CPU, NCCL on CUDA. Every rank draws the same seeded batches and trains on its own slice of each batch, so an
epoch sees every image once and the gradient (averaged by DDP) is that of the whole batch; only BatchNorm sees
its own slice's statistics (DDP keeps rank 0's running statistics on every rank). Losses and accuracies are
summed over the ranks; rank 0 re-estimates BatchNorm, validates, tests and writes the run directory, the others
wait for it. Outside torchrun nothing changes: `current()` is a single process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Session", "current", "session"]

TIMEOUT = datetime.timedelta(minutes=10)  # a rank that does not answer within it fails the run


@dataclass(frozen=True)
class Session:
    """This process's place in a data-parallel run (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: DDP around `model` in a session, `model` itself otherwise."""
        if not self.active:
            return model
        ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a batch."""
        return torch.tensor_split(batch, self.world)[self.rank] if self.active else batch

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the ranks (a copy)."""
        value = value.clone()
        if self.active:
            torch.distributed.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


_CURRENT = Session()


def current() -> Session:
    """The session this process runs in."""
    return _CURRENT


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[Session]:
    """Join the process group torchrun set up (WORLD_SIZE > 1), for the length of the block; a single process
    outside torchrun."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield _CURRENT
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    _CURRENT = Session(rank, world, local_rank)
    try:
        yield _CURRENT
    finally:
        torch.distributed.destroy_process_group()
        _CURRENT = Session()
