"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

``train()`` reads like the plan: verify the inputs, set up the runtime (accelerate), build dataset,
policy, processors, optimizer and schedule, resume if this run was interrupted, then loop
``train_step()``; the checkpointer decides when to evaluate and save.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vla_pipeline.checkpoint import (
    BEST_FILE,
    LAST_FILE,
    collect_versions,
    read_pointer,
    save_pretrained_model,
)
from vla_pipeline.checkpointer import Checkpointer
from vla_pipeline.contract import compute_contract_hash, load_contract
from vla_pipeline.data import (
    camera_shapes,
    compute_dataset_fingerprint,
    feature_names,
    load_info,
)
from vla_pipeline.errors import ConfigError, ContractError, TrainingDivergedError, TrainInputError
from vla_pipeline.frame_cache import load_frame_cache, make_episode_dataset
from vla_pipeline.guards import (
    check_initial_loss,
    check_normalized_ranges,
    check_prompt_fits,
    check_schedule,
    compute_implied_initial_loss,
    report_problems,
)
from vla_pipeline.model import make_pi05_policy
from vla_pipeline.norms import STATS_FILE, compute_split_hash, load_norm_stats, make_processor_stats
from vla_pipeline.policy import (
    apply_freeze,
    compute_image_resolution,
    make_pi05_config,
    make_processors,
    resolve_tokenizer,
)
from vla_pipeline.pretrained import load_pretrained_weights
from vla_pipeline.resume import (
    check_resumed_stats,
    compute_run_key,
    discard,
    load_state,
    plan_resume,
    restore_rng,
    save_state,
)
from vla_pipeline.runtime import Runtime, collect_git, collect_gpus, make_accelerator, seed_everything
from vla_pipeline.sampler import compute_batches_per_epoch, make_loader
from vla_pipeline.tracking import NullTracker, TrackingConfig, make_tracker, save_curves_plot
from vla_pipeline.train_config import TrainConfig
from vla_pipeline.transforms import make_image_transforms
from vla_pipeline.val_loss import compute_validation_loss, make_val_subset
from vla_pipeline.validate import load_report

GUARD_STEPS = 10  # first steps whose loss is checked against what the frozen stats imply


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


@dataclass
class TrainInputs:
    dataset: object
    val_dataset: object
    pi05_config: object
    preprocessor: object
    postprocessor: object
    tokenizer: str
    split: dict[str, list[int]]  # saved in every checkpoint: what `vla evaluate` holds out


def make_inputs(cfg: TrainConfig, stats_doc: dict, split: dict[str, list[int]], runtime: Runtime | None = None
                ) -> TrainInputs:
    """The train split as LeRobot samples (augmented), a fixed validation subset, the policy config
    (with the runtime's lr scale, checkpointing and compile) and its processors."""
    contract = load_contract(cfg.contract_path)
    cache = None if cfg.frame_cache_dir is None else load_frame_cache(
        cfg.frame_cache_dir, stats_doc["dataset_fingerprint"], compute_image_resolution(cfg.policy))
    dataset = make_episode_dataset(cfg.dataset_root, contract, split["train"], cfg.policy.chunk_size, cache,
                                    augment=make_image_transforms(cfg.augment), augment_seed=cfg.augment.seed)
    world = runtime.world_size if runtime else 1
    if compute_batches_per_epoch(len(dataset), cfg.batch_size, world) < 1:
        raise ConfigError(f"train split has {len(dataset)} frames, fewer than train.batch_size={cfg.batch_size} "
                          f"x {world} process(es)")
    val = make_episode_dataset(cfg.dataset_root, contract, split["val"], cfg.policy.chunk_size,
                                cache) if split["val"] else None
    scale = runtime.lr_scale if runtime else 1.0
    pi05_config = make_pi05_config(
        cfg.policy, len(contract.joints), camera_shapes(cfg.dataset_root, contract),
        runtime.device if runtime else "cpu",
        optimizer_lr=cfg.lr * scale, optimizer_weight_decay=cfg.weight_decay, optimizer_grad_clip_norm=cfg.grad_clip_norm,
        scheduler_warmup_steps=cfg.warmup_steps, scheduler_decay_steps=cfg.decay_steps,
        scheduler_decay_lr=cfg.decay_lr * scale,
        gradient_checkpointing=runtime.gradient_checkpointing if runtime else False,
        compile_model=runtime.compile if runtime else False,
    )
    tokenizer = resolve_tokenizer(cfg.policy, Path(cfg.out_dir) / "tokenizer")
    pre, post = make_processors(pi05_config, make_processor_stats(stats_doc), tokenizer)
    return TrainInputs(dataset, make_val_subset(val, cfg.val_samples) if val else None, pi05_config, pre, post,
                       tokenizer, split)


def make_optimizer_and_scheduler(policy, pi05_config, steps: int):
    """LeRobot's Pi0.5 presets (AdamW, cosine decay with warmup) with our params folded in; the
    schedule is always built with the run's total steps (also on resume) and checked to end at decay_lr."""
    optimizer = pi05_config.get_optimizer_preset().build(policy.get_optim_params())
    scheduler = pi05_config.get_scheduler_preset().build(optimizer, steps)
    check_schedule(scheduler, steps, pi05_config.scheduler_decay_lr, pi05_config.optimizer_lr)
    return optimizer, scheduler


def train_step(model, preprocessor, batch: dict, optimizer, scheduler, accelerator, grad_clip_norm: float) -> dict:
    """One optimizer step; returns its metrics (and the normalized batch, for the first-step guards)."""
    model.train()
    batch = preprocessor(batch)
    check_prompt_fits(batch)
    with accelerator.autocast():
        loss, _ = model(batch)
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"loss is {loss.item()}; lower train.lr or check the data")
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    if accelerator.num_processes > 1:  # log the mean over every process's share of the batch
        loss = accelerator.reduce(loss.detach(), reduction="mean")
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr, "batch": batch}


def run_metadata(cfg: TrainConfig, runtime: Runtime, stats_doc: dict, run_key: str) -> dict:
    """What rebuilds the run: the resolved config, code commit, versions, hardware and data identity."""
    return {**cfg.resolved(), "runtime_resolved": runtime.to_dict(), "run_key": run_key,
            "effective_batch_size": cfg.batch_size * runtime.world_size,
            "lr_effective": cfg.lr * runtime.lr_scale, "git": collect_git(), "versions": collect_versions(),
            "hardware": collect_gpus(),
            "data": {"root": str(cfg.dataset_root), "fingerprint": stats_doc["dataset_fingerprint"],
                     "split_hash": stats_doc["split_hash"], "contract_hash": stats_doc["contract_hash"]}}


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) the whole fine-tuning; returns the last checkpoint's ``pretrained_model`` directory."""
    stats_doc, split = check_inputs(cfg)
    accelerator, runtime = make_accelerator(cfg.runtime)
    is_main = accelerator.is_main_process
    seed_everything(cfg.seed, runtime.rank, runtime.deterministic)
    inputs = make_inputs(cfg, stats_doc, split, runtime)
    policy = make_pi05_policy(inputs.pi05_config, cfg.policy.dims)
    if cfg.policy.pretrained:
        counts = load_pretrained_weights(policy, cfg.policy.pretrained)
        accelerator.print(f"pretrained weights from {cfg.policy.pretrained}: {counts}")
    accelerator.print(f"parameters: {apply_freeze(policy, cfg.freeze)} (train.freeze={list(cfg.freeze)})")
    optimizer, scheduler = make_optimizer_and_scheduler(policy, inputs.pi05_config, cfg.steps)
    config = {**cfg.resolved(), "runtime_resolved": runtime.to_dict()}
    run_key = compute_run_key({**config, "runtime_resolved": {k: v for k, v in runtime.to_dict().items()
                                                              if k != "device"}}, stats_doc, collect_versions())
    start, best, resumed_from = resume_if_possible(cfg, run_key, policy, optimizer, scheduler, inputs, stats_doc,
                                                   accelerator)
    checkpointer = Checkpointer(Path(cfg.out_dir), cfg.steps, cfg.save_every, cfg.eval_every, cfg.keep_last,
                                is_main, accelerator.wait_for_everyone, best)
    tracker = make_tracker(TrackingConfig(
        live_dir=cfg.live_dir, wandb_dir=cfg.wandb_dir, wandb_project=cfg.wandb_project, wandb_mode=cfg.wandb_mode,
        run_key=run_key, resume_step=start if resumed_from else None, init_timeout=cfg.wandb_init_timeout,
    )) if is_main else NullTracker()
    accelerator.print(f"runtime: {runtime.describe()}; effective batch {cfg.batch_size * runtime.world_size}")
    model, optimizer = accelerator.prepare(policy, optimizer)
    if resumed_from is not None:
        restore_rng(resumed_from, runtime.rank)  # undo any draw made since the state was loaded
    try:
        tracker.log_config(run_metadata(cfg, runtime, stats_doc, run_key))
        log_inputs(tracker, cfg, stats_doc)
        loop(cfg, runtime, accelerator, model, optimizer, scheduler, inputs, stats_doc, checkpointer, tracker,
             start, config, run_key)
        log_outputs(tracker, cfg)
    finally:
        tracker.close()
    return Path(cfg.out_dir) / read_pointer(cfg.out_dir, LAST_FILE)["path"] / "pretrained_model"


def resume_if_possible(cfg, run_key, policy, optimizer, scheduler, inputs, stats_doc, accelerator):
    """Continue this run from its newest usable checkpoint (``train.resume: auto``), else start clean."""
    plan = plan_resume(Path(cfg.out_dir), run_key, cfg.resume)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        discard(Path(cfg.out_dir), plan.discard)
    accelerator.wait_for_everyone()
    if plan.checkpoint is None:
        return 0, None, None
    step, run_state = load_state(plan.checkpoint, policy, optimizer, scheduler, accelerator.process_index)
    check_resumed_stats(plan.checkpoint, inputs.preprocessor, stats_doc)
    print(f"resuming from {plan.checkpoint} (step {step} of {cfg.steps})")
    return step, run_state.get("best"), plan.checkpoint


def loop(cfg, runtime, accelerator, model, optimizer, scheduler, inputs, stats_doc, checkpointer, tracker,
         start, config, run_key) -> None:
    policy = accelerator.unwrap_model(model)
    pin = runtime.platform != "cpu" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
    batches = make_loader(inputs.dataset, cfg.batch_size, cfg.seed, cfg.num_workers, start, runtime.rank,
                          runtime.world_size, pin, cfg.prefetch_factor)
    implied_loss, first_losses = compute_implied_initial_loss(stats_doc, cfg.policy.normalization), []
    progress = tqdm(range(start + 1, cfg.steps + 1), desc="train", unit="step", initial=start, total=cfg.steps,
                    disable=not accelerator.is_main_process)
    for step in progress:
        t0 = time.perf_counter()
        metrics = train_step(model, inputs.preprocessor, next(batches), optimizer, scheduler, accelerator,
                             cfg.grad_clip_norm)
        batch = metrics.pop("batch")
        if step == start + 1:
            report_problems(check_normalized_ranges(batch, cfg.policy.normalization))
        if start == 0 and step <= GUARD_STEPS:
            first_losses.append(metrics["loss"])
            if step == min(GUARD_STEPS, cfg.steps):
                report_problems(check_initial_loss(first_losses, implied_loss))
        elapsed = time.perf_counter() - t0
        progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
        logged = {"train/lr": metrics["lr"]}  # every step: the schedule is visible whole
        if step % cfg.log_every == 0 or step == cfg.steps:
            logged.update({f"train/{k}": v for k, v in metrics.items()})
            logged.update(perf_metrics(elapsed, cfg.batch_size * runtime.world_size))
        val_loss = None
        if checkpointer.should_eval(step) and inputs.val_dataset is not None:
            val_loss = compute_validation_loss(policy, inputs.preprocessor, inputs.val_dataset, cfg.batch_size,
                                               cfg.seed, accelerator.autocast)
            logged["val/loss"] = val_loss
        tracker.log_metrics(logged, step)
        if checkpointer.should_save(step, val_loss):
            checkpointer.save(step, val_loss, lambda tmp, best, step=step: save_state_and_model(
                tmp, step, best, cfg, runtime, accelerator, policy, optimizer, scheduler, inputs, stats_doc, config,
                run_key))


def perf_metrics(step_time_s: float, global_batch: int) -> dict:
    out = {"perf/step_time_s": step_time_s, "perf/samples_per_s": global_batch / step_time_s}
    if torch.cuda.is_available():
        out["perf/gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def save_state_and_model(tmp, step, best, cfg, runtime, accelerator, policy, optimizer, scheduler, inputs,
                         stats_doc, config, run_key) -> None:
    run_state = {"step": step, "run_key": run_key, "best": best, "world_size": runtime.world_size,
                 "sampler": {"global_batches_done": step,
                             "batches_per_epoch": compute_batches_per_epoch(len(inputs.dataset), cfg.batch_size,
                                                                            runtime.world_size)}}
    if accelerator.is_main_process:
        save_pretrained_model(
            tmp, policy, inputs.preprocessor, inputs.postprocessor, dims=cfg.policy.dims, tokenizer=inputs.tokenizer,
            contract_path=cfg.contract_path, norm_stats=stats_doc, split=inputs.split, train_config=config,
            provenance={"git": collect_git()},
        )
    save_state(tmp, step, optimizer, scheduler, run_state, runtime.rank)


def log_inputs(tracker, cfg: TrainConfig, stats_doc: dict) -> None:
    info = load_info(cfg.dataset_root)
    tracker.log_artifact("dataset", None, "dataset", metadata={
        "root": str(Path(cfg.dataset_root).resolve()), "fingerprint": stats_doc["dataset_fingerprint"],
        "total_episodes": info.get("total_episodes"), "total_frames": info.get("total_frames"),
        "fps": info.get("fps"), "codebase_version": info.get("codebase_version"),
    })
    tracker.log_artifact("norm_stats", Path(cfg.norms_dir) / STATS_FILE, "normalization",
                         metadata={"fingerprint": stats_doc["dataset_fingerprint"]})


def log_outputs(tracker, cfg: TrainConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plot = save_curves_plot(cfg.live_dir, Path(tmp) / "training_curves.png")
        if plot is not None:
            tracker.log_image("training_curves", plot)
    if cfg.wandb_log_checkpoints:
        for name, pointer in (("checkpoint-last", LAST_FILE), ("checkpoint-best", BEST_FILE)):
            doc = read_pointer(cfg.out_dir, pointer)
            if doc is not None:
                tracker.log_artifact(name, Path(cfg.out_dir) / doc["path"] / "pretrained_model", "model",
                                     metadata={k: v for k, v in doc.items() if k != "path"})
