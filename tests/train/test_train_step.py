"""The training step's guards on LeRobot's real (tiny) Pi0.5, each observed where it acts:
gradient clipping on the gradients the optimizer receives, bf16 autocast on the dtype of the
model's matmul outputs, and a NaN loss stopping the run before anything logs or saves it."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.errors import TrainingDivergedError
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.train.batch import BatchPreparer
from vla_pipeline.train.optim import make_optimizer_and_scheduler, train_step
from vla_pipeline.train.runtime import RuntimeOptions, make_accelerator
from vla_pipeline.train.trainer import GUARD_STEPS

from conftest import CONTRACT, make_train_config


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one process-wide state; each test here builds its own precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # noqa: SLF001
    yield
    AcceleratorState._reset_state(True)  # noqa: SLF001


@pytest.fixture(scope="module")
def raw_batch(tiny_run) -> dict:
    dataset = make_dataset(tiny_run.dataset, load_contract(CONTRACT), [0], 10)
    return default_collate([dataset[i] for i in range(4)])


def _step(tiny_run, raw_batch, precision: str, grad_clip_norm: float, on_optimizer_step=None, hooks=None) -> dict:
    """One ``train_step`` of the tiny run's checkpoint, as the training loop runs it."""
    ckpt = load_checkpoint(tiny_run.checkpoint)
    accelerator, _ = make_accelerator(RuntimeOptions(device="cpu", precision=precision))
    optimizer, scheduler = make_optimizer_and_scheduler(ckpt.policy, ckpt.policy.config, 4, False)
    model, optimizer = accelerator.prepare(Pi05Loss(ckpt.policy), optimizer)
    if on_optimizer_step is not None:
        real_step = optimizer.step

        def step(*args, **kwargs):
            on_optimizer_step(ckpt.policy)
            return real_step(*args, **kwargs)

        optimizer.step = step
    handles = [m.register_forward_hook(hooks) for m in ckpt.policy.modules()
               if isinstance(m, torch.nn.Linear)] if hooks else []
    try:
        batch = BatchPreparer(ckpt.preprocessor, trim=True)(dict(raw_batch))
        return {**train_step(model, batch, optimizer, scheduler, accelerator, grad_clip_norm=grad_clip_norm),
                "batch": batch}
    finally:
        for h in handles:
            h.remove()


def _grad_norm(policy) -> float:
    grads = [p.grad.detach().float() for p in policy.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_gradients_above_the_threshold_reach_the_optimizer_clipped(tiny_run, raw_batch) -> None:
    seen = []
    out = _step(tiny_run, raw_batch, "fp32", 1e-3, on_optimizer_step=lambda policy: seen.append(_grad_norm(policy)))
    assert float(out["grad_norm"]) > 1.0  # the norm before clipping, far above the threshold
    assert seen == [pytest.approx(1e-3, rel=1e-3)]
    # a threshold above the norm leaves the gradients as they are (the measurement itself is right)
    seen.clear()
    out = _step(tiny_run, raw_batch, "fp32", 1e9, on_optimizer_step=lambda policy: seen.append(_grad_norm(policy)))
    assert seen == [pytest.approx(float(out["grad_norm"]), rel=1e-4)]


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_is_the_dtype_the_matmuls_run_in(tiny_run, raw_batch, precision, dtype) -> None:
    """CPU autocast supports bf16: under train.precision=bf16 the model's linear layers (the
    transformer's projections and the action expert's heads) compute in bf16 while the weights stay fp32."""
    dtypes = {}

    def record(module, args, output):
        dtypes.setdefault(output.dtype, 0)
        dtypes[output.dtype] += 1

    out = _step(tiny_run, raw_batch, precision, 1.0, hooks=record)
    assert set(dtypes) == {dtype} and sum(dtypes.values()) > 20, dtypes
    assert torch.isfinite(out["loss"])


def test_a_nan_loss_stops_the_run_before_it_is_logged_or_saved(params, tiny_run, tmp_path) -> None:
    """The loss turns NaN at a step past the guarded first steps, between two checks; the next check
    (a periodic save) raises before that step's log and save: no NaN in any curve, no checkpoint."""
    from dataclasses import replace

    from vla_pipeline.train.components import make_components
    from vla_pipeline.train.trainer import Trainer

    nan_at, save_at = GUARD_STEPS + 2, GUARD_STEPS + 3
    calls = {"n": 0}

    class NanAt(Pi05Loss):
        def forward(self, batch):
            loss = super().forward(batch)
            calls["n"] += 1
            return loss * float("nan") if calls["n"] == nan_at else loss

    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, steps=save_at + 2, decay_steps=save_at + 2,
                            save_every=save_at, eval_every=0, log_every=GUARD_STEPS + 1, keep_last=0)
    components = make_components(cfg)
    components.step = replace(components.step, model=NanAt(components.built.policy))  # injected: the Trainer's step
    with pytest.raises(TrainingDivergedError, match=f"NaN/Inf at or before step {save_at}"):
        Trainer(cfg, components).fit()
    assert calls["n"] == save_at  # it stopped at the first check after the NaN
    loss_curve = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in loss_curve[1:]] == [GUARD_STEPS + 1]
    for f in (tmp_path / "live").rglob("*"):
        if f.is_file() and f.suffix in (".tsv", ".json"):
            assert "nan" not in f.read_text().lower(), f
    assert not (tmp_path / "train" / "checkpoints").exists() or not any((tmp_path / "train" / "checkpoints").iterdir())
    assert not (tmp_path / "train" / "last_checkpoint.json").exists()
