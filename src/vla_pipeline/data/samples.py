"""The samples a run trains and evaluates on: whatever source gives LeRobot-shaped items, narrowed to
the contract's arm-only action and state and its cameras, with the seeded augmentation."""

from __future__ import annotations

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from vla_pipeline.data.augment import apply_seeded, compute_sample_seed
from vla_pipeline.data.contract import Contract
from vla_pipeline.data.tables import feature_names


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
