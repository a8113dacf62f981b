"""Checkpoints are LeRobot's pretrained_model layout, load strictly, and never load half-written."""

from __future__ import annotations

import pytest
import torch
from lerobot.policies.pi05.modeling_pi05 import PI05Policy
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint import CheckpointError, load_checkpoint
from vla_pipeline.model import load_dims, shrunk_pi05


def test_lerobot_from_pretrained_loads_our_checkpoint(tiny_run) -> None:
    ours = load_checkpoint(tiny_run.checkpoint).policy
    with shrunk_pi05(load_dims(tiny_run.checkpoint)):
        theirs = PI05Policy.from_pretrained(str(tiny_run.checkpoint))
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key]), key
    assert not any(p.name.endswith(".tmp") for p in tiny_run.checkpoint.parent.iterdir())


def test_missing_weights_hard_fail(tiny_run, tmp_path) -> None:
    import shutil

    broken = tmp_path / "pretrained_model"
    shutil.copytree(tiny_run.checkpoint, broken)
    state = load_file(str(broken / "model.safetensors"))
    state.pop(next(k for k in state if "action_out_proj" in k))
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing keys"):
        load_checkpoint(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(broken)
