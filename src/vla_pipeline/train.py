"""Fine-tune LeRobot's Pi0.5 on the contract's arm-only action with the frozen statistics.

``train()`` reads like the plan: verify the inputs, set up the runtime (accelerate), build dataset,
policy, processors, optimizer and schedule, resume if this run was interrupted, then loop
``train_step()``; the checkpointer decides when to evaluate and save.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vla_pipeline.batch import BatchPreparer
from vla_pipeline.checkpoint.checkpointer import Checkpointer
from vla_pipeline.checkpoint.io import save_pretrained_model
from vla_pipeline.checkpoint.layout import BEST_FILE, LAST_FILE, read_pointer
from vla_pipeline.checkpoint.pretrained import load_pretrained_weights
from vla_pipeline.checkpoint.resume import (
    check_resumed_stats,
    discard,
    load_state,
    plan_resume,
    repair_pointers,
    restore_rng,
    save_state,
)
from vla_pipeline.checkpoint.run_place import RunPlace, move_aside
from vla_pipeline.data.augment import make_image_transforms
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import load_frame_cache
from vla_pipeline.data.metadata import camera_shapes
from vla_pipeline.data.sampler import compute_batches_per_epoch, make_loader, resolve_num_workers
from vla_pipeline.data.tables import feature_names, load_info
from vla_pipeline.errors import (
    ConfigError,
    ContractError,
    TrainingDivergedError,
    TrainInputError,
    UserInterruptError,
)
from vla_pipeline.guards import (
    check_initial_loss,
    check_normalized_ranges,
    check_schedule,
    compute_implied_initial_loss,
    report_problems,
)
from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.compat.attention import attention_kernel
from vla_pipeline.model.config import compute_image_resolution, make_pi05_config, resolve_tokenizer
from vla_pipeline.model.freeze import apply_freeze
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.model.processors import make_processors
from vla_pipeline.norms import (
    STATS_FILE,
    compute_split_hash,
    compute_split_id,
    load_norm_stats,
    make_processor_stats,
)
from vla_pipeline.provenance import (
    collect_git,
    collect_gpus,
    collect_versions,
    compute_contract_hash,
    compute_dataset_fingerprint,
    compute_run_key,
)
from vla_pipeline.runtime import Runtime, make_accelerator, seed_everything
from vla_pipeline.tracking import NullTracker, TrackingConfig, make_tracker, save_curves_plot
from vla_pipeline.train_config import TrainConfig
from vla_pipeline.val_loss import compute_validation_loss, make_val_subset
from vla_pipeline.validate.report import load_report

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
        cfg.frame_cache_dir, stats_doc["dataset_fingerprint"], compute_image_resolution(cfg.policy), cfg.store,
        rebuild_from=(cfg.dataset_root, cfg.contract_path))
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


def make_optimizer_and_scheduler(policy, pi05_config, steps: int, fused: bool = False):
    """LeRobot's Pi0.5 presets (AdamW, cosine decay with warmup) with our params folded in; the
    schedule is always built with the run's total steps (also on resume) and checked to end at decay_lr.
    ``fused``: the same AdamW (same preset values) as one fused kernel per step (a GPU speed option)."""
    preset = pi05_config.get_optimizer_preset()
    if fused:
        optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=preset.lr, betas=preset.betas, eps=preset.eps,
                                      weight_decay=preset.weight_decay, fused=True)
    else:
        optimizer = preset.build(policy.get_optim_params())
    scheduler = pi05_config.get_scheduler_preset().build(optimizer, steps)
    check_schedule(scheduler, steps, pi05_config.scheduler_decay_lr, pi05_config.optimizer_lr)
    return optimizer, scheduler


def train_step(model, prepare_batch, batch: dict, optimizer, scheduler, accelerator, grad_clip_norm: float) -> dict:
    """One optimizer step. Loss and gradient norm stay device tensors: nothing here waits for the GPU
    (``loop`` reads them at logging, guard, validation and checkpoint steps)."""
    model.train()
    batch = prepare_batch(batch)
    with accelerator.autocast():
        loss = model(batch)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    loss = loss.detach()
    if accelerator.num_processes > 1:  # log the mean over every process's share of the batch
        loss = accelerator.reduce(loss, reduction="mean")
    return {"loss": loss, "grad_norm": grad_norm, "lr": lr, "batch": batch}


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
    optimizer, scheduler = make_optimizer_and_scheduler(policy, inputs.pi05_config, cfg.steps, runtime.fused_optimizer)
    config = {**cfg.resolved(), "runtime_resolved": runtime.to_dict()}
    run_key = compute_run_key({**config, "runtime_resolved": {k: v for k, v in runtime.to_dict().items()
                                                              if k != "device"}}, stats_doc, collect_versions())
    place = RunPlace.make(cfg.out_dir, cfg.live_dir, cfg.store if cfg.runs_in_store else None, run_key)
    with contextlib.ExitStack() as stack:
        if is_main and place.out_dir is not None:
            stack.enter_context(place.lock(run_key))
            move_aside(cfg.out_dir, cfg.store)
        accelerator.wait_for_everyone()  # every process plans its resume after the move
        start, best, resumed_from = resume_if_possible(cfg, place.run_dir, run_key, policy, optimizer, scheduler,
                                                       inputs, stats_doc, accelerator)
        checkpointer = Checkpointer(place.run_dir, cfg.steps, cfg.save_every, cfg.eval_every, cfg.keep_last,
                                    is_main, accelerator.wait_for_everyone, best, publish=place.publish)
        tracker = make_tracker(TrackingConfig(
            live_dir=place.live_dir, wandb_dir=cfg.wandb_dir, wandb_project=cfg.wandb_project,
            wandb_mode=cfg.wandb_mode, run_key=run_key, resume_step=start if resumed_from else None,
            init_timeout=cfg.wandb_init_timeout,
        )) if is_main else NullTracker()
        accelerator.print(f"runtime: {runtime.describe()}; effective batch {cfg.batch_size * runtime.world_size}")
        model, optimizer = accelerator.prepare(Pi05Loss(policy, compile_forward=runtime.compile), optimizer)
        if resumed_from is not None:
            restore_rng(resumed_from, runtime.rank)  # undo any draw made since the state was loaded
        try:
            tracker.log_config(run_metadata(cfg, runtime, stats_doc, run_key))
            log_inputs(tracker, cfg, stats_doc, inputs.split)
            # what the phase resolved to (params.yaml leaves them null): columns of `dvc exp show`
            tracker.log_summary({"resolved": {"lr": cfg.lr * runtime.lr_scale, "steps": cfg.steps,
                                              "batch_size": cfg.batch_size * runtime.world_size}})
            with attention_kernel(runtime.attention):
                try:
                    loop(cfg, runtime, accelerator, model, optimizer, scheduler, inputs, stats_doc, checkpointer,
                         tracker, start, config, run_key)
                except KeyboardInterrupt:
                    raise UserInterruptError(describe_interrupt(checkpointer)) from None
            log_outputs(tracker, cfg, place)
        finally:
            tracker.close()
        if is_main:
            place.publish()  # also when the run had finished before (the stage's outputs were reset)
        accelerator.wait_for_everyone()
    return Path(cfg.out_dir) / read_pointer(cfg.out_dir, LAST_FILE)["path"] / "pretrained_model"


def resume_if_possible(cfg, run_dir, run_key, policy, optimizer, scheduler, inputs, stats_doc, accelerator):
    """Continue this run from its newest usable checkpoint (``train.resume: auto``), else start clean."""
    plan = plan_resume(run_dir, run_key, cfg.resume)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        discard(run_dir, plan.discard)
    accelerator.wait_for_everyone()
    if plan.checkpoint is None:
        return 0, None, None
    step, run_state = load_state(plan.checkpoint, policy, optimizer, scheduler, accelerator.process_index)
    check_resumed_stats(plan.checkpoint, inputs.preprocessor, stats_doc)
    if accelerator.is_main_process:
        repair_pointers(run_dir, plan.checkpoint, run_state)
    print(f"resuming from {plan.checkpoint} (step {step} of {cfg.steps})")
    return step, run_state.get("best"), plan.checkpoint


def loop(cfg, runtime, accelerator, model, optimizer, scheduler, inputs, stats_doc, checkpointer, tracker,
         start, config, run_key) -> None:
    policy = accelerator.unwrap_model(model).policy
    pin = runtime.platform != "cpu" if cfg.pin_memory == "auto" else bool(cfg.pin_memory)
    workers = resolve_num_workers(cfg.num_workers, cfg.frame_cache_dir is not None)
    batches = make_loader(inputs.dataset, cfg.batch_size, cfg.seed, workers, start, runtime.rank,
                          runtime.world_size, pin, cfg.prefetch_factor)
    prepare = BatchPreparer(inputs.preprocessor, cfg.trim_prompt_padding)
    implied_loss, first_losses = compute_implied_initial_loss(stats_doc, cfg.policy.normalization), []
    progress = tqdm(range(start + 1, cfg.steps + 1), desc="train", unit="step", initial=start, total=cfg.steps,
                    disable=not accelerator.is_main_process)
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    perf = Interval(start)
    for step in progress:
        checkpointer.step = step
        metrics = run_step(model, prepare, next(batches), optimizer, scheduler, accelerator, cfg, runtime, step)
        nonfinite |= ~torch.isfinite(metrics["loss"])
        batch = metrics.pop("batch")
        if step == start + 1:
            report_problems(check_normalized_ranges(batch, cfg.policy.normalization))
        logged = {"train/lr": metrics["lr"]}  # every step: the schedule is visible whole
        guarded = start == 0 and step <= GUARD_STEPS
        log_now = step % cfg.log_every == 0 or step == cfg.steps
        periodic_save = cfg.save_every > 0 and step % cfg.save_every == 0
        if log_now or guarded or checkpointer.should_eval(step) or periodic_save:  # the only GPU waits
            check_finite(nonfinite, step)
            metrics = {k: float(v) for k, v in metrics.items()}
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
        if guarded:
            first_losses.append(metrics["loss"])
            if step == min(GUARD_STEPS, cfg.steps):
                report_problems(check_initial_loss(first_losses, implied_loss))
        if log_now:
            logged.update({f"train/{k}": v for k, v in metrics.items()})
            logged.update(perf.measure(step, cfg.batch_size * runtime.world_size))
        val_loss = None
        if checkpointer.should_eval(step) and inputs.val_dataset is not None:
            with perf.excluded_time():
                val_loss = compute_validation_loss(policy, inputs.preprocessor, inputs.val_dataset, cfg.batch_size,
                                                   cfg.seed, accelerator.autocast)
            logged["val/loss"] = val_loss
        tracker.log_metrics(logged, step)
        if checkpointer.should_save(step, val_loss):
            with perf.excluded_time():
                checkpointer.save(step, val_loss, lambda tmp, best, step=step: save_state_and_model(
                    tmp, step, best, cfg, runtime, accelerator, policy, optimizer, scheduler, inputs, stats_doc,
                    config, run_key))


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


def run_step(model, prepare, batch, optimizer, scheduler, accelerator, cfg, runtime, step) -> dict:
    """``train_step``, with a GPU out-of-memory error turned into what to change."""
    try:
        return train_step(model, prepare, batch, optimizer, scheduler, accelerator, cfg.grad_clip_norm)
    except torch.OutOfMemoryError:
        raise ConfigError(describe_oom(cfg, runtime, step)) from None


def describe_oom(cfg, runtime, step: int) -> str:
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0
    advice = ("set train.gradient_checkpointing: true or lower train.batch_size" if not runtime.gradient_checkpointing
              else "lower train.batch_size (or freeze part of the model: train.freeze)")
    return (f"train.batch_size={cfg.batch_size} does not fit on this GPU ({total:.0f} GiB) at precision "
            f"{runtime.precision}, gradient checkpointing {'on' if runtime.gradient_checkpointing else 'off'}: "
            f"step {step} ran out of GPU memory. {advice[0].upper()}{advice[1:]}; README 'Training throughput' "
            f"lists the largest batches measured per GPU.")


def check_finite(nonfinite: torch.Tensor, step: int) -> None:
    if bool(nonfinite):
        raise TrainingDivergedError(f"the loss became NaN/Inf at or before step {step}; lower train.lr or check "
                                    f"the data")


class Interval:
    """Throughput over the steps since the last log, validation and checkpoint time left out; timed
    after the loss was read, so it covers the GPU's work and not only the kernel launches."""

    def __init__(self, step: int):
        self.step, self.t0, self.excluded = step, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def excluded_time(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0

    def measure(self, step: int, global_batch: int) -> dict:
        now = time.perf_counter()
        seconds = max(now - self.t0 - self.excluded, 1e-9) / max(step - self.step, 1)
        self.step, self.t0, self.excluded = step, now, 0.0
        out = {"perf/step_time_s": seconds, "perf/samples_per_s": global_batch / seconds}
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


def log_inputs(tracker, cfg: TrainConfig, stats_doc: dict, split: dict) -> None:
    info = load_info(cfg.dataset_root)
    tracker.log_artifact("dataset", None, "dataset", metadata={
        "root": str(Path(cfg.dataset_root).resolve()), "fingerprint": stats_doc["dataset_fingerprint"],
        "total_episodes": info.get("total_episodes"), "total_frames": info.get("total_frames"),
        "fps": info.get("fps"), "codebase_version": info.get("codebase_version"),
    })
    tracker.log_artifact("norm_stats", Path(cfg.norms_dir) / STATS_FILE, "normalization",
                         metadata={"fingerprint": stats_doc["dataset_fingerprint"]})
    # which episodes validate (and are evaluated): equal split_id, same held-out episodes (dvc exp show)
    tracker.log_summary({"data": {"split_id": compute_split_id(split), "n_val_episodes": len(split["val"]),
                                  "n_train_episodes": len(split["train"])}})


def log_outputs(tracker, cfg: TrainConfig, place: RunPlace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plot = save_curves_plot(place.live_dir, Path(tmp) / "training_curves.png")
        if plot is not None:
            tracker.log_image("training_curves", plot)
    if cfg.wandb_log_checkpoints:
        for name, pointer in (("checkpoint-last", LAST_FILE), ("checkpoint-best", BEST_FILE)):
            doc = read_pointer(place.run_dir, pointer)
            if doc is not None:
                tracker.log_artifact(name, place.run_dir / doc["path"] / "pretrained_model", "model",
                                     metadata={k: v for k, v in doc.items() if k != "path"})
