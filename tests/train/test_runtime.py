"""Runtime: precision / checkpointing / compile resolution, freezing, bf16 autocast on CPU, and the
same training code under a 2-process (gloo) launch."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from vla_pipeline.errors import ConfigError
from vla_pipeline.train.runtime import RuntimeOptions, compute_lr_scale, resolve_precision

from conftest import vla, write_train_params
from procs import run_bounded


def test_precision_and_lr_scale_resolution() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", "cpu")
    assert (compute_lr_scale("none", 4), compute_lr_scale("linear", 4), compute_lr_scale("sqrt", 4)) == (1, 4, 2)
    with pytest.raises(ConfigError, match="train.precision"):
        RuntimeOptions(precision="fp8")


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_frozen_vision_tower_does_not_change(params, tiny_run, tmp_path) -> None:
    """Start from the tiny run's checkpoint with `train.freeze: [vision]`: the vision tower's weights stay
    bit-identical while the action expert trains."""
    p = write_train_params(params, tiny_run, tmp_path, freeze=["vision"], save_every=0, eval_every=0)
    p.write_text(p.read_text().replace("pretrained: null", f"pretrained: {tiny_run.checkpoint}"))
    result = vla("train", "--params", str(p))
    assert result.returncode == 0, result.stderr[-3000:]
    before = load_file(str(tiny_run.checkpoint / "model.safetensors"))
    after = load_file(str(tmp_path / "train/checkpoints/000004/pretrained_model/model.safetensors"))
    vision = [k for k in before if ".vision_tower." in k or ".multi_modal_projector." in k]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert not torch.equal(before["model.action_out_proj.weight"], after["model.action_out_proj.weight"])
    assert "vision 0%, language 100%, expert 100%, projections 100%" in result.stdout


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_bf16_autocast_trains_on_cpu(params, tiny_run, tmp_path) -> None:
    result = vla("train", "--params", str(write_train_params(params, tiny_run, tmp_path, precision="bf16")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision bf16" in result.stdout
    resolved = json.loads((tmp_path / "train/checkpoints/000004/pretrained_model/train_config.json").read_text())
    assert resolved["runtime_resolved"]["precision"] == "bf16"


@pytest.mark.slow
def test_two_processes_with_gloo(params, tiny_run, tmp_path) -> None:
    """`torchrun --nproc_per_node 2` (what `accelerate launch --multi_gpu` does per GPU), on CPU."""
    p = write_train_params(params, tiny_run, tmp_path, batch_size=2, steps=4, save_every=2, eval_every=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vla_pipeline.cli",
           "train", "--params", str(p)]
    result = run_bounded(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout and "effective batch 4" in result.stdout
    step_dir = tmp_path / "train/checkpoints/000004"
    assert (step_dir / "training_state/rng_state_rank1.safetensors").is_file()
    resolved = json.loads((step_dir / "pretrained_model/train_config.json").read_text())
    assert resolved["runtime_resolved"]["world_size"] == 2
    live = (tmp_path / "live/params.yaml").read_text()
    assert "effective_batch_size: 4" in live


def test_gpu_speed_options_resolve_per_platform() -> None:
    from vla_pipeline.train.runtime import make_accelerator

    _, runtime = make_accelerator(RuntimeOptions(device="cpu"))
    assert (runtime.attention, runtime.fused_optimizer, runtime.tf32) == ("eager", False, False)
    _, runtime = make_accelerator(RuntimeOptions(device="cpu", attention="sdpa", fused_optimizer=True))
    assert (runtime.attention, runtime.fused_optimizer) == ("sdpa", True)
    with pytest.raises(ConfigError, match="train.attention"):
        RuntimeOptions(attention="flash")


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_sdpa_and_fused_adamw_train_like_eager_and_foreach(params, tiny_run, tmp_path) -> None:
    """The speed options change float rounding only: 4 steps give the same losses to 1e-4."""
    losses = {}
    for name, options in (("eager", {}), ("fast", {"attention": "sdpa", "fused_optimizer": True})):
        p = write_train_params(params, tiny_run, tmp_path / name, log_every=1, **options)
        result = vla("train", "--params", str(p))
        assert result.returncode == 0, result.stderr[-3000:]
        rows = (tmp_path / name / "live/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
        losses[name] = [float(r.split("\t")[-1]) for r in rows]
        resolved = json.loads((tmp_path / name / "train/checkpoints/000004/pretrained_model/train_config.json")
                              .read_text())["runtime_resolved"]
        assert resolved["attention"] == options.get("attention", "eager")
    assert len(losses["eager"]) == 4
    assert losses["fast"] == pytest.approx(losses["eager"], rel=1e-4)


def test_out_of_memory_becomes_an_actionable_error(params, tiny_run, tmp_path) -> None:
    """A GPU out-of-memory error in a step (raised here where the allocator would) says what to change."""
    from vla_pipeline.train.runtime import make_accelerator
    from vla_pipeline.train.trainer import run_step

    from conftest import make_train_config

    cfg = make_train_config(params, tiny_run.dataset, tmp_path, batch_size=32)
    _, runtime = make_accelerator(RuntimeOptions(device="cpu"))

    def out_of_memory(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(ConfigError, match=r"train.batch_size=32 does not fit .* step 1 ran out of GPU memory\. "
                                          r"Set train.gradient_checkpointing: true or lower train.batch_size"):
        run_step(types.SimpleNamespace(cfg=cfg, runtime=runtime, train_step=out_of_memory), {}, 1)
