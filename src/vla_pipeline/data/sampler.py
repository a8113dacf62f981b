"""Training batches whose order is a pure function of (seed, epoch, position): a resumed run
continues at the exact batch where the checkpoint was taken, without replaying the data, and
every process of a multi-GPU run takes its own disjoint share of each global batch."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch


def compute_batches_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Full global batches per epoch (the remainder is dropped, like ``drop_last=True``)."""
    return num_samples // (batch_size * world_size)


def compute_epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of sample indices; depends on nothing but its arguments."""
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(epoch_seed))


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """One epoch's batches for process ``rank``, from global batch ``start`` on. Global batch ``b``
    holds ``order[b*B*W:(b+1)*B*W]``; process ``r`` takes the ``r``-th block of ``B``."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int, *, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.num_samples, self.batch_size, self.seed, self.epoch = num_samples, batch_size, seed, epoch
        self.start, self.rank, self.world_size = start, rank, world_size

    def __len__(self) -> int:
        return compute_batches_per_epoch(self.num_samples, self.batch_size, self.world_size) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        order = compute_epoch_order(self.num_samples, self.seed, self.epoch)
        per_global = self.batch_size * self.world_size
        for b in range(self.start, self.start + len(self)):
            lo = b * per_global + self.rank * self.batch_size
            yield order[lo:lo + self.batch_size].tolist()


def make_loader(dataset, batch_size: int, seed: int, num_workers: int, *, start: int = 0, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False, prefetch_factor: int = 2) -> Iterator[dict]:
    """Endless batches from global batch ``start`` (= optimizer steps already taken). Each epoch
    tells the dataset its number (augmentation seeds) before its workers are created. ``pin_memory``
    (on a GPU) and ``prefetch_factor`` (batches each worker prepares ahead) change speed, never values."""
    per_epoch = compute_batches_per_epoch(len(dataset), batch_size, world_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochBatchSampler(len(dataset), batch_size, seed, epoch, start=offset, rank=rank,
                                    world_size=world_size)
        # the generator keeps worker seeding off the global RNG (the model's noise stream)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                             generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory,
                                             prefetch_factor=prefetch_factor if num_workers else None)
        yield from loader
        epoch, offset = epoch + 1, 0


def resolve_num_workers(requested: int | str, cached: bool) -> int:
    """Loader workers for ``auto``: none when frames come from the frame cache (a sample costs well
    under a millisecond; moving batches between processes would cost more), else one per core but one,
    at most 8 (video decoding is the work)."""
    if requested != "auto":
        return int(requested)
    return 0 if cached else max(1, min(8, (os.cpu_count() or 2) - 1))
