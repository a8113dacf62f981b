"""train.ema: the EMA follows ema = decay * ema + (1 - decay) * weight from the starting weights,
covers only what trains, and is what the validation loss, the best checkpoint and the saved
pretrained_model use, while training goes on with the raw weights."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vla_pipeline.errors import ConfigError
from vla_pipeline.train.ema import EMA

from conftest import make_train_config, vla, write_train_params


def test_ema_matches_a_hand_computation_over_three_steps() -> None:
    model = torch.nn.Linear(1, 1)
    model.bias.requires_grad_(False)  # frozen: no EMA of it
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    assert ema.names == ["weight"]
    for w in (2.0, 4.0, 8.0):  # what three optimizer steps leave in the weight
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update()
    # 0.5 * 1 + 0.5 * 2 = 1.5; 0.5 * 1.5 + 0.5 * 4 = 2.75; 0.5 * 2.75 + 0.5 * 8 = 5.375
    assert ema.shadow[0].item() == 5.375
    with ema.applied():
        assert model.weight.item() == 5.375
    assert model.weight.item() == 8.0  # the raw weight is back


def test_decay_outside_0_1_is_refused(params, tmp_path) -> None:
    with pytest.raises(ConfigError, match="train.ema.decay"):
        make_train_config(params, tmp_path, tmp_path, ema_decay=1.0)


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_a_run_with_ema_saves_and_validates_with_the_ema_weights(params, tiny_run, tmp_path) -> None:
    p = write_train_params(params, tiny_run, tmp_path, ema={"decay": 0.5}, steps=4, save_every=0, eval_every=2)
    result = vla("train", "--params", str(p))
    assert result.returncode == 0, result.stderr[-3000:]
    step = tmp_path / "train" / "checkpoints" / "000004"
    saved = load_file(str(step / "pretrained_model" / "model.safetensors"))
    shadow = load_file(str(step / "training_state" / "ema.safetensors"))
    raw = load_file(str(step / "training_state" / "raw_weights.safetensors"))
    assert shadow.keys() == raw.keys() and len(shadow) > 20
    assert all(torch.equal(saved[k], shadow[k]) for k in shadow if k in saved)  # the deployed weights: the EMA
    assert not torch.equal(shadow["model.action_out_proj.weight"], raw["model.action_out_proj.weight"])
    # the validation loss is the EMA weights': recompute it from the saved (EMA) checkpoint
    from vla_pipeline.checkpoint.io import load_checkpoint
    from vla_pipeline.train.config import TrainConfig
    from vla_pipeline.train.inputs import make_inputs, require_train_inputs
    from vla_pipeline.train.runtime import make_accelerator
    from vla_pipeline.train.validation_loss import compute_validation_loss

    cfg = TrainConfig.from_params(yaml.safe_load(p.read_text()))
    stats, split = require_train_inputs(cfg)
    accelerator, runtime = make_accelerator(cfg.runtime)
    inputs = make_inputs(cfg, stats, split, runtime)
    ckpt = load_checkpoint(step / "pretrained_model")
    expected = compute_validation_loss(ckpt.policy, inputs.preprocessor, inputs.val_dataset, cfg.batch_size, cfg.seed,
                                       accelerator.autocast)
    logged = json.loads((tmp_path / "live" / "metrics.json").read_text())["val"]["loss"]
    assert logged == pytest.approx(expected, rel=1e-6)
