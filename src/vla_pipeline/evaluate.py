"""Offline evaluation: run a checkpoint the way it runs on the robot (its own saved processors,
LeRobot's chunked inference, a fixed noise seed) on held-out episodes and compare the predicted
action chunks with the demonstrations, beside a trivial hold-position baseline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_STATE
from tqdm import tqdm

from vla_pipeline.checkpoint import CONTRACT_FILE, load_checkpoint
from vla_pipeline.contract import load_contract
from vla_pipeline.data import compute_dataset_fingerprint, make_dataset
from vla_pipeline.errors import CheckpointError
from vla_pipeline.norms import compute_split_hash, load_split
from vla_pipeline.params import at_least, param


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: Path
    dataset_root: Path
    norms_dir: Path
    out_dir: Path
    stride: int = 3
    batch_size: int = 16
    noise_seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        at_least(self.stride, 1, "evaluate.stride")
        at_least(self.batch_size, 1, "evaluate.batch_size")

    @classmethod
    def from_params(cls, p: dict, checkpoint: Path, **overrides) -> EvaluateConfig:
        values = dict(
            checkpoint=Path(checkpoint),
            dataset_root=param(p, "dataset.root", Path),
            norms_dir=param(p, "norms.out_dir", Path),
            out_dir=param(p, "evaluate.out_dir", Path),
            stride=param(p, "evaluate.stride", int),
            batch_size=param(p, "evaluate.batch_size", int),
            noise_seed=param(p, "evaluate.noise_seed", int),
            device=param(p, "evaluate.device", str),
        )
        values.update(overrides)
        return cls(**values)


def compute_masked_mse(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Mean squared error over the valid (not padded) steps of (N, chunk, dim) arrays."""
    if not valid.any():
        raise ValueError("no valid (unpadded) steps to evaluate")
    return float(((pred - target) ** 2)[valid].mean())


def compute_normalized(x: np.ndarray, stats: dict, mode: str) -> np.ndarray:
    """Map actions into the policy's training space with the frozen stats (LeRobot's formulas)."""
    if mode == "MEAN_STD":
        return (x - np.asarray(stats["mean"])) / (np.asarray(stats["std"]) + 1e-8)
    q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    return 2.0 * (x - q01) / np.maximum(q99 - q01, 1e-8) - 1.0


def check_inputs(ckpt, dataset_root: Path, split_hash: str) -> None:
    """The held-out episodes and the data must be the ones the checkpoint was trained against."""
    if ckpt.norm_stats["split_hash"] != split_hash:
        raise CheckpointError(
            f"the split in evaluate's norms dir differs from the one {ckpt.directory} was trained with; "
            f"evaluating on it could score training episodes. Use the norms dir of that run"
        )
    if ckpt.norm_stats["dataset_fingerprint"] != compute_dataset_fingerprint(dataset_root):
        raise CheckpointError(f"{dataset_root} is not the dataset version {ckpt.directory} was trained on")


@torch.no_grad()
def predict_chunks(ckpt, dataset, indices: list[int], batch_size: int, noise_seed: int) -> dict[str, np.ndarray]:
    """Predicted chunks, ground truth, padding masks and the state at every evaluated frame."""
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    torch.manual_seed(noise_seed)
    out = {"pred": [], "target": [], "pad": [], "state": []}
    for batch in tqdm(loader, desc="evaluate", unit="batch"):
        obs = {k: v for k, v in batch.items() if k != ACTION}
        chunk = ckpt.policy.predict_action_chunk(ckpt.preprocessor(obs))
        out["pred"].append(ckpt.postprocessor(chunk).cpu().numpy())
        out["target"].append(batch[ACTION].numpy())
        out["pad"].append(batch[f"{ACTION}_is_pad"].numpy())
        out["state"].append(batch[OBS_STATE].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def compute_metrics(arrays: dict[str, np.ndarray], action_stats: dict, mode: str = "QUANTILES") -> dict[str, float]:
    pred, target, state = arrays["pred"].astype(np.float64), arrays["target"].astype(np.float64), arrays["state"]
    valid = ~arrays["pad"].astype(bool)
    hold = np.broadcast_to(state[:, None, :], target.shape).astype(np.float64)
    norm = lambda x: compute_normalized(x, action_stats, mode)  # noqa: E731
    return {
        "action_mse": compute_masked_mse(pred, target, valid),
        "action_mse_normalized": compute_masked_mse(norm(pred), norm(target), valid),
        "baseline_hold_mse": compute_masked_mse(hold, target, valid),
        "baseline_hold_mse_normalized": compute_masked_mse(norm(hold), norm(target), valid),
        "n_frames": int(len(pred)),
        "n_valid_steps": int(valid.sum()),
    }


def evaluate(cfg: EvaluateConfig) -> dict[str, float]:
    """Evaluate one checkpoint on the validation split; writes ``metrics.json`` to ``out_dir``."""
    ckpt = load_checkpoint(cfg.checkpoint, device=cfg.device)
    split = load_split(cfg.norms_dir)
    check_inputs(ckpt, cfg.dataset_root, compute_split_hash(split))
    contract = load_contract(ckpt.directory / CONTRACT_FILE)
    config = ckpt.policy.config
    dataset = make_dataset(cfg.dataset_root, contract, split["val"], config.chunk_size)
    indices = list(range(0, len(dataset), cfg.stride))
    arrays = predict_chunks(ckpt, dataset, indices, cfg.batch_size, cfg.noise_seed)
    mode = config.normalization_mapping["ACTION"].value
    metrics = compute_metrics(arrays, ckpt.norm_stats["features"][ACTION], mode)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
