"""The one dataset factory of train and evaluate: LeRobot decoding the videos, or the same samples
from the frame cache."""

from __future__ import annotations

from pathlib import Path

from vla_pipeline.data.cached import FrameCacheSource
from vla_pipeline.data.contract import Contract
from vla_pipeline.data.frame_cache import LoadedFrameCache
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.data.samples import ArmOnlyDataset
from vla_pipeline.errors import TrainInputError


def make_episode_dataset(root: Path, contract: Contract, episodes: list[int], chunk_size: int,
                          cache: LoadedFrameCache | None, *, augment=None, augment_seed: int = 0) -> ArmOnlyDataset:
    """``data.make_dataset`` (LeRobot decoding the videos), or the same samples with images from
    ``cache`` and vectors straight from the parquet files, indexed as LeRobot indexes them."""
    if cache is None:
        return make_dataset(root, contract, episodes, chunk_size, augment, augment_seed)
    skipped = sorted(set(episodes) & set(cache.manifest.get("excluded_episodes", [])))
    if skipped:
        raise TrainInputError(f"episodes {skipped} were excluded when the frame cache in {cache.directory} was "
                              f"built; rebuild it with `dvc repro frame_cache` after changing dataset.exclude_episodes")
    return ArmOnlyDataset(FrameCacheSource(cache, root, contract, chunk_size), contract, episodes, augment,
                          augment_seed)
