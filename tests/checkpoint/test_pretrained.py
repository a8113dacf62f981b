"""Pretrained weights load strictly or fail loudly with counts; offline hub ids fail at once."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.checkpoint.pretrained import load_pretrained_weights
from vla_pipeline.errors import CheckpointError


def _fresh_policy(tiny_run):
    from vla_pipeline.model.build import make_pi05_policy
    from vla_pipeline.model.dims import load_dims

    config = load_checkpoint(tiny_run.checkpoint).policy.config
    return make_pi05_policy(config, load_dims(tiny_run.checkpoint))


def test_local_checkpoint_loads_every_tensor(tiny_run) -> None:
    policy = _fresh_policy(tiny_run)
    counts = load_pretrained_weights(policy, str(tiny_run.checkpoint.parent))  # the step dir works too
    assert counts["missing"] == counts["unexpected"] == 0 and counts["loaded"] > 50
    saved = load_file(str(tiny_run.checkpoint / "model.safetensors"))
    for key, value in saved.items():
        assert torch.equal(policy.state_dict()[key], value), key


@pytest.mark.parametrize("breakage", ["no_weights", "missing_key", "wrong_shape"])
def test_broken_checkpoint_fails_with_counts(tiny_run, tmp_path, breakage) -> None:
    broken = tmp_path / "pretrained_model"
    shutil.copytree(tiny_run.checkpoint, broken)
    (broken / "manifest.json").unlink()  # weights from elsewhere (no manifest of ours): the strict load decides
    weights = broken / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if "action_out_proj.weight" in k)
    if breakage == "no_weights":
        weights.unlink()
        match = "has no model.safetensors"
    elif breakage == "missing_key":
        state.pop(key)
        save_file(state, str(weights))
        match = r"1 missing keys .*action_out_proj"
    else:
        state[key] = torch.zeros(3, 3)
        save_file(state, str(weights))
        match = "do not fit the model"
    with pytest.raises(CheckpointError, match=match):
        load_pretrained_weights(_fresh_policy(tiny_run), str(broken))


def test_offline_hub_id_fails_fast_with_instructions(tiny_run, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"HF_HUB_OFFLINE is set.*huggingface-cli download lerobot/pi05_base"):
        load_pretrained_weights(_fresh_policy(tiny_run), "lerobot/pi05_base")


def test_train_starts_from_pretrained(params, tiny_run, tmp_path, capsys) -> None:
    from vla_pipeline.train.trainer import train

    from conftest import make_train_config

    policy = {**params["policy"], "pretrained": str(tiny_run.checkpoint)}
    cfg = make_train_config({**params, "policy": policy}, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, steps=1, decay_steps=1, warmup_steps=0,
                            wandb_mode="disabled")
    final = train(cfg)
    assert "'missing': 0, 'unexpected': 0" in capsys.readouterr().out
    # the run started from those weights: one Adam step moves each weight by about lr at most
    start, after = load_file(str(tiny_run.checkpoint / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert start.keys() == after.keys()
    moved = max((after[k].float() - start[k].float()).abs().max().item() for k in start)
    assert 0 < moved <= 2 * cfg.lr, moved
