"""The batch order is a pure function of (seed, epoch, position): processes take disjoint shares
of each global batch, and starting at batch b gives exactly the tail of a full epoch."""

from __future__ import annotations

from vla_pipeline.data.sampler import EpochBatchSampler, compute_batches_per_epoch


def test_processes_take_disjoint_shares_of_the_same_global_batches() -> None:
    single = list(EpochBatchSampler(50, 8, seed=3, epoch=1))
    ranks = [list(EpochBatchSampler(50, 4, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == compute_batches_per_epoch(50, 8) == 6
    for b, batch in enumerate(single):
        assert ranks[0][b] + ranks[1][b] == batch
        assert not set(ranks[0][b]) & set(ranks[1][b])


def test_start_position_gives_the_tail_of_the_epoch_and_epochs_differ() -> None:
    full = list(EpochBatchSampler(40, 4, seed=0, epoch=2))
    assert list(EpochBatchSampler(40, 4, seed=0, epoch=2, start=7)) == full[7:]
    assert list(EpochBatchSampler(40, 4, seed=0, epoch=3)) != full
    assert list(EpochBatchSampler(40, 4, seed=1, epoch=2)) != full
    assert sorted(i for batch in full for i in batch) == list(range(40))
