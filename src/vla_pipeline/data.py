"""Dataset access: raw frame tables (for validation and norms), the dataset fingerprint, LeRobot's
metadata of a local root (never the hub), and LeRobot's ``LeRobotDataset`` reading only what a run
uses, wrapped so every sample carries the contract's arm-only vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.datasets.utils import hf_transform_to_torch
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from vla_pipeline.contract import Contract
from vla_pipeline.errors import TrainInputError
from vla_pipeline.frames import load_tasks_table
from vla_pipeline.transforms import apply_seeded, compute_sample_seed

VIDEO_BACKEND = "pyav"  # torchcodec needs system FFmpeg libraries these machines lack


def load_info(root: Path) -> dict:
    return json.loads((Path(root) / "meta" / "info.json").read_text())


def feature_names(info: dict, key: str) -> list[str]:
    """The per-dimension names of a vector feature (LeRobot stores a list, or a dict of lists)."""
    names = info["features"][key].get("names")
    if isinstance(names, dict):
        names = [n for group in names.values() for n in group]
    return list(names or [])


def load_frames(root: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of the dataset's data parquet files, ordered by global ``index``."""
    files = sorted((Path(root) / "data").glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {Path(root) / 'data'}")
    frames = pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    return frames.sort_values("index", kind="stable").reset_index(drop=True) if "index" in frames else frames


def column_array(frames: pd.DataFrame, key: str) -> np.ndarray:
    """A vector column as a float64 ``(n_frames, dim)`` array."""
    return np.stack([np.asarray(v, dtype=np.float64) for v in frames[key].to_numpy()])


META_FILES = ("meta/info.json", "meta/tasks.parquet", "meta/episodes")


def require_local_root(root: Path) -> Path:
    """``root`` if it holds the meta files LeRobot reads (else LeRobot would go to the hub for them)."""
    root = Path(root)
    missing = [f for f in META_FILES if not (root / f).exists()]
    if missing:
        raise TrainInputError(f"{root} is not a complete LeRobotDataset v3.0 root: {missing} missing; check "
                              f"dataset.root, then run `vla validate {root} --contract ...`")
    return root


def load_metadata(root: Path) -> LeRobotDatasetMetadata:
    """LeRobot's metadata of the local dataset at ``root``. LeRobot falls back to the hub when a file is
    missing (and then fails offline, telling the user to unset ``HF_HUB_OFFLINE``); a local root that
    lacks its meta files is refused here instead, with the files named. Task strings stored in a bare
    ``__index_level_0__`` column are read as the task index (``frames.load_tasks_table``)."""
    root = require_local_root(root)
    meta = LeRobotDatasetMetadata(repo_id=f"local/{root.name}", root=root)
    meta.tasks = load_tasks_table(root)
    return meta


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


class ArmOnlyDataset(torch.utils.data.Dataset):
    """The frames of some episodes of a ``LeRobotDataset`` (or of the decoded-frame cache, which
    gives the same items: ``frame_cache.FrameCacheSource``), carrying the contract's arm joints
    under LeRobot's keys.

    ``action`` (chunk, n_joints) and ``observation.state`` (n_joints,) are selected by joint
    name; cameras are renamed to ``observation.images.<name>``; ``action_is_pad`` and
    ``task`` pass through. Episodes are selected here, by absolute frame index, rather than with
    ``LeRobotDataset(episodes=...)``: LeRobot 0.4.2 compares the *relative* index of a filtered
    dataset with absolute episode bounds when it builds action chunks, so every chunk of a
    filtered dataset comes back fully padded (all ``action_is_pad`` True, the action repeated).

    ``augment`` (training only) transforms the camera images, seeded per sample from
    (``augment_seed``, epoch, frame) so batches are reproducible; call :meth:`set_epoch`
    before each epoch.
    """

    def __init__(
        self, dataset: LeRobotDataset, contract: Contract, episodes: list[int], augment=None, augment_seed: int = 0
    ):
        self.dataset = dataset
        self.contract = contract
        self.augment = augment
        self.augment_seed = augment_seed
        self.epoch = 0
        self.episodes = sorted(episodes)
        bounds = dataset.meta.episodes
        self.frames = [
            i
            for ep in self.episodes
            for i in range(bounds[ep]["dataset_from_index"], bounds[ep]["dataset_to_index"])
        ]
        info = dataset.meta.info
        self.action_idx = contract.select_indices(feature_names(info, contract.action_key), contract.action_key)
        self.state_idx = contract.select_indices(feature_names(info, contract.state_key), contract.state_key)

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, idx: int) -> dict:
        item = self.dataset[self.frames[idx]]
        c = self.contract
        out = {
            ACTION: item[c.action_key][..., self.action_idx],
            OBS_STATE: item[c.state_key][..., self.state_idx],
            f"{ACTION}_is_pad": item[f"{c.action_key}_is_pad"],
            "task": item["task"],
            "episode_index": item["episode_index"],
            "frame_index": item["frame_index"],
        }
        images = [item[key] for key in c.cameras.values()]
        if self.augment is not None:
            seed = compute_sample_seed(self.augment_seed, self.epoch, self.frames[idx])
            images = apply_seeded(self.augment, images, seed)
        for name, image in zip(c.cameras, images, strict=True):
            out[f"{OBS_IMAGES}.{name}"] = image
        return out


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
        [key for key in contract.cameras.values() if info["features"][key]["dtype"] == "video"],
        delta_timestamps={contract.action_key: [i / fps for i in range(chunk_size)]},
        tolerance_s=contract.timestamp_tolerance_s,
        video_backend=VIDEO_BACKEND,
    )
    return ArmOnlyDataset(dataset, contract, episodes, augment, augment_seed)


def camera_shapes(root: Path, contract: Contract) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of each contract camera, as the policy's input features need them."""
    info = load_info(root)
    shapes = {}
    for name, key in contract.cameras.items():
        h, w, c = info["features"][key]["shape"]
        shapes[f"{OBS_IMAGES}.{name}"] = (c, h, w)
    return shapes
