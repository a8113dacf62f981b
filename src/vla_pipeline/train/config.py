"""The training run's typed config, built from the params mapping: phase defaults (``phases.<name>``)
fill every ``train`` key left null, and an explicit value always wins."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_pipeline.checkpoint.resume import RESUME_MODES
from vla_pipeline.data.augment import AugmentConfig
from vla_pipeline.errors import ConfigError
from vla_pipeline.model.config import PolicyConfig
from vla_pipeline.model.freeze import GROUP_NAMES
from vla_pipeline.model.lora import LoraSpec, make_lora_spec
from vla_pipeline.model.setup import PolicySetup
from vla_pipeline.params import at_least, choice, int_or_auto, optional_float, param
from vla_pipeline.params.models import PHASE_KEYS, default
from vla_pipeline.store import WANDB_DIR, resolve_store
from vla_pipeline.train.runtime import RuntimeOptions

WANDB_MODES = ("offline", "online", "disabled")


def resolve_phase(p: dict) -> dict:
    """``train`` with every null phase key filled from ``phases.<train.phase>``: an explicit value wins."""
    train_params = dict(param(p, "train"))
    phases = param(p, "phases")
    phase = choice(param(p, "train.phase", str), tuple(phases), "train.phase")
    for key in PHASE_KEYS:
        if train_params.get(key) is None:
            train_params[key] = param(phases, f"{phase}.{key}")
    return train_params


def _optional_path(value) -> Path | None:
    return None if value in (None, "") else Path(value)


def make_peft(section: dict | None) -> LoraSpec | None:
    """``train.peft`` as a LoRA spec (None: off); ``explicit`` needs its targets, rank and alpha."""
    if not section or section.get("preset") is None:
        return None
    if section["preset"] == "explicit":
        missing = [k for k in ("targets", "r", "alpha") if section.get(k) is None]
        if missing:
            raise ConfigError(f"params: train.peft.preset explicit needs train.peft.{', train.peft.'.join(missing)}")
    try:
        return make_lora_spec(section["preset"], section.get("targets"), section.get("r"), section.get("alpha"),
                              float(section.get("dropout") or 0.0))
    except (ValueError, re.error) as e:
        raise ConfigError(f"params: train.peft: {e}") from None


def _switch(value):
    return value if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run uses; built from params (``from_params``), never hard-coded: the defaults
    are params.yaml's (``params/models.py``)."""

    dataset_root: Path
    contract_path: Path
    norms_dir: Path
    validation_report: Path
    out_dir: Path
    live_dir: Path
    wandb_dir: Path
    policy: PolicyConfig
    steps: int
    batch_size: int  # per process; the effective batch is batch_size x processes
    lr: float
    warmup_steps: int
    decay_steps: int
    decay_lr: float
    weight_decay: float
    grad_clip_norm: float
    num_workers: int | str  # "auto": sampler.resolve_num_workers
    seed: int
    log_every: int
    save_every: int  # 0: only at the end (and new bests)
    eval_every: int  # 0: only at the end
    wandb_project: str
    wandb_mode: str
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)  # params.yaml's train.device, ...
    freeze: tuple[str, ...] = tuple(default("train.freeze"))
    resume: str = default("train.resume")
    keep_last: int = default("train.keep_last")
    val_samples: int = default("train.val_samples")
    wandb_init_timeout: float = float(default("train.wandb.init_timeout"))
    wandb_log_checkpoints: bool = default("train.wandb.log_checkpoints")
    augment: AugmentConfig = AugmentConfig()
    phase: str = default("train.phase")
    frame_cache_dir: Path | None = None  # read camera frames from this decoded-frame cache (frame_cache stage)
    pin_memory: str | bool = default("train.pin_memory")  # page-locked batches for fast host-to-GPU copies (auto: on a GPU)
    prefetch_factor: int = default("train.prefetch_factor")  # batches each loader worker prepares ahead
    trim_prompt_padding: bool = default("train.trim_prompt_padding")  # drop prompt positions that are padding in the whole batch (step.py)
    store: Path | None = None  # the store (store.py): shared frame caches, and runs when runs_in_store
    runs_in_store: bool = True  # with a store: checkpoints in <store>/runs/<run key>, published to out_dir
    peft: LoraSpec | None = None  # train.peft: LoRA adapters (model/lora.py); None: full fine-tuning
    ema_decay: float | None = default("train.ema.decay")  # train.ema.decay: an EMA of the trainable weights (train/ema.py); None: off
    preflight_report: Path | None = None  # the preflight's report, logged with the run (not part of its identity)

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every", "val_samples", "prefetch_factor"):
            at_least(getattr(self, key), 1, f"train.{key}")
        for key in ("warmup_steps", "save_every", "eval_every", "keep_last"):
            at_least(getattr(self, key), 0, f"train.{key}")
        if self.num_workers != "auto":
            at_least(self.num_workers, 0, "train.num_workers")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"params: 'train.ema.decay' = {self.ema_decay!r}; must be in (0, 1), or null (off)")
        if not self.lr > 0:
            raise ConfigError(f"params: 'train.lr' = {self.lr!r}; must be > 0")
        choice(self.wandb_mode, WANDB_MODES, "train.wandb.mode")
        choice(self.resume, RESUME_MODES, "train.resume")
        choice(self.pin_memory, ("auto", True, False), "train.pin_memory")
        for group in self.freeze:
            choice(group, GROUP_NAMES, "train.freeze")

    @classmethod
    def from_params(cls, p: dict, **overrides) -> TrainConfig:
        ints = ("steps", "batch_size", "warmup_steps", "decay_steps", "log_every", "save_every",
                "eval_every", "keep_last", "val_samples", "prefetch_factor")
        floats = ("lr", "decay_lr", "weight_decay", "grad_clip_norm")
        t = {"train": resolve_phase(p)}
        store = resolve_store(param(p, "base.store", _optional_path))
        values = dict(
            phase=param(p, "train.phase", str),
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            norms_dir=param(p, "norms.out_dir", Path),
            validation_report=param(p, "validate.report", Path),
            out_dir=param(p, "train.out_dir", Path),
            live_dir=param(p, "train.live_dir", Path),
            wandb_dir=param(p, "train.wandb.dir", _optional_path) or store / WANDB_DIR,
            store=store,
            policy=PolicyConfig.from_params(param(p, "policy")),
            seed=param(p, "base.seed", int),
            runtime=RuntimeOptions(
                device=param(p, "train.device", str), precision=param(p, "train.precision", str),
                gradient_checkpointing=param(p, "train.gradient_checkpointing", _switch),
                compile=param(p, "train.compile", _switch), deterministic=param(p, "train.deterministic", bool),
                lr_scaling=param(p, "train.lr_scaling", str), attention=param(p, "train.attention", str),
                fused_optimizer=param(p, "train.fused_optimizer", _switch), tf32=param(p, "train.tf32", _switch),
            ),
            freeze=tuple(param(p, "train.freeze", lambda v: [str(g) for g in v or []])),
            resume=param(p, "train.resume", str),
            wandb_project=param(p, "train.wandb.project", str),
            wandb_mode=param(p, "train.wandb.mode", str),
            wandb_init_timeout=param(p, "train.wandb.init_timeout", float),
            wandb_log_checkpoints=param(p, "train.wandb.log_checkpoints", bool),
            augment=AugmentConfig.from_params(param(p, "train.augment")),
            frame_cache_dir=param(p, "frame_cache.dir", Path) if param(p, "frame_cache.enable", bool) else None,
            pin_memory=param(p, "train.pin_memory", _switch),
            num_workers=param(p, "train.num_workers", int_or_auto),
            trim_prompt_padding=param(p, "train.trim_prompt_padding", bool),
            preflight_report=param(p, "preflight.report", _optional_path, default=None),
            peft=make_peft(param(p, "train.peft", default=None)),
            ema_decay=param(p, "train.ema.decay", optional_float, default=None),
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

    def policy_setup(self, attention: str = "eager") -> PolicySetup:
        """What the run builds (model/setup.py): the Trainer, preflight's probe and its predictions all
        build through ``make_policy`` with this; ``attention`` is the resolved kernel (runtime or target)."""
        return PolicySetup(dims=self.policy.dims, dtype=self.policy.dtype, peft=self.peft, freeze=self.freeze,
                           ema_decay=self.ema_decay, attention=attention)
