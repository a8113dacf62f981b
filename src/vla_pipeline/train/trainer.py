"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

A :class:`Trainer` takes what a run is made of (:class:`~vla_pipeline.train.components.TrainComponents`:
accelerator, policy, data, optimizer and schedule, run key, checkpointer, tracker), built once by
``make_components`` or injected; ``fit()`` reads like the plan: claim the run's directory, resume if this
run was interrupted (``load_state_dict``), then ``train_step()`` after ``train_step()``; the checkpointer
decides when to evaluate and save (``state_dict``). ``train(cfg)`` is the entry point the stage and
``vla train`` call.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from lerobot.utils.random_utils import deserialize_rng_state, serialize_rng_state
from tqdm import tqdm

from vla_pipeline.checkpoint.checkpointer import Checkpointer
from vla_pipeline.checkpoint.io import save_pretrained_model
from vla_pipeline.checkpoint.layout import ADAPTER_DIR, BEST_FILE, LAST_FILE, PRETRAINED_DIR, read_pointer
from vla_pipeline.checkpoint.resume import (
    check_resumed_stats,
    load_weights,
    plan_resume,
    read_train_state,
    repair_pointers,
    save_train_state,
    set_aside,
    trainable_weights,
)
from vla_pipeline.checkpoint.run_place import move_aside
from vla_pipeline.cores import rebalance
from vla_pipeline.data.sampler import compute_batches_per_epoch
from vla_pipeline.data.tables import load_info
from vla_pipeline.data.validation_report import read_report_json
from vla_pipeline.errors import ConfigError, UserInterruptError
from vla_pipeline.model.compat.attention import attention_kernel
from vla_pipeline.model.lora import compute_merged_state_dict, save_adapter
from vla_pipeline.norms import NORMS_STATS_FILE, compute_split_id
from vla_pipeline.provenance import collect_git, collect_gpus, collect_versions
from vla_pipeline.tracking import MACHINE_KEYS, NullTracker, save_curves_plot
from vla_pipeline.train.components import TrainComponents, make_components
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.guards import (
    check_initial_loss,
    check_normalized_ranges,
    compute_implied_initial_loss,
    raise_if_diverged,
    report_problems,
)
from vla_pipeline.train.perf import Interval, describe_oom
from vla_pipeline.train.validation_loss import compute_validation_loss

GUARD_STEPS = 10  # first steps whose loss is checked against what the frozen stats imply

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the whole fine-tuning; returns the last checkpoint's ``pretrained_model`` directory."""
    return Trainer(cfg, make_components(cfg)).fit()


def run_step(trainer: Trainer, batch: dict, step: int) -> dict:
    """``trainer.train_step(batch)``, with a GPU out-of-memory error turned into what to change."""
    try:
        return trainer.train_step(batch)
    except torch.OutOfMemoryError:
        raise ConfigError(describe_oom(trainer.cfg, trainer.runtime, step)) from None


class Trainer:
    """One training run, made of ``components`` (``make_components(cfg)``, or injected). Every
    attribute is declared here; ``fit`` opens the tracker and runs the loop, ``state_dict`` /
    ``load_state_dict`` are what a checkpoint saves and a resume restores."""

    def __init__(self, cfg: TrainConfig, components: TrainComponents):
        c = components
        self.cfg = cfg
        self.accelerator, self.runtime = c.accelerator, c.runtime
        self.is_main: bool = c.accelerator.is_main_process
        self.stats_doc, self.inputs = c.stats_doc, c.inputs
        self.policy, self.counts = c.built.policy, c.built.counts
        self.wrapped = cfg.peft is not None  # LoRA adapters, injected after the pretrained weights
        self.step_fn = c.step  # the one training step (preflight's probe runs the same)
        self.model, self.optimizer, self.scheduler, self.ema = c.step.model, c.step.optimizer, c.step.scheduler, c.step.ema
        self.batches = c.batches
        self.config, self.code, self.run_key = c.identity.config, c.identity.code, c.identity.run_key
        self.place, self.checkpointer, self.open_tracker = c.place, c.checkpointer, c.open_tracker
        self.tracker = NullTracker()  # opened by fit, once the resume step is known
        self.step = 0  # optimizer steps taken (where a resumed run continues from)
        self.start = 0  # the step this process started (or resumed) at
        self.resumed_from: Path | None = None
        self.batch: dict | None = None  # the last prepared batch (the first step's range check reads it)
        self.implied_loss: float | None = None  # the initial loss the frozen stats imply
        self.first_losses: list[float] = []
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=c.accelerator.device)  # any NaN/Inf loss so far
        self.perf = Interval(0)
        self.progress: tqdm | None = None

    def fit(self) -> Path:
        with contextlib.ExitStack() as stack:
            if self.is_main and self.place.out_dir is not None:
                stack.enter_context(self.place.lock(self.run_key))
                move_aside(self.cfg.out_dir, self.cfg.store)
            self.accelerator.wait_for_everyone()  # every process plans its resume after the move
            rng = self.resume_if_possible()
            self.tracker = self.open_tracker(self.start if self.resumed_from else None)
            if rng is not None:
                deserialize_rng_state(rng)  # undo any draw made since the state was loaded
            try:
                self.log_start()
                with attention_kernel(self.runtime.attention):
                    try:
                        self.loop()
                    except KeyboardInterrupt:
                        raise UserInterruptError(describe_interrupt(self.checkpointer)) from None
                self.log_end()
            finally:
                self.tracker.close()
            if self.is_main:
                self.place.publish()  # also when the run had finished before (the stage's outputs were reset)
            self.accelerator.wait_for_everyone()
        return Path(self.cfg.out_dir) / read_pointer(self.cfg.out_dir, LAST_FILE)["path"] / PRETRAINED_DIR

    def resume_if_possible(self) -> dict | None:
        """Continue this run from its newest usable checkpoint (``train.resume: auto``), else start clean;
        returns the restored RNG state (None: a new run)."""
        run_dir, accelerator = self.place.run_dir, self.accelerator
        plan = plan_resume(run_dir, self.run_key, self.cfg.resume)
        accelerator.wait_for_everyone()
        if self.is_main:
            set_aside(run_dir, plan.discard)
        accelerator.wait_for_everyone()
        if plan.checkpoint is None:
            return None
        state = read_train_state(plan.checkpoint, self.state_dict(), accelerator.process_index,
                                 raw=self.saves_raw_weights, wrapped=self.wrapped)
        self.load_state_dict(state)
        check_resumed_stats(plan.checkpoint, self.inputs.preprocessor, self.stats_doc)
        if self.is_main:
            repair_pointers(run_dir, plan.checkpoint, {"step": state["step"], "best": state["best"]})
        log.info("resuming from %s (step %d of %d)", plan.checkpoint, self.step, self.cfg.steps)
        self.resumed_from = plan.checkpoint
        return state["rng"]

    def state_dict(self) -> dict:
        """What a resume restores, as references (torch's ``state_dict`` convention): the step, the best
        checkpoint so far, the trainable weights, AdamW's and the schedule's state, the EMA and this
        process's RNG streams (a checkpoint keeps the weights in ``training_state/`` only where
        ``pretrained_model`` holds others: EMA, LoRA)."""
        return {
            "step": self.step, "best": self.checkpointer.best, "weights": trainable_weights(self.policy),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": serialize_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Put a ``state_dict`` back (or ``read_train_state``'s reading of a checkpoint, which also holds
        the checkpoint's whole ``model``); training then continues as if never stopped."""
        load_weights(self.policy, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        deserialize_rng_state(state["rng"])
        self.step = self.start = state["step"]
        self.checkpointer.best = state["best"]

    @property
    def lr(self) -> float:
        """The effective lr (configured x the runtime's scale), as LeRobot's config holds it."""
        return self.inputs.pi05_config.optimizer_lr

    @property
    def saves_raw_weights(self) -> bool:
        """``pretrained_model`` holds other weights than training does (the EMA, or LoRA merged)."""
        return self.ema is not None or self.wrapped

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.runtime.world_size

    def loop(self) -> None:
        cfg = self.cfg
        batches: Iterator[dict] = self.batches(self.start)
        self.implied_loss = compute_implied_initial_loss(self.stats_doc, cfg.policy.normalization)
        self.perf = Interval(self.start)
        self.progress = tqdm(range(self.start + 1, cfg.steps + 1), desc="train", unit="step", initial=self.start,
                             total=cfg.steps, disable=not self.is_main)
        for step in self.progress:
            rebalance()  # this run's share of the cores, as other runs start and end (cores.py; throttled)
            self.checkpointer.step = step
            metrics = run_step(self, next(batches), step)
            self.step = step
            logged = self.observe(step, metrics)
            val_loss = self.validate(step, logged)
            self.tracker.log_metrics(logged, step)
            if self.checkpointer.should_save(step, val_loss):
                with self.perf.excluded_time():
                    self.checkpointer.save(step, val_loss, functools.partial(self.save, step=step))

    def train_step(self, batch: dict) -> dict:
        """One optimizer step on a loader batch (``TrainStep``); the metrics stay on the device (no GPU wait)."""
        metrics, self.batch = self.step_fn(batch)
        self.nonfinite |= ~torch.isfinite(metrics["loss"])
        return metrics

    def observe(self, step: int, metrics: dict) -> dict:
        """Guards and what to log at this step; reads the device values only when something needs them."""
        cfg = self.cfg
        if step == self.start + 1:
            report_problems(check_normalized_ranges(self.batch, cfg.policy.normalization))
        logged = {"train/lr": metrics["lr"]}  # every step: the schedule is visible whole
        guarded = self.start == 0 and step <= GUARD_STEPS
        log_now = step % cfg.log_every == 0 or step == cfg.steps
        periodic_save = cfg.save_every > 0 and step % cfg.save_every == 0
        if log_now or guarded or self.checkpointer.should_eval(step) or periodic_save:  # the only GPU waits
            raise_if_diverged(self.nonfinite, step)
            metrics = {k: float(v) for k, v in metrics.items()}
            self.progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
        if guarded:
            self.first_losses.append(metrics["loss"])
            if step == min(GUARD_STEPS, cfg.steps):
                report_problems(check_initial_loss(self.first_losses, self.implied_loss))
        if log_now:
            logged.update({f"train/{k}": v for k, v in metrics.items()})
            logged.update(self.perf.measure(step, self.global_batch))
        return logged

    def validate(self, step: int, logged: dict) -> float | None:
        if not self.checkpointer.should_eval(step) or self.inputs.val_dataset is None:
            return None
        with self.perf.excluded_time(), self.ema_applied():
            val_loss = compute_validation_loss(self.policy, self.inputs.preprocessor, self.inputs.val_dataset,
                                               self.cfg.batch_size, self.cfg.seed, self.accelerator.autocast)
        logged["val/loss"] = val_loss
        return val_loss

    def save(self, tmp: Path, best: dict | None, *, step: int) -> None:
        """Write step ``step`` into ``tmp``: the model (process 0) and every process's training state."""
        cfg, runtime = self.cfg, self.runtime
        batches_per_epoch = compute_batches_per_epoch(len(self.inputs.dataset), cfg.batch_size, runtime.world_size)
        run_state = {"step": step, "run_key": self.run_key, "best": best, "world_size": runtime.world_size,
                     "sampler": {"global_batches_done": step, "batches_per_epoch": batches_per_epoch}}
        if self.is_main:
            self.save_model(tmp)
        state = self.state_dict()  # after save_model: the RNG as the old save_state captured it
        save_train_state(tmp, state, run_state, runtime.rank, raw=self.saves_raw_weights)

    def save_model(self, tmp: Path) -> None:
        """``pretrained_model/`` as a user deploys it (the EMA applied, the LoRA adapters merged: LeRobot
        loads it without peft) and the adapter in PEFT's format; what a resume needs besides (the raw
        trainable weights, the EMA) is in ``state_dict``."""
        cfg, inputs = self.cfg, self.inputs
        with self.ema_applied():
            weights = None
            if self.wrapped:
                weights = compute_merged_state_dict(self.policy)
                save_adapter(tmp / ADAPTER_DIR, self.policy, cfg.peft)
            save_pretrained_model(
                tmp, self.policy, inputs.preprocessor, inputs.postprocessor, dims=cfg.policy.dims,
                tokenizer=inputs.tokenizer, contract_path=cfg.contract_path, norm_stats=self.stats_doc,
                split=inputs.split, train_config=self.saved_config, provenance={"code": self.code},
                weights=weights,
            )

    @property
    def saved_config(self) -> dict:
        """The resolved config a checkpoint records: without where this machine keeps the store and W&B
        files (a fresh clone's ``make demo`` then writes the same bytes; they go to W&B instead)."""
        return {k: v for k, v in self.config.items() if k not in MACHINE_KEYS}

    def ema_applied(self):
        """The EMA weights in the policy for a validation loss or a save (nothing without an EMA)."""
        return contextlib.nullcontext() if self.ema is None else self.ema.applied()

    def log_start(self) -> None:
        """The run's config and provenance, its inputs, and what the phase resolved to."""
        cfg, tracker, stats = self.cfg, self.tracker, self.stats_doc
        log.info("runtime: %s; effective batch %d", self.runtime.describe(), self.global_batch)
        tracker.log_config({**cfg.resolved(), "runtime_resolved": self.runtime.to_dict(), "run_key": self.run_key,
                            "effective_batch_size": self.global_batch, "lr_effective": self.lr, "git": collect_git(),
                            "versions": collect_versions(), "hardware": collect_gpus(),
                            "data": {"root": str(cfg.dataset_root), "fingerprint": stats["dataset_fingerprint"],
                                     "split_hash": stats["split_hash"], "contract_hash": stats["contract_hash"]}})
        info = load_info(cfg.dataset_root)
        tracker.log_artifact("dataset", None, "dataset", metadata={
            "root": str(Path(cfg.dataset_root).resolve()), "fingerprint": stats["dataset_fingerprint"],
            "total_episodes": info.get("total_episodes"), "total_frames": info.get("total_frames"),
            "fps": info.get("fps"), "codebase_version": info.get("codebase_version"),
        })
        tracker.log_artifact("norm_stats", Path(cfg.norms_dir) / NORMS_STATS_FILE, "normalization",
                             metadata={"fingerprint": stats["dataset_fingerprint"]})
        split = self.inputs.split
        # which episodes validate (and are evaluated): equal split_id, same held-out episodes (dvc exp show);
        # what the phase resolved to (params.yaml leaves them null): columns of `dvc exp show`
        tracker.log_summary({"data": {"split_id": compute_split_id(split), "n_val_episodes": len(split["val"]),
                                      "n_train_episodes": len(split["train"])}})
        tracker.log_summary({"resolved": {"lr": self.lr, "steps": cfg.steps, "batch_size": self.global_batch}})
        self.log_preflight()
        self.log_data_quality()

    def log_data_quality(self) -> None:
        """The validation report's quality score per episode (docs/validation.md): a bar per episode, and
        its minimum, mean and the episodes below 1 in the run's summary."""
        quality = read_report_json(self.cfg.validation_report).get("episode_quality") or {}
        if not quality:
            return
        rows = [{"episode": int(e), "quality": float(q)} for e, q in quality.items()]
        self.tracker.log_table("episode_quality", rows, x="episode", y="quality")
        scores = [r["quality"] for r in rows]
        self.tracker.log_summary({"data": {"quality_min": min(scores), "quality_mean": round(sum(scores) / len(scores), 4),
                                           "n_flagged_episodes": sum(q < 1 for q in scores)}})

    def log_preflight(self) -> None:
        """The preflight report (machine, numerics, memory; docs/preflight.md) beside the run, when there is one."""
        path = self.cfg.preflight_report
        if path is None or not Path(path).is_file():
            return
        counts = json.loads(Path(path).read_text())["counts"]
        self.tracker.log_artifact("preflight", Path(path), "preflight", metadata=counts)
        self.tracker.log_summary({"preflight": counts})

    def log_end(self) -> None:
        """The training curves and, when asked, the best and last checkpoints as W&B artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            plot = save_curves_plot(self.place.live_dir, Path(tmp) / "training_curves.png")
            if plot is not None:
                self.tracker.log_image("training_curves", plot)
        if self.cfg.wandb_log_checkpoints:
            for name, pointer in (("checkpoint-last", LAST_FILE), ("checkpoint-best", BEST_FILE)):
                doc = read_pointer(self.place.run_dir, pointer)
                if doc is not None:
                    self.tracker.log_artifact(name, self.place.run_dir / doc["path"] / PRETRAINED_DIR, "model",
                                              metadata={k: v for k, v in doc.items() if k != "path"})


def describe_interrupt(checkpointer: Checkpointer) -> str:
    """One line for Ctrl-C: where training stopped, the checkpoint it will resume from, and how."""
    step, total = checkpointer.step, checkpointer.total_steps
    last = read_pointer(checkpointer.run_dir, LAST_FILE)
    if last is None:
        return (f"training stopped at step {step} of {total} before its first checkpoint; running the same "
                f"command again starts from step 0")
    return (f"training stopped at step {step} of {total}; last complete checkpoint: step {last['step']} "
            f"({Path(checkpointer.run_dir) / last['path']}); run the same command again to resume from it "
            f"(train.resume: auto)")
