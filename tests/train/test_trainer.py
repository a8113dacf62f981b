"""The Trainer takes its components (``make_components``, or injected): a real tracker put in its place
records what a run logs; ``state_dict``/``load_state_dict`` round-trip, in memory and through the
checkpoint files, and a run resumed from them ends bit-identical to an uninterrupted one; preflight's
probe runs the Trainer's own step. All on LeRobot's real tiny Pi0.5 from the builder."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from vla_pipeline.train.components import TrainComponents, make_components
from vla_pipeline.train.optim import TrainStep
from vla_pipeline.train.trainer import Trainer

from conftest import make_train_config


class RecordingTracker:
    """A Tracker (tracking.Tracker's methods) that keeps every call."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        if not name.startswith("log_") and name != "close":
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def _components(params, tiny_run, tmp_path, **overrides) -> tuple[object, TrainComponents]:
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, wandb_mode="disabled", **overrides)
    return cfg, make_components(cfg)


def _trainable(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}


def _steps(trainer: Trainer, start: int, n: int) -> list[float]:
    batches = trainer.batches(start)
    losses = []
    for step in range(start + 1, start + n + 1):
        losses.append(float(trainer.train_step(next(batches))["loss"]))
        trainer.step = step
    return losses


def test_an_injected_tracker_records_the_run(params, tiny_run, tmp_path) -> None:
    tracker, opened = RecordingTracker(), []
    cfg, components = _components(params, tiny_run, tmp_path, log_every=1)
    components.open_tracker = lambda resume_step: opened.append(resume_step) or tracker
    trainer = Trainer(cfg, components)
    assert trainer.policy is components.built.policy and trainer.step_fn is components.step
    trainer.fit()
    assert opened == [None]  # a new run: nothing to rewind
    names = [c[0] for c in tracker.calls]
    assert names[0] == "log_config" and names[-1] == "close"
    steps = [args[1] for name, args, _ in tracker.calls if name == "log_metrics"]
    assert steps == list(range(1, cfg.steps + 1))
    logged = {k for name, args, _ in tracker.calls if name == "log_metrics" for k in args[0]}
    assert {"train/loss", "train/lr", "train/grad_norm", "val/loss"} <= logged


def test_every_attribute_is_declared_in_init(params, tiny_run, tmp_path) -> None:
    cfg, components = _components(params, tiny_run, tmp_path)
    trainer = Trainer(cfg, components)
    declared = set(vars(trainer))
    trainer.fit()
    assert set(vars(trainer)) == declared


@pytest.mark.parametrize("variant", [{}, {"ema_decay": 0.9}])
def test_state_dict_round_trips_and_a_resumed_run_equals_an_uninterrupted_one(params, tiny_run, tmp_path,
                                                                             variant) -> None:
    """Two steps, state_dict, two more steps; a second Trainer built afresh loads the state (in memory,
    and read back from the checkpoint files) and takes the same two steps: same losses, weights, EMA,
    optimizer state and RNG."""
    from vla_pipeline.checkpoint.resume import read_train_state, save_train_state

    cfg, components = _components(params, tiny_run, tmp_path / "a", **variant)
    first = Trainer(cfg, components)
    _steps(first, 0, 2)
    state = copy.deepcopy(first.state_dict())
    save_train_state(tmp_path / "ckpt", first.state_dict(), {"best": None}, 0, raw=True)
    expected_losses = _steps(first, 2, 2)
    expected = _trainable(first)
    after = first.state_dict()
    for source in ("memory", "files"):
        cfg, components = _components(params, tiny_run, tmp_path / source, **variant)
        resumed = Trainer(cfg, components)
        if source == "files":
            state = read_train_state(tmp_path / "ckpt", resumed.state_dict(), 0, raw=True, wrapped=True)
        resumed.load_state_dict(state)
        assert resumed.step == 2
        assert _steps(resumed, 2, 2) == expected_losses, source
        assert all(torch.equal(v, _trainable(resumed)[k]) for k, v in expected.items()), source
        mine = resumed.state_dict()
        if variant:
            assert all(torch.equal(v, mine["ema"]["shadow"][k]) for k, v in after["ema"]["shadow"].items())
        theirs, ours = after["optimizer"]["state"], mine["optimizer"]["state"]
        assert theirs.keys() == ours.keys()
        different = [k for k in theirs if not all(torch.equal(theirs[k][m], ours[k][m]) for m in theirs[k])]
        assert not different, (source, different[:5], len(theirs))
        assert mine["scheduler"]["last_epoch"] == after["scheduler"]["last_epoch"] == 4
        assert torch.equal(mine["rng"]["torch_rng_state"], after["rng"]["torch_rng_state"]), source


def _probe_spec(cfg, batch: int):
    from vla_pipeline.preflight.run import Target, probe_spec

    return replace(probe_spec(cfg, Target.resolve(cfg)), batches=[batch])


def test_the_probe_runs_the_trainers_step(params, tiny_run, tmp_path, monkeypatch) -> None:
    """The probe's one step per batch size is a call of the Trainer's TrainStep (a copy of the step in
    the probe fails this), and on the Trainer's weights, batch and noise seed it gives the Trainer's loss
    and gradient norm exactly."""
    from vla_pipeline.preflight import probe

    cfg, components = _components(params, tiny_run, tmp_path)
    trainer = Trainer(cfg, components)
    raw = next(trainer.batches(0))
    batch = trainer.step_fn.prepare(dict(raw))
    runtime, built, step = probe.make_probe_step(_probe_spec(cfg, cfg.batch_size))
    assert type(step) is type(trainer.step_fn) is TrainStep and step.grad_clip_norm == cfg.grad_clip_norm
    assert built.counts == trainer.counts and runtime.attention == trainer.runtime.attention
    built.policy.load_state_dict(trainer.policy.state_dict())
    torch.manual_seed(7)
    probe_metrics, _ = step(batch)
    torch.manual_seed(7)
    metrics = trainer.train_step(dict(raw))
    assert torch.equal(probe_metrics["loss"], metrics["loss"])
    assert torch.equal(probe_metrics["grad_norm"], metrics["grad_norm"])

    calls = []
    real = TrainStep.__call__
    monkeypatch.setattr(TrainStep, "__call__", lambda self, b: calls.append(len(next(iter(b.values())))) or real(self, b))
    result = probe.measure_peaks(_probe_spec(cfg, 2))
    assert calls == [2] and result.peaks[2] is not None
