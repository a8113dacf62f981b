"""Dataset access: raw frame tables (for validation and norms), the dataset fingerprint, and
LeRobot's ``LeRobotDataset`` wrapped so every sample carries the contract's arm-only vectors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from vla_pipeline.contract import Contract
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


def compute_dataset_fingerprint(root: Path) -> str:
    """sha256 over the data, meta and video files (path and content) that define the frames."""
    root = Path(root)
    digest = hashlib.sha256()
    files = [*root.glob("data/**/*.parquet"), *root.glob("meta/**/*"), *root.glob("videos/**/*")]
    for path in sorted(files):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
    """LeRobot's dataset over ``episodes`` with an action chunk of ``chunk_size`` per frame.

    LeRobot's timestamp tolerance is the contract's, the one validation checked against, so a
    dataset that passed validation never fails mid-training on a frame lookup.
    """
    info = load_info(root)
    fps = info["fps"]
    dataset = LeRobotDataset(
        repo_id=f"local/{Path(root).name}",
        root=root,
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
