"""A LoRA run end to end: the checkpoint holds the adapter in PEFT's format and a merged
pretrained_model that LeRobot's Pi0.5 loads in a fresh process without peft, reproducing the
validation loss the run logged."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, vla, write_train_params
from procs import run_bounded

# a fresh process in which `import peft` fails: LeRobot and our strict loader only
CHILD = """
import json, sys
sys.modules["peft"] = None
import yaml
import vla_pipeline
from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.inputs import make_inputs, require_train_inputs
from vla_pipeline.train.runtime import make_accelerator
from vla_pipeline.train.validation_loss import compute_validation_loss

cfg = TrainConfig.from_params(yaml.safe_load(open(sys.argv[1])))
stats, split = require_train_inputs(cfg)
accelerator, runtime = make_accelerator(cfg.runtime)
inputs = make_inputs(cfg, stats, split, runtime)
ckpt = load_checkpoint(sys.argv[2])
loss = compute_validation_loss(ckpt.policy, inputs.preprocessor, inputs.val_dataset, cfg.batch_size, cfg.seed,
                               accelerator.autocast)
print(json.dumps({"val_loss": loss, "peft": [m for m, v in sys.modules.items() if m.startswith("peft") and v],
                  "policy": type(ckpt.policy).__module__}))
"""


@pytest.fixture(scope="module")
def lora_run(params, tiny_run, tmp_path_factory):
    work = tmp_path_factory.mktemp("lora")
    p = write_train_params(params, tiny_run, work, peft={"preset": "openpi"}, steps=4, save_every=0, eval_every=4)
    result = vla("train", "--params", str(p))
    assert result.returncode == 0, result.stderr[-3000:]
    return p, work / "train" / "checkpoints" / "000004", result


def test_the_checkpoint_holds_the_adapter_in_peft_format(lora_run) -> None:
    _, step, result = lora_run
    config = json.loads((step / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 16
    assert any("gemma_expert" in k and v == 32 for k, v in config["rank_pattern"].items())
    assert (step / "adapter" / "adapter_model.safetensors").is_file()
    assert "LoRA (openpi): " in result.stdout and "modules wrapped by peft" in result.stdout


def test_lerobot_loads_the_merged_checkpoint_without_peft_and_reproduces_the_val_loss(lora_run) -> None:
    params_path, step, _ = lora_run
    child = run_bounded([sys.executable, "-c", CHILD, str(params_path), str(step / "pretrained_model")],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["peft"] == [] and out["policy"] == "lerobot.policies.pi05.modeling_pi05"
    logged = json.loads((params_path.parent / "live" / "metrics.json").read_text())["val"]["loss"]
    assert out["val_loss"] == pytest.approx(logged, rel=1e-5)  # merged W vs W x + B A x: float rounding only


def test_lora_starts_from_the_pretrained_weights_loaded_before_wrapping(params, tiny_run, tmp_path) -> None:
    """policy.pretrained with LoRA: LeRobot's names load strictly into the plain policy, then peft wraps
    it; what the `expert` preset does not train leaves the run bit-identical to the pretrained weights."""
    import torch
    from safetensors.torch import load_file

    p = write_train_params(params, tiny_run, tmp_path, peft={"preset": "expert"}, save_every=0, eval_every=0)
    p.write_text(p.read_text().replace("pretrained: null", f"pretrained: {tiny_run.checkpoint}"))
    result = vla("train", "--params", str(p))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained weights from" in result.stdout
    step = tmp_path / "train" / "checkpoints" / "000004"
    before = load_file(str(tiny_run.checkpoint / "model.safetensors"))
    after = load_file(str(step / "pretrained_model" / "model.safetensors"))
    assert after.keys() == before.keys()
    untouched = [k for k in before if ".self_attn." not in k or ".gemma_expert." not in k]
    untouched = [k for k in untouched if not k.startswith(("model.action_", "model.time_mlp"))]
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)
    raw = load_file(str(step / "training_state" / "raw_weights.safetensors"))
    assert raw and all(".lora_" in k for k in raw)


def test_the_run_key_includes_the_lora_spec(params, tmp_path) -> None:
    from vla_pipeline.provenance import RUN_KEY_IGNORED_KEYS

    from conftest import make_train_config

    cfg = make_train_config(params, tmp_path, tmp_path)
    lora = make_train_config({**params, "train": {**params["train"], "peft": {**params["train"]["peft"],
                                                                             "preset": "openpi"}}}, tmp_path, tmp_path)
    assert cfg.resolved()["peft"] is None and lora.resolved()["peft"]["rank_pattern"] == {".*gemma_expert.*": 32}
    assert "peft" not in RUN_KEY_IGNORED_KEYS and "ema_decay" not in RUN_KEY_IGNORED_KEYS
