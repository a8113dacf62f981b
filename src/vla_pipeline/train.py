"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

``train()`` orchestrates: verify inputs, build dataset / policy / processors / optimizer, then
loop ``train_step()`` and let the checkpoint policy decide when to save.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK
from tqdm import tqdm

from vla_pipeline.checkpoint import collect_versions, save_checkpoint, write_last
from vla_pipeline.contract import compute_contract_hash, load_contract
from vla_pipeline.data import (
    camera_shapes,
    compute_dataset_fingerprint,
    feature_names,
    load_info,
    make_dataset,
)
from vla_pipeline.errors import ConfigError, ContractError, TrainingDivergedError, TrainInputError
from vla_pipeline.model import make_pi05_policy
from vla_pipeline.norms import STATS_FILE, compute_split_hash, load_norm_stats, make_processor_stats
from vla_pipeline.params import at_least, choice, param
from vla_pipeline.policy import PolicyConfig, make_pi05_config, make_processors, resolve_tokenizer
from vla_pipeline.pretrained import load_pretrained_weights
from vla_pipeline.tracking import TrackingConfig, make_tracker
from vla_pipeline.transforms import AugmentConfig, make_image_transforms
from vla_pipeline.validate import load_report

WANDB_MODES = ("offline", "online", "disabled")
PHASE_KEYS = ("steps", "batch_size", "lr", "warmup_steps", "decay_steps", "decay_lr", "log_every", "save_every")


def resolve_phase(p: dict) -> dict:
    """``train`` with every null phase key filled from ``phases.<train.phase>``: an explicit value wins."""
    train_params = dict(param(p, "train"))
    phases = param(p, "phases")
    phase = choice(param(p, "train.phase", str), tuple(phases), "train.phase")
    for key in PHASE_KEYS:
        if train_params.get(key) is None:
            train_params[key] = param(phases, f"{phase}.{key}")
    return train_params


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run uses; built from params (``from_params``), never hard-coded."""

    dataset_root: Path
    contract_path: Path
    norms_dir: Path
    validation_report: Path
    out_dir: Path
    live_dir: Path
    wandb_dir: Path
    policy: PolicyConfig
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    decay_steps: int
    decay_lr: float
    weight_decay: float
    grad_clip_norm: float
    num_workers: int
    seed: int
    log_every: int
    save_every: int  # 0: only at the end
    device: str
    wandb_project: str
    wandb_mode: str
    augment: AugmentConfig = AugmentConfig()
    phase: str = "smoke"

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every"):
            at_least(getattr(self, key), 1, f"train.{key}")
        for key in ("warmup_steps", "save_every", "num_workers"):
            at_least(getattr(self, key), 0, f"train.{key}")
        if not self.lr > 0:
            raise ConfigError(f"params: 'train.lr' = {self.lr!r}; must be > 0")
        choice(self.wandb_mode, WANDB_MODES, "train.wandb.mode")

    @classmethod
    def from_params(cls, p: dict, **overrides) -> TrainConfig:
        ints = ("steps", "batch_size", "warmup_steps", "decay_steps", "num_workers", "log_every", "save_every")
        floats = ("lr", "decay_lr", "weight_decay", "grad_clip_norm")
        t = {"train": resolve_phase(p)}
        values = dict(
            phase=param(p, "train.phase", str),
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            norms_dir=param(p, "norms.out_dir", Path),
            validation_report=param(p, "validate.report", Path),
            out_dir=param(p, "train.out_dir", Path),
            live_dir=param(p, "train.live_dir", Path),
            wandb_dir=param(p, "train.wandb.dir", Path),
            policy=PolicyConfig.from_params(param(p, "policy")),
            seed=param(p, "base.seed", int),
            device=param(p, "train.device", str),
            wandb_project=param(p, "train.wandb.project", str),
            wandb_mode=param(p, "train.wandb.mode", str),
            augment=AugmentConfig.from_params(param(p, "train.augment")),
            **{k: param(t, f"train.{k}", int) for k in ints},
            **{k: param(t, f"train.{k}", float) for k in floats},
        )
        values.update(overrides)
        return cls(**values)

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
    """Refuse to start on a dataset that does not match the contract, a failed or stale validation,
    or stats that belong to another dataset/contract."""
    contract, info = load_contract(cfg.contract_path), load_info(cfg.dataset_root)
    for key in (contract.action_key, contract.state_key):
        if key not in info["features"]:
            raise ContractError(f"contract '{contract.name}' expects key '{key}', the dataset has "
                                f"{sorted(info['features'])}")
        contract.select_indices(feature_names(info, key), key)  # names the joints that differ
    load_report(cfg.validation_report, cfg.dataset_root)
    stats, split = load_norm_stats(cfg.norms_dir)
    if stats["split_hash"] != compute_split_hash(split):
        raise TrainInputError(f"the episode split in {cfg.norms_dir} is not the one its stats were computed on; "
                              f"run `dvc repro norms`")
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
    batch = preprocessor(batch)
    check_prompt_fits(batch)
    loss, _ = policy.forward(batch)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"loss is {loss.item()}; lower train.lr or check the data")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr}


def check_prompt_fits(batch: dict) -> None:
    """LeRobot's tokenizer step truncates silently; a prompt that fills the window was cut."""
    mask = batch[OBS_LANGUAGE_ATTENTION_MASK]
    if bool(mask[:, -1].any()):
        raise ConfigError(
            f"a prompt (task + discretized state) fills all policy.tokenizer_max_length={mask.shape[1]} "
            f"tokens and may be truncated; raise policy.tokenizer_max_length"
        )


def make_loader(dataset, cfg: TrainConfig) -> Iterator[dict]:
    """Endless shuffled batches; the order comes from ``cfg.seed``, each epoch tells the dataset its
    number (augmentation seeds), and workers are re-created per epoch so they see it."""
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=generator,
        num_workers=cfg.num_workers,
    )
    for epoch in itertools.count():
        dataset.set_epoch(epoch)
        yield from loader


@dataclass
class TrainInputs:
    dataset: object
    pi05_config: object
    preprocessor: object
    postprocessor: object
    tokenizer: str


def make_inputs(cfg: TrainConfig, stats_doc: dict, split: dict[str, list[int]]) -> TrainInputs:
    """The train split as LeRobot samples (augmented), the policy config and its processors."""
    contract = load_contract(cfg.contract_path)
    dataset = make_dataset(cfg.dataset_root, contract, split["train"], cfg.policy.chunk_size,
                           augment=make_image_transforms(cfg.augment), augment_seed=cfg.augment.seed)
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"train split has {len(dataset)} frames, fewer than train.batch_size={cfg.batch_size}")
    pi05_config = make_pi05_config(
        cfg.policy, len(contract.joints), camera_shapes(cfg.dataset_root, contract), cfg.device,
        optimizer_lr=cfg.lr, optimizer_weight_decay=cfg.weight_decay, optimizer_grad_clip_norm=cfg.grad_clip_norm,
        scheduler_warmup_steps=cfg.warmup_steps, scheduler_decay_steps=cfg.decay_steps,
        scheduler_decay_lr=cfg.decay_lr,
    )
    tokenizer = resolve_tokenizer(cfg.policy, Path(cfg.out_dir) / "tokenizer")
    pre, post = make_processors(pi05_config, make_processor_stats(stats_doc), tokenizer)
    return TrainInputs(dataset, pi05_config, pre, post, tokenizer)


def train(cfg: TrainConfig) -> Path:
    """Run the whole fine-tuning; returns the final checkpoint directory."""
    stats_doc, split = check_inputs(cfg)
    set_seed(cfg.seed)
    inputs = make_inputs(cfg, stats_doc, split)
    policy = make_pi05_policy(inputs.pi05_config, cfg.policy.dims)
    if cfg.policy.pretrained:
        counts = load_pretrained_weights(policy, cfg.policy.pretrained)
        print(f"pretrained weights from {cfg.policy.pretrained}: {counts}")
    optimizer, scheduler = make_optimizer_and_scheduler(policy, inputs.pi05_config, cfg.steps)
    batches = make_loader(inputs.dataset, cfg)
    tracker = make_tracker(TrackingConfig(live_dir=cfg.live_dir, wandb_dir=cfg.wandb_dir,
                                          wandb_project=cfg.wandb_project, wandb_mode=cfg.wandb_mode))
    out, checkpoint = Path(cfg.out_dir), None
    try:
        tracker.log_config({**cfg.resolved(), "versions": collect_versions()})
        tracker.log_artifact("norm_stats", Path(cfg.norms_dir) / STATS_FILE, "normalization")
        progress = tqdm(range(1, cfg.steps + 1), desc="train", unit="step")
        for step in progress:
            metrics = train_step(policy, inputs.preprocessor, next(batches), optimizer, scheduler, cfg.grad_clip_norm)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
            if step % cfg.log_every == 0 or step == cfg.steps:
                tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
            if step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
                checkpoint = save_checkpoint(
                    out / "checkpoints" / f"{step:06d}", policy, inputs.preprocessor, inputs.postprocessor,
                    dims=cfg.policy.dims, tokenizer=inputs.tokenizer, contract_path=cfg.contract_path,
                    norm_stats=stats_doc, train_config=cfg.resolved(),
                )
                write_last(out, checkpoint)
    finally:
        tracker.close()
    return checkpoint
