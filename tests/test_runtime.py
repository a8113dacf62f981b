"""Runtime: precision / checkpointing / compile resolution, freezing, bf16 autocast on CPU, and the
same training code under a 2-process (gloo) launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vla_pipeline.errors import ConfigError
from vla_pipeline.runtime import RuntimeOptions, compute_lr_scale, resolve_precision

from conftest import vla, write_train_params


def test_precision_and_lr_scale_resolution() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", "cpu")
    assert (compute_lr_scale("none", 4), compute_lr_scale("linear", 4), compute_lr_scale("sqrt", 4)) == (1, 4, 2)
    with pytest.raises(ConfigError, match="train.precision"):
        RuntimeOptions(precision="fp8")


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
    assert "'frozen': 0" not in result.stdout


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
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout and "effective batch 4" in result.stdout
    step_dir = tmp_path / "train/checkpoints/000004"
    assert (step_dir / "training_state/rng_state_rank1.safetensors").is_file()
    resolved = json.loads((step_dir / "pretrained_model/train_config.json").read_text())
    assert resolved["runtime_resolved"]["world_size"] == 2
    live = (tmp_path / "live/params.yaml").read_text()
    assert "effective_batch_size: 4" in live
