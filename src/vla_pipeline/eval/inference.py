"""Batched chunked inference over held-out episodes, as the robot runs the policy: the checkpoint's
own saved processors, LeRobot's ``predict_action_chunk`` (what ``select_action`` calls when its
queue is empty), one chunk every ``stride`` frames of each episode.

The flow-matching noise of a frame is drawn from a generator seeded by (noise seed, episode,
frame), so a frame's prediction does not depend on the batch it lands in or the order of the
episodes (beyond the float rounding of batched matmuls, which BLAS may compute with other kernels
for another batch size): re-running gives identical numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_STATE
from tqdm import tqdm

from vla_pipeline.cores import rebalance
from vla_pipeline.data.augment import compute_sample_seed
from vla_pipeline.data.samples import ArmOnlyDataset
from vla_pipeline.eval.metrics import Predictions


def make_query_positions(dataset: ArmOnlyDataset, stride: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Dataset positions of frames 0, stride, 2*stride, ... of every episode, with their episode
    and frame index (read from the episode table: no video is decoded)."""
    bounds = dataset.dataset.meta.episodes
    positions, episodes, frames = [], [], []
    start = 0
    for ep in dataset.episodes:
        length = bounds[ep]["dataset_to_index"] - bounds[ep]["dataset_from_index"]
        for f in range(0, length, stride):
            positions.append(start + f)
            episodes.append(ep)
            frames.append(f)
        start += length
    return positions, np.asarray(episodes), np.asarray(frames)


def make_noise(noise_seed: int, episodes: torch.Tensor, frames: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(B, chunk, max_action_dim) standard normal noise, one seeded draw per (episode, frame)."""
    out = torch.empty((len(episodes), *shape))
    for i, (ep, f) in enumerate(zip(episodes.tolist(), frames.tolist(), strict=True)):
        g = torch.Generator().manual_seed(compute_sample_seed(noise_seed, ep, f))
        out[i] = torch.randn(shape, generator=g)
    return out


@torch.no_grad()
def predict_episodes(ckpt, dataset: ArmOnlyDataset, stride: int, batch_size: int, noise_seed: int,
                     num_workers: int = 0) -> Predictions:
    """Predicted chunks (contract units, through the checkpoint's postprocessor), ground truth,
    padding and state at frames 0, stride, 2*stride, ... of each episode, batched across frames
    and episodes."""
    positions, _, _ = make_query_positions(dataset, stride)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, positions), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    config = ckpt.policy.config
    device = next(ckpt.policy.parameters()).device
    out: dict[str, list] = {k: [] for k in ("pred", "target", "pad", "state", "episode", "frame", "task")}
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        rebalance()  # this process's share of the cores, as other runs start and end (cores.py; throttled)
        noise = make_noise(noise_seed, batch["episode_index"], batch["frame_index"],
                           (config.chunk_size, config.max_action_dim))
        obs = {k: v for k, v in batch.items() if k != ACTION}
        chunk = ckpt.policy.predict_action_chunk(ckpt.preprocessor(obs), noise=noise.to(device))
        out["pred"].append(ckpt.postprocessor(chunk).float().cpu().numpy())
        out["target"].append(batch[ACTION].numpy())
        out["pad"].append(batch[f"{ACTION}_is_pad"].numpy())
        out["state"].append(batch[OBS_STATE].numpy())
        out["episode"].append(batch["episode_index"].numpy())
        out["frame"].append(batch["frame_index"].numpy())
        out["task"].extend(batch["task"])
    arrays = {k: np.concatenate(v) for k, v in out.items() if k != "task"}
    return Predictions(
        pred=arrays["pred"].astype(np.float64), target=arrays["target"].astype(np.float64),
        pad=arrays["pad"].astype(bool), state=arrays["state"].astype(np.float64),
        episode=arrays["episode"].astype(int), frame=arrays["frame"].astype(int), task=list(out["task"]),
    )
