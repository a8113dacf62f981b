"""LeRobot's Pi0.5 optimizer and schedule presets, and one optimizer step: :func:`train_step`, and
:class:`TrainStep` around it (batch preparation, the EMA) as the Trainer and preflight's probe run it,
both built by :func:`make_train_step`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.train.ema import EMA
from vla_pipeline.train.guards import check_schedule
from vla_pipeline.train.runtime import Runtime


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


@dataclass
class TrainStep:
    """One optimizer step as a run takes it: the loader batch prepared (``prepare``), LeRobot's loss,
    backward, clipping, AdamW and the schedule (``optim.train_step``), then the EMA. The Trainer's
    ``train_step`` and preflight's probe both call this; the metrics stay on the device."""

    model: object  # Pi05Loss around the policy, prepared by accelerate
    optimizer: object  # prepared by accelerate
    scheduler: object
    accelerator: object
    ema: EMA | None
    prepare: Callable[[dict], dict]  # loader batch -> the model's input (BatchPreparer)
    grad_clip_norm: float

    def __call__(self, batch: dict) -> tuple[dict, dict]:
        """(metrics, the prepared batch)."""
        prepared = self.prepare(batch)
        metrics = train_step(self.model, prepared, self.optimizer, self.scheduler, self.accelerator,
                             grad_clip_norm=self.grad_clip_norm)
        if self.ema is not None:
            self.ema.update()
        return metrics, prepared


def make_train_step(policy, pi05_config, steps: int, runtime: Runtime, accelerator, *, ema_decay: float | None,
                    prepare: Callable[[dict], dict], grad_clip_norm: float) -> TrainStep:
    """The EMA of what trains (from the starting weights), LeRobot's optimizer and schedule presets for
    ``steps`` (fused AdamW as the runtime says) and the loss (compiled as the runtime says), prepared."""
    ema = EMA.make(policy, ema_decay)
    optimizer, scheduler = make_optimizer_and_scheduler(policy, pi05_config, steps, runtime.fused_optimizer)
    model, optimizer = accelerator.prepare(Pi05Loss(policy, compile_forward=runtime.compile), optimizer)
    return TrainStep(model, optimizer, scheduler, accelerator, ema, prepare, grad_clip_norm)
