"""The evaluation protocol: which episodes (the checkpoint's own held-out split, checked against the
dataset), which stride, and the ``protocol.json`` that says how the numbers were made."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from vla_pipeline.checkpoint.io import (
    LoadedCheckpoint,
    compute_checkpoint_id,
    read_checkpoint_state,
)
from vla_pipeline.errors import CheckpointError, ConfigError
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.norms import load_split
from vla_pipeline.provenance import EVAL_ENTRY, compute_code_identity, find_data_mismatch

RANK_KEY = "action_mse_normalized"  # what best/median/worst episode means


def check_inputs(ckpt: LoadedCheckpoint, dataset_root: Path, split: dict) -> None:
    """The held-out episodes and the data must be the ones the checkpoint was trained against."""
    mismatch = find_data_mismatch(ckpt.norm_stats, dataset_root, split=split)
    if mismatch == "split":
        raise CheckpointError(
            f"the episode split given for evaluation differs from the one {ckpt.directory} was trained with; "
            f"evaluating on it could score training episodes. Leave out --norms (the checkpoint's own split), "
            f"or pass the norms dir of that run"
        )
    if mismatch == "dataset":
        raise CheckpointError(f"{dataset_root} is not the dataset version {ckpt.directory} was trained on; "
                              f"evaluate with the dataset the checkpoint's norm_stats.json names")
    if not split["val"]:
        raise ConfigError(f"{ckpt.directory} was trained without validation episodes: nothing is held out "
                          f"to evaluate on (set norms.val_fraction or norms.val_episodes and retrain)")


def resolve_split(ckpt: LoadedCheckpoint, norms_dir: Path | None) -> dict:
    if norms_dir is not None:
        return load_split(norms_dir)
    if ckpt.split is None:
        raise CheckpointError(f"{ckpt.directory} has no split.json (saved before checkpoints carried their "
                              f"split); pass the norms dir it was trained with (--norms DIR)")
    return ckpt.split


def resolve_stride(stride: int | None, config) -> int:
    """The replanning interval; at most a chunk, so every frame has an executed action."""
    stride = config.n_action_steps if stride is None else stride
    if stride > config.chunk_size:
        raise ConfigError(f"evaluate.stride = {stride} exceeds the checkpoint's chunk_size {config.chunk_size}: "
                          f"frames between chunks would have no action. Use a stride <= {config.chunk_size}")
    return stride


def make_protocol(cfg: EvaluateConfig, ckpt: LoadedCheckpoint, stride: int, split: dict) -> dict:
    """What was evaluated and how: enough to reproduce the numbers."""
    config = ckpt.policy.config
    return {
        "checkpoint": str(ckpt.directory), "step": read_checkpoint_state(ckpt).get("step"),
        "dataset_root": str(cfg.dataset_root),
        "dataset_fingerprint": ckpt.norm_stats["dataset_fingerprint"], "val_episodes": split["val"],
        "stride": stride, "chunk_size": config.chunk_size, "n_action_steps": config.n_action_steps,
        "num_inference_steps": config.num_inference_steps, "noise_seed": cfg.noise_seed,
        "saturation_margin": cfg.saturation_margin, "rank_episodes_by": RANK_KEY,
        "checkpoint_id": compute_checkpoint_id(ckpt), "code_sha256": compute_code_identity(EVAL_ENTRY),
        "config": config_doc(cfg),
    }


def config_doc(cfg: EvaluateConfig) -> dict:
    """The config, less this machine's paths outside the repo (the store, W&B files)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k not in MACHINE_PATHS}


MACHINE_PATHS = {"store", "wandb_dir"}


# EvaluateConfig fields that change where results go or how fast they come, never what they are
NOT_PROTOCOL = {"out_dir", "num_workers", "wandb_mode", "wandb_project", "wandb_dir", "store"}
