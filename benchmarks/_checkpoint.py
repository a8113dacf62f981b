"""Shared by the evaluation benchmarks: a real checkpoint of the pipeline on a dataset, made as the
stages make it (validate, frozen stats, 2 training steps from random init; no hub)."""

from __future__ import annotations

from pathlib import Path

import yaml

from vla_pipeline.norms import NormsConfig, save_norm_stats
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.trainer import train
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "lekiwi_arm.yaml"


def make_checkpoint(root: Path, work: Path, val_fraction: float, size: str = "tiny", device: str = "cpu") -> Path:
    """Validate ``root``, freeze its stats with ``val_fraction`` of the episodes held out, train 2 steps;
    returns the last checkpoint's pretrained_model dir."""
    validate_dataset(ValidateConfig(root, CONTRACT, work / "report.json"))
    save_norm_stats(NormsConfig(root, CONTRACT, work / "norms", val_fraction=val_fraction))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["policy"]["size"] = size
    params["train"]["device"] = device
    cfg = TrainConfig.from_params(
        params, dataset_root=root, contract_path=CONTRACT, norms_dir=work / "norms",
        validation_report=work / "report.json", out_dir=work / "train", live_dir=work / "live",
        wandb_dir=work / "wandb", steps=2, batch_size=2, warmup_steps=1, decay_steps=2, num_workers=0,
        wandb_mode="disabled", frame_cache_dir=None,
    )
    return train(cfg)
