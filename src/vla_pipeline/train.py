"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

``train()`` orchestrates: verify inputs, build dataset / policy / processors / optimizer, then
loop ``train_step()`` and let the checkpoint policy decide when to save.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vla_pipeline.checkpoint import save_checkpoint, write_last
from vla_pipeline.contract import compute_contract_hash, load_contract
from vla_pipeline.data import camera_shapes, compute_dataset_fingerprint, make_dataset
from vla_pipeline.model import make_pi05_policy
from vla_pipeline.norms import load_norm_stats, make_processor_stats
from vla_pipeline.policy import PolicyConfig, make_pi05_config, make_processors, resolve_tokenizer
from vla_pipeline.tracking import TrackingConfig, make_tracker


class TrainInputError(RuntimeError):
    """An input of the train stage is missing or does not match the others."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf: training stops instead of failing silently."""


@dataclass(frozen=True)
class TrainConfig:
    dataset_root: Path
    contract_path: Path
    norms_dir: Path
    validation_report: Path
    out_dir: Path
    live_dir: Path
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 300
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 20
    decay_steps: int = 300
    decay_lr: float = 3e-5
    weight_decay: float = 0.01
    grad_clip_norm: float = 1.0
    num_workers: int = 1
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    device: str = "cpu"
    wandb_project: str = "vla-pipeline"
    wandb_mode: str = "offline"

    def resolved(self) -> dict:
        """Every value this run uses, JSON-ready (logged to trackers and saved with checkpoints)."""
        d = asdict(self)
        d["policy"]["dims"] = self.policy.dims.to_dict() if self.policy.dims else None
        return json.loads(json.dumps(d, default=str))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_inputs(cfg: TrainConfig) -> tuple[dict, dict]:
    """Refuse to start on a failed validation or stats that belong to another dataset/contract."""
    report_path = Path(cfg.validation_report)
    if not report_path.is_file() or not json.loads(report_path.read_text()).get("ok"):
        raise TrainInputError(f"validation report {report_path} missing or not ok; run `dvc repro validate`")
    stats, split = load_norm_stats(cfg.norms_dir)
    if stats["dataset_fingerprint"] != compute_dataset_fingerprint(cfg.dataset_root):
        raise TrainInputError(
            f"frozen stats in {cfg.norms_dir} were computed on another version of {cfg.dataset_root}; "
            f"run `dvc repro norms`"
        )
    if stats["contract_hash"] != compute_contract_hash(cfg.contract_path):
        raise TrainInputError(f"frozen stats were computed with another contract than {cfg.contract_path}; "
                              f"run `dvc repro norms`")
    return stats, split


def make_optimizer_and_scheduler(policy, pi05_config, steps: int):
    """LeRobot's Pi0.5 presets (AdamW, cosine decay with warmup) with our params folded in."""
    optimizer = pi05_config.get_optimizer_preset().build(policy.get_optim_params())
    scheduler = pi05_config.get_scheduler_preset().build(optimizer, steps)
    return optimizer, scheduler


def train_step(policy, preprocessor, batch: dict, optimizer, scheduler, grad_clip_norm: float) -> dict:
    policy.train()
    loss, _ = policy.forward(preprocessor(batch))
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"loss is {loss.item()}; lower train.lr or check the data")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr}


def make_loader(dataset, cfg: TrainConfig):
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=generator,
        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
    )
    return itertools.chain.from_iterable(itertools.repeat(loader))


def train(cfg: TrainConfig) -> Path:
    """Run the whole fine-tuning; returns the final checkpoint directory."""
    stats_doc, split = check_inputs(cfg)
    set_seed(cfg.seed)
    contract = load_contract(cfg.contract_path)
    dataset = make_dataset(cfg.dataset_root, contract, split["train"], cfg.policy.chunk_size)
    pi05_config = make_pi05_config(
        cfg.policy, len(contract.joints), camera_shapes(cfg.dataset_root, contract), cfg.device,
        optimizer_lr=cfg.lr, optimizer_weight_decay=cfg.weight_decay, optimizer_grad_clip_norm=cfg.grad_clip_norm,
        scheduler_warmup_steps=cfg.warmup_steps, scheduler_decay_steps=cfg.decay_steps,
        scheduler_decay_lr=cfg.decay_lr,
    )
    policy = make_pi05_policy(pi05_config, cfg.policy.dims)
    out = Path(cfg.out_dir)
    tokenizer = resolve_tokenizer(cfg.policy, out / "tokenizer")
    pre, post = make_processors(pi05_config, make_processor_stats(stats_doc), tokenizer)
    optimizer, scheduler = make_optimizer_and_scheduler(policy, pi05_config, cfg.steps)
    tracker = make_tracker(TrackingConfig(live_dir=cfg.live_dir, wandb_dir=out, wandb_project=cfg.wandb_project,
                                          wandb_mode=cfg.wandb_mode))
    tracker.log_config(cfg.resolved())
    batches = make_loader(dataset, cfg)
    checkpoint = None
    for step in tqdm(range(1, cfg.steps + 1), desc="train", unit="step"):
        metrics = train_step(policy, pre, next(batches), optimizer, scheduler, cfg.grad_clip_norm)
        if step % cfg.log_every == 0 or step == cfg.steps:
            tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
        if step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            checkpoint = save_checkpoint(
                out / "checkpoints" / f"{step:06d}", policy, pre, post, dims=cfg.policy.dims, tokenizer=tokenizer,
                contract_path=cfg.contract_path, norm_stats=stats_doc, train_config=cfg.resolved(),
            )
            write_last(out, checkpoint)
    tracker.close()
    return checkpoint
