"""LeRobot's Pi0.5 optimizer and schedule presets, and one optimizer step."""

from __future__ import annotations

import torch

from vla_pipeline.train.guards import check_schedule


def make_optimizer_and_scheduler(policy, pi05_config, steps: int, fused: bool = False):
    """LeRobot's Pi0.5 presets (AdamW, cosine decay with warmup) with our params folded in; the
    schedule is always built with the run's total steps (also on resume) and checked to end at decay_lr.
    ``fused``: the same AdamW (same preset values) as one fused kernel per step (a GPU speed option)."""
    preset = pi05_config.get_optimizer_preset()
    params = [p for p in policy.get_optim_params() if p.requires_grad]  # no state for frozen weights
    if fused:
        optimizer = torch.optim.AdamW(params, lr=preset.lr, betas=preset.betas, eps=preset.eps,
                                      weight_decay=preset.weight_decay, fused=True)
    else:
        optimizer = preset.build(params)
    scheduler = pi05_config.get_scheduler_preset().build(optimizer, steps)
    check_schedule(scheduler, steps, pi05_config.scheduler_decay_lr, pi05_config.optimizer_lr)
    return optimizer, scheduler


def train_step(model, batch: dict, optimizer, scheduler, accelerator, *, grad_clip_norm: float) -> dict:
    """One optimizer step on a prepared ``batch``. Loss and gradient norm stay device tensors: nothing
    here waits for the GPU (the trainer reads them at logging, guard, validation and checkpoint steps)."""
    model.train()
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
    return {"loss": loss, "grad_norm": grad_norm, "lr": lr}
