"""LeRobot's ``LeRobotDataset`` reading only what a run uses (the contract's keys and episodes,
videos decoded with PyAV), wrapped so every sample carries the contract's arm-only vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets.utils import hf_transform_to_torch

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.features import video_keys
from vla_pipeline.data.metadata import VIDEO_BACKEND, require_local_root
from vla_pipeline.data.samples import ArmOnlyDataset
from vla_pipeline.data.tables import load_info, load_tasks_table
from vla_pipeline.errors import TrainInputError


def _frame_timestamps(hf_dataset, fps: int) -> np.ndarray:
    """``frame_index / fps`` per row, as float32 (what LeRobot's writer stores as ``timestamp``)."""
    return (np.asarray(hf_dataset.with_format("numpy")["frame_index"], dtype=np.float64) / fps).astype(np.float32)


class RunDataset(LeRobotDataset):
    """LeRobot's ``LeRobotDataset`` over a local root that opens only what a run uses.

    LeRobot 0.4.2 checks the video files of *every* episode and camera of the dataset when it is
    built, then falls back to a hub download (failing offline with advice to unset
    ``HF_HUB_OFFLINE``), and decodes every video feature at every item. Here only ``episodes`` and
    the ``video_keys`` the contract maps are checked and decoded; a missing file is a
    :class:`TrainInputError` naming it; the hub is never asked.

    Video frames are looked up at ``frame_index / fps`` (LeRobot's writer encodes frame i of an
    episode at i / fps and stores that as ``timestamp``), so a recording whose ``timestamp``
    column is a wall clock (validation warns about it) still reads frame i for row i.
    """

    def __init__(self, root: Path, episodes: list[int], video_keys: list[str], **kwargs):
        self._run_episodes, self._run_video_keys = sorted(episodes), list(video_keys)
        root = require_local_root(root)  # before LeRobot can reach for the hub
        super().__init__(repo_id=f"local/{root.name}", root=root, **kwargs)
        self.meta.tasks = load_tasks_table(root)
        unused = [k for k in self.meta.video_keys if k not in self._run_video_keys]
        self.meta.info["features"] = {k: v for k, v in self.meta.features.items() if k not in unused}

    def load_hf_dataset(self):
        try:
            hf_dataset = super().load_hf_dataset()
        except (FileNotFoundError, NotADirectoryError) as e:
            raise TrainInputError(f"cannot read the data files of {self.root} ({e}); run `vla validate`") from e
        hf_dataset = hf_dataset.remove_columns("timestamp").add_column(
            "timestamp", _frame_timestamps(hf_dataset, self.meta.fps), new_fingerprint=None,
            feature=hf_dataset.features["timestamp"])
        hf_dataset.set_transform(hf_transform_to_torch)
        return hf_dataset

    def _check_cached_episodes_sufficient(self) -> bool:
        available = set(self.hf_dataset.unique("episode_index"))
        absent = [e for e in self._run_episodes if e not in available]
        if absent:
            raise TrainInputError(f"episodes {absent} have no rows in {self.root}/data; run `vla validate`")
        for ep in self._run_episodes:
            for key in self._run_video_keys:
                path = self.root / self.meta.get_video_file_path(ep, key)
                if not path.is_file():
                    raise TrainInputError(
                        f"episode {ep}: video file {path} ({key}) does not exist; restore it, or add the episode "
                        f"to dataset.exclude_episodes and re-run `dvc repro` (validate reports every such file)")
        return True


def make_dataset(
    root: Path, contract: Contract, episodes: list[int], chunk_size: int, augment=None, augment_seed: int = 0
) -> ArmOnlyDataset:
    """LeRobot's dataset over ``episodes`` with an action chunk of ``chunk_size`` per frame, opening only
    those episodes' files of the contract's cameras (:class:`RunDataset`).

    LeRobot's timestamp tolerance is the contract's, the one validation checked against, so a
    dataset that passed validation never fails mid-training on a frame lookup.
    """
    info = load_info(root)
    fps = info["fps"]
    dataset = RunDataset(
        root,
        episodes,
        video_keys(info, contract.cameras.values()),
        delta_timestamps={contract.action_key: [i / fps for i in range(chunk_size)]},
        tolerance_s=contract.timestamp_tolerance_s,
        video_backend=VIDEO_BACKEND,
    )
    return ArmOnlyDataset(dataset, contract, episodes, augment, augment_seed)
