"""Samples from the decoded-frame cache: the items LeRobot's ``LeRobotDataset`` would give, with
images read from the cache's memory maps and vectors straight from the parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.features import vector_dims
from vla_pipeline.data.frame_cache import LoadedFrameCache, camera_file
from vla_pipeline.data.metadata import load_metadata
from vla_pipeline.data.tables import load_rows_by_index, load_task_indices


class FrameCacheSource:
    """Items with the keys LeRobot's ``LeRobotDataset`` gives (what ``ArmOnlyDataset`` reads), built
    from the frame cache and the data parquet files: the action chunk is indexed exactly as LeRobot
    indexes it (clamped to the episode, ``*_is_pad`` past its end), images come from the cache."""

    def __init__(self, cache: LoadedFrameCache, root: Path, contract: Contract, chunk_size: int):
        self.meta = load_metadata(root)
        self.cache_dir, self.contract = cache.directory, contract
        dims = vector_dims(self.meta.info, (contract.action_key, contract.state_key))
        rows = load_rows_by_index(root, dims)
        self.vectors = {k: rows[k].astype(np.float32) for k in dims}
        self.episode, self.frame, self.task_index = (rows[k].astype(np.int64)
                                                     for k in ("episode_index", "frame_index", "task_index"))
        self.tasks = load_task_indices(root)
        ends = np.zeros(self.meta.total_episodes, dtype=np.int64)
        for ep in range(self.meta.total_episodes):
            ends[ep] = self.meta.episodes[ep]["dataset_to_index"]
        self.episode_end = ends
        self.offsets = np.arange(chunk_size)
        self._maps: dict[str, np.ndarray] | None = None  # opened lazily, once per (worker) process

    def _images(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = {k: np.load(camera_file(self.cache_dir, k), mmap_mode="r")
                          for k in self.contract.cameras.values()}
        return self._maps

    def __getitem__(self, idx: int) -> dict:
        c, ep = self.contract, self.episode[idx]
        query = idx + self.offsets
        end = self.episode_end[ep]
        item = {
            c.action_key: torch.from_numpy(self.vectors[c.action_key][np.minimum(query, end - 1)]),
            f"{c.action_key}_is_pad": torch.from_numpy(query >= end),
            c.state_key: torch.from_numpy(self.vectors[c.state_key][idx]),
            "episode_index": torch.tensor(ep), "frame_index": torch.tensor(self.frame[idx]),
            "task": self.tasks[int(self.task_index[idx])],
        }
        for key, mm in self._images().items():
            item[key] = torch.from_numpy(np.array(mm[idx])).type(torch.float32) / 255
        return item
