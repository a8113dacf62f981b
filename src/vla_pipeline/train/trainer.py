"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

A :class:`Trainer` owns what a run is made of (accelerator, policy, optimizer, scheduler, run key,
checkpointer, tracker); ``fit()`` reads like the plan: claim the run's directory, resume if this run
was interrupted, then ``train_step()`` after ``train_step()``; the checkpointer decides when to
evaluate and save. ``train(cfg)`` is the entry point the stage and ``vla train`` call.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from vla_pipeline.checkpoint.checkpointer import Checkpointer
from vla_pipeline.checkpoint.io import save_pretrained_model
from vla_pipeline.checkpoint.layout import ADAPTER_DIR, BEST_FILE, LAST_FILE, PRETRAINED_DIR, read_pointer
from vla_pipeline.checkpoint.pretrained import load_pretrained_weights
from vla_pipeline.checkpoint.resume import (
    check_resumed_stats,
    load_state,
    plan_resume,
    repair_pointers,
    restore_rng,
    save_raw_weights,
    save_state,
    set_aside,
)
from vla_pipeline.checkpoint.run_place import RunPlace, move_aside
from vla_pipeline.data.sampler import compute_batches_per_epoch, make_loader, resolve_num_workers
from vla_pipeline.data.tables import load_info
from vla_pipeline.data.validation_report import read_report_json
from vla_pipeline.errors import ConfigError, UserInterruptError
from vla_pipeline.model.compat.attention import attention_kernel
from vla_pipeline.model.freeze import describe_trainable
from vla_pipeline.model.lora import compute_merged_state_dict, save_adapter
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.model.setup import make_policy
from vla_pipeline.norms import NORMS_STATS_FILE, compute_split_id
from vla_pipeline.provenance import (
    TRAIN_ENTRY,
    collect_git,
    collect_gpus,
    collect_versions,
    compute_code_identity,
    compute_run_key,
)
from vla_pipeline.tracking import MACHINE_KEYS, NullTracker, TrackingConfig, make_tracker, save_curves_plot
from vla_pipeline.train.batch import BatchPreparer
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.ema import EMA
from vla_pipeline.train.guards import (
    check_initial_loss,
    check_normalized_ranges,
    compute_implied_initial_loss,
    raise_if_diverged,
    report_problems,
)
from vla_pipeline.train.inputs import make_inputs, require_train_inputs
from vla_pipeline.train.optim import make_optimizer_and_scheduler, train_step
from vla_pipeline.train.perf import Interval, describe_oom
from vla_pipeline.train.runtime import make_accelerator, seed_everything
from vla_pipeline.train.validation_loss import compute_validation_loss

GUARD_STEPS = 10  # first steps whose loss is checked against what the frozen stats imply


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the whole fine-tuning; returns the last checkpoint's ``pretrained_model`` directory."""
    return Trainer(cfg).fit()


def run_step(trainer: Trainer, batch: dict, step: int) -> dict:
    """``trainer.train_step(batch)``, with a GPU out-of-memory error turned into what to change."""
    try:
        return trainer.train_step(batch)
    except torch.OutOfMemoryError:
        raise ConfigError(describe_oom(trainer.cfg, trainer.runtime, step)) from None


class Trainer:
    """One training run. Built from the checked inputs: runtime, policy (pretrained weights loaded
    before freezing), optimizer and schedule, and the run key that names the run in the store."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.stats_doc, split = require_train_inputs(cfg)
        self.accelerator, self.runtime = make_accelerator(cfg.runtime)
        self.is_main = self.accelerator.is_main_process
        seed_everything(cfg.seed, self.runtime.rank, self.runtime.deterministic)
        self.inputs = make_inputs(cfg, self.stats_doc, split, self.runtime)
        pretrained = cfg.policy.pretrained
        load = functools.partial(load_pretrained_weights, source=pretrained) if pretrained else None
        built = make_policy(cfg.policy_setup(self.runtime.attention), self.inputs.pi05_config, load_weights=load)
        self.policy, self.counts = built.policy, built.counts
        if pretrained:
            self.accelerator.print(f"pretrained weights from {pretrained}: {built.loaded}")
        self.wrapped = cfg.peft is not None  # LoRA adapters, injected after the pretrained weights
        if self.wrapped:
            self.accelerator.print(f"LoRA ({cfg.peft.preset}): {built.wrapped} modules wrapped by peft")
        self.accelerator.print(f"parameters: {describe_trainable(self.policy)} (train.freeze={list(cfg.freeze)})")
        self.ema = EMA.make(self.policy, cfg.ema_decay)  # of what trains, from the starting weights
        self.optimizer, self.scheduler = make_optimizer_and_scheduler(self.policy, self.inputs.pi05_config, cfg.steps,
                                                                      self.runtime.fused_optimizer)
        self.config = {**cfg.resolved(), "runtime_resolved": self.runtime.to_dict()}
        device_free = {k: v for k, v in self.runtime.to_dict().items() if k != "device"}
        self.code = compute_code_identity(TRAIN_ENTRY)  # read once: what this process runs, whatever the disk holds later
        self.run_key = compute_run_key({**self.config, "runtime_resolved": device_free}, self.stats_doc,
                                       collect_versions(), self.code)
        self.place = RunPlace.make(cfg.out_dir, cfg.live_dir, cfg.store if cfg.runs_in_store else None, self.run_key)
        self.start, self.best, self.resumed_from = 0, None, None
        self.prepare = BatchPreparer(self.inputs.preprocessor, cfg.trim_prompt_padding)

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

    def fit(self) -> Path:
        with contextlib.ExitStack() as stack:
            if self.is_main and self.place.out_dir is not None:
                stack.enter_context(self.place.lock(self.run_key))
                move_aside(self.cfg.out_dir, self.cfg.store)
            self.accelerator.wait_for_everyone()  # every process plans its resume after the move
            self.resume_if_possible()
            self.checkpointer = Checkpointer(self.place.run_dir, self.cfg.steps, self.cfg.save_every,
                                             self.cfg.eval_every, self.cfg.keep_last, self.is_main,
                                             self.accelerator.wait_for_everyone, self.best, publish=self.place.publish)
            self.tracker = self.make_tracker()
            self.model, self.optimizer = self.accelerator.prepare(
                Pi05Loss(self.policy, compile_forward=self.runtime.compile), self.optimizer)
            if self.resumed_from is not None:
                restore_rng(self.resumed_from, self.runtime.rank)  # undo any draw made since the state was loaded
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

    def resume_if_possible(self) -> None:
        """Continue this run from its newest usable checkpoint (``train.resume: auto``), else start clean."""
        run_dir, accelerator = self.place.run_dir, self.accelerator
        plan = plan_resume(run_dir, self.run_key, self.cfg.resume)
        accelerator.wait_for_everyone()
        if self.is_main:
            set_aside(run_dir, plan.discard)
        accelerator.wait_for_everyone()
        if plan.checkpoint is None:
            return
        step, run_state = load_state(plan.checkpoint, self.policy, self.optimizer, self.scheduler,
                                     accelerator.process_index, raw=self.saves_raw_weights, wrapped=self.wrapped)
        if self.ema is not None:
            self.ema.load(plan.checkpoint)
        check_resumed_stats(plan.checkpoint, self.inputs.preprocessor, self.stats_doc)
        if self.is_main:
            repair_pointers(run_dir, plan.checkpoint, run_state)
        print(f"resuming from {plan.checkpoint} (step {step} of {self.cfg.steps})")
        self.start, self.best, self.resumed_from = step, run_state.get("best"), plan.checkpoint

    def make_tracker(self):
        if not self.is_main:
            return NullTracker()
        cfg = self.cfg
        return make_tracker(TrackingConfig(
            live_dir=self.place.live_dir, wandb_dir=cfg.wandb_dir, wandb_project=cfg.wandb_project,
            wandb_mode=cfg.wandb_mode, run_key=self.run_key,
            resume_step=self.start if self.resumed_from else None, init_timeout=cfg.wandb_init_timeout,
        ))

    def loop(self) -> None:
        cfg = self.cfg
        workers = resolve_num_workers(cfg.num_workers, cfg.frame_cache_dir is not None)
        pin = self.runtime.platform != "cpu" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
        batches = make_loader(self.inputs.dataset, cfg.batch_size, cfg.seed, workers, start=self.start,
                              rank=self.runtime.rank, world_size=self.runtime.world_size, pin_memory=pin,
                              prefetch_factor=cfg.prefetch_factor)
        self.implied_loss, self.first_losses = compute_implied_initial_loss(self.stats_doc,
                                                                            cfg.policy.normalization), []
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.accelerator.device)
        self.perf = Interval(self.start)
        self.progress = tqdm(range(self.start + 1, cfg.steps + 1), desc="train", unit="step", initial=self.start,
                             total=cfg.steps, disable=not self.is_main)
        for step in self.progress:
            self.checkpointer.step = step
            metrics = run_step(self, next(batches), step)
            logged = self.observe(step, metrics)
            val_loss = self.validate(step, logged)
            self.tracker.log_metrics(logged, step)
            if self.checkpointer.should_save(step, val_loss):
                with self.perf.excluded_time():
                    self.checkpointer.save(step, val_loss, functools.partial(self.save, step=step))

    def train_step(self, batch: dict) -> dict:
        """One optimizer step on a loader batch; the metrics stay on the device (no GPU wait)."""
        self.batch = self.prepare(batch)
        metrics = train_step(self.model, self.batch, self.optimizer, self.scheduler, self.accelerator,
                             grad_clip_norm=self.cfg.grad_clip_norm)
        if self.ema is not None:
            self.ema.update()
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
        save_state(tmp, step, self.optimizer, self.scheduler, run_state, runtime.rank)

    def save_model(self, tmp: Path) -> None:
        """``pretrained_model/`` as a user deploys it (the EMA applied, the LoRA adapters merged: LeRobot
        loads it without peft), the adapter in PEFT's format, and what a resume needs besides: the raw
        trainable weights and the EMA."""
        cfg, inputs = self.cfg, self.inputs
        if self.saves_raw_weights:
            save_raw_weights(tmp, self.policy)
        if self.ema is not None:
            self.ema.save(tmp)
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
        self.accelerator.print(f"runtime: {self.runtime.describe()}; effective batch {self.global_batch}")
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
