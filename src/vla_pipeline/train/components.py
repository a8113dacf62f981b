"""The one builder of what a training run is made of, and the one training step.

:func:`make_components` builds, once and in this order (the RNG draws of a run depend on it), what a
:class:`~vla_pipeline.train.trainer.Trainer` takes: the accelerator and resolved runtime, the checked
inputs (data, LeRobot's config and processors), the policy (``model.setup.make_policy``: pretrained
weights before LoRA and freezing), the step (``optim.TrainStep``: the EMA, LeRobot's optimizer and
schedule presets, the loss prepared by accelerate), the loader from any step, the run key and the run's
place, the checkpointer and the tracker. ``vla preflight --probe`` builds its step with the same
``optim.make_train_step`` and runs the same ``optim.TrainStep``; evaluation builds its policy through
``make_policy`` too (``checkpoint.io.load_checkpoint``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vla_pipeline.checkpoint.checkpointer import Checkpointer
from vla_pipeline.checkpoint.pretrained import load_pretrained_weights
from vla_pipeline.checkpoint.run_place import RunPlace
from vla_pipeline.data.sampler import make_loader, resolve_num_workers
from vla_pipeline.model.freeze import describe_trainable
from vla_pipeline.model.setup import BuiltPolicy, PolicySetup, make_policy
from vla_pipeline.provenance import TRAIN_ENTRY, collect_versions, compute_code_identity, compute_run_key
from vla_pipeline.tracking import NullTracker, TrackingConfig, make_tracker
from vla_pipeline.train.batch import BatchPreparer
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.inputs import TrainInputs, make_inputs, require_train_inputs
from vla_pipeline.train.optim import TrainStep, make_train_step
from vla_pipeline.train.runtime import Runtime, make_accelerator, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunIdentity:
    """What names the run: the resolved config it records, the code it runs and the run key."""

    config: dict  # cfg.resolved() with the resolved runtime
    code: str  # read once: what this process runs, whatever the disk holds later
    run_key: str


@dataclass
class TrainComponents:
    """Everything a Trainer is made of, built once (:func:`make_components`) or injected."""

    accelerator: object
    runtime: Runtime
    stats_doc: dict  # the frozen normalization stats
    inputs: TrainInputs
    built: BuiltPolicy  # the policy and its parameter counts
    step: TrainStep
    batches: Callable[[int], Iterator[dict]]  # start step -> endless loader batches from there
    identity: RunIdentity
    place: RunPlace
    checkpointer: Checkpointer
    open_tracker: Callable[[int | None], object]  # resume step (None: a new run) -> a Tracker


def make_components(cfg: TrainConfig) -> TrainComponents:
    """The checked inputs first, then (seeded) the data, the policy, the step, the run's identity and
    place, the checkpointer and how to open the tracker."""
    stats_doc, split = require_train_inputs(cfg)
    accelerator, runtime = make_accelerator(cfg.runtime)
    seed_everything(cfg.seed, runtime.rank, runtime.deterministic)
    inputs = make_inputs(cfg, stats_doc, split, runtime)
    built = make_train_policy(cfg, cfg.policy_setup(runtime.attention), inputs.pi05_config)
    step = make_train_step(built.policy, inputs.pi05_config, cfg.steps, runtime, accelerator, ema_decay=cfg.ema_decay,
                           prepare=BatchPreparer(inputs.preprocessor, cfg.trim_prompt_padding),
                           grad_clip_norm=cfg.grad_clip_norm)
    identity = make_run_identity(cfg, runtime, stats_doc)
    place = RunPlace.make(cfg.out_dir, cfg.live_dir, cfg.store if cfg.runs_in_store else None, identity.run_key)
    is_main = accelerator.is_main_process
    checkpointer = Checkpointer(place.run_dir, cfg.steps, cfg.save_every, cfg.eval_every, cfg.keep_last, is_main,
                                accelerator.wait_for_everyone, publish=place.publish)
    return TrainComponents(
        accelerator, runtime, stats_doc, inputs, built, step, make_batches(cfg, runtime, inputs.dataset), identity,
        place, checkpointer, functools.partial(open_tracker, cfg, place, identity.run_key, is_main))


def make_train_policy(cfg: TrainConfig, setup: PolicySetup, pi05_config) -> BuiltPolicy:
    """The run's policy (``make_policy``): ``policy.pretrained``'s weights loaded before LoRA and freezing."""
    pretrained = cfg.policy.pretrained
    load = functools.partial(load_pretrained_weights, source=pretrained) if pretrained else None
    built = make_policy(setup, pi05_config, load_weights=load)
    if pretrained:
        log.info("pretrained weights from %s: %s", pretrained, built.loaded)
    if cfg.peft is not None:  # LoRA adapters, injected after the pretrained weights
        log.info("LoRA (%s): %s modules wrapped by peft", cfg.peft.preset, built.wrapped)
    log.info("parameters: %s (train.freeze=%s)", describe_trainable(built.policy), list(cfg.freeze))
    return built


def make_run_identity(cfg: TrainConfig, runtime: Runtime, stats_doc: dict) -> RunIdentity:
    """The run key: the resolved config (the device aside: a run resumes on another GPU), the frozen
    stats, the package versions and the code."""
    config = {**cfg.resolved(), "runtime_resolved": runtime.to_dict()}
    device_free = {k: v for k, v in runtime.to_dict().items() if k != "device"}
    code = compute_code_identity(TRAIN_ENTRY)
    return RunIdentity(config, code, compute_run_key({**config, "runtime_resolved": device_free}, stats_doc,
                                                     collect_versions(), code))


def make_batches(cfg: TrainConfig, runtime: Runtime, dataset) -> Callable[[int], Iterator[dict]]:
    """The loader of this process's share of each global batch, from any step (a pure function of the
    seed and the position: a resumed run reads the batches an uninterrupted one would)."""
    workers = resolve_num_workers(cfg.num_workers, cfg.frame_cache_dir is not None)
    pin = runtime.platform != "cpu" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)

    def batches(start: int) -> Iterator[dict]:
        return make_loader(dataset, cfg.batch_size, cfg.seed, workers, start=start, rank=runtime.rank,
                           world_size=runtime.world_size, pin_memory=pin, prefetch_factor=cfg.prefetch_factor)

    return batches


def open_tracker(cfg: TrainConfig, place: RunPlace, run_key: str, is_main: bool, resume_step: int | None):
    """dvclive and W&B for process 0 (a resumed run rewinds its curves to ``resume_step``), else nothing."""
    if not is_main:
        return NullTracker()
    return make_tracker(TrackingConfig(
        live_dir=place.live_dir, wandb_dir=cfg.wandb_dir, wandb_project=cfg.wandb_project, wandb_mode=cfg.wandb_mode,
        run_key=run_key, resume_step=resume_step, init_timeout=cfg.wandb_init_timeout,
    ))
