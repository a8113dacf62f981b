"""Checkpoints are LeRobot's pretrained_model layout, load strictly, and never load half-written."""

from __future__ import annotations

import pytest
import torch
from lerobot.policies.pi05.modeling_pi05 import PI05Policy
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import CheckpointError, load_checkpoint, verify_checkpoint, write_manifest
from vla_pipeline.checkpoint.layout import CHECKPOINT_MANIFEST_FILE
from vla_pipeline.model.build import shrunk_pi05
from vla_pipeline.model.dims import load_dims

from procs import run_bounded


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
    write_manifest(broken)  # a consistent checkpoint of another model, not a damaged one
    with pytest.raises(CheckpointError, match="1 missing keys"):
        load_checkpoint(broken)
    (broken / "model.safetensors").unlink()
    write_manifest(broken)
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(broken)


RELOAD = """
import json, sys
from pathlib import Path
import yaml
from lerobot.policies.pi05.modeling_pi05 import PI05Policy
from lerobot.processor import PolicyProcessorPipeline
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.model.build import shrunk_pi05
from vla_pipeline.model.dims import load_dims
from vla_pipeline.norms import load_split
from vla_pipeline.train.validation_loss import compute_validation_loss, make_val_subset

path, norms = Path(sys.argv[1]), Path(sys.argv[2])
cfg = json.loads((path / "train_config.json").read_text())
with shrunk_pi05(load_dims(path)):
    policy = PI05Policy.from_pretrained(str(path))
pre = PolicyProcessorPipeline.from_pretrained(
    str(path), config_filename="policy_preprocessor.json",
    overrides={"tokenizer_processor": {"tokenizer_name": str(path / "tokenizer")}})
val = make_dataset(Path(cfg["dataset_root"]), load_contract(path / "contract.yaml"), load_split(norms)["val"],
                   cfg["policy"]["chunk_size"])
loss = compute_validation_loss(policy, pre, make_val_subset(val, cfg["val_samples"]), cfg["batch_size"], cfg["seed"])
print(json.dumps({"val_loss": loss}))
"""


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_best_and_last_reload_in_fresh_process_and_reproduce_val_loss(params, tiny_run, tmp_path) -> None:
    """LeRobot's own PI05Policy.from_pretrained + PolicyProcessorPipeline, in a new process, give the
    validation loss the training run logged for that checkpoint."""
    import json
    import sys

    from conftest import vla, write_train_params

    work = tmp_path / "run"
    p = write_train_params(params, tiny_run, work, steps=8, decay_steps=8, save_every=0, eval_every=2, keep_last=1)
    assert vla("train", "--params", str(p)).returncode == 0
    logged = {int(s): float(v) for s, v in (line.split("\t") for line in
              (work / "live/plots/metrics/val/loss.tsv").read_text().splitlines()[1:])}
    for pointer in ("best_checkpoint.json", "last_checkpoint.json"):
        doc = json.loads((work / "train" / pointer).read_text())
        path = work / "train" / doc["path"] / "pretrained_model"
        out = run_bounded([sys.executable, "-c", RELOAD, str(path), str(tiny_run.norms)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        reloaded = json.loads(out.stdout.strip().splitlines()[-1])["val_loss"]
        assert reloaded == pytest.approx(logged[doc["step"]], rel=1e-6, abs=1e-7), pointer
        assert doc["val_loss"] == logged[doc["step"]]
    last = json.loads((work / "train" / "last_checkpoint.json").read_text())
    assert last["step"] == 8


def _flip_one_byte(path) -> None:
    """One bit pattern changed inside the tensor data: same size, still a valid safetensors file."""
    data = bytearray(path.read_bytes())
    data[len(data) - 64] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def flipped(tiny_run, tmp_path):
    """A copy of the tiny run's checkpoint (step directory) with one byte of its weights flipped."""
    import shutil

    step = tmp_path / "checkpoints" / tiny_run.checkpoint.parent.name
    shutil.copytree(tiny_run.checkpoint.parent, step)
    before = (step / "pretrained_model" / "model.safetensors").stat().st_size
    _flip_one_byte(step / "pretrained_model" / "model.safetensors")
    assert (step / "pretrained_model" / "model.safetensors").stat().st_size == before
    return step


def test_a_flipped_byte_is_refused_by_every_load(flipped, tiny_run) -> None:
    """Evaluation (load_checkpoint of the step or its pretrained_model) and policy.pretrained both
    refuse the damaged weights, naming the file; without the check the altered weights load silently."""
    weights = flipped / "pretrained_model" / "model.safetensors"
    assert "does not match its sha256" in verify_checkpoint(flipped)
    assert "does not match its sha256" in verify_checkpoint(flipped / "pretrained_model")
    for path in (flipped, flipped / "pretrained_model"):
        with pytest.raises(CheckpointError, match=rf"refusing to load this checkpoint: {weights} does not match"):
            load_checkpoint(path)
    from vla_pipeline.checkpoint.pretrained import load_pretrained_weights

    for source in (flipped, flipped / "pretrained_model", weights):
        with pytest.raises(CheckpointError, match=rf"refusing to start from {weights}: {weights} does not match"):
            load_pretrained_weights(load_checkpoint(tiny_run.checkpoint).policy, str(source))


def test_resume_skips_a_checkpoint_with_a_flipped_byte(flipped, capsys) -> None:
    from vla_pipeline.checkpoint.layout import read_run_state
    from vla_pipeline.checkpoint.resume import plan_resume

    run_dir = flipped.parent.parent
    plan = plan_resume(run_dir, read_run_state(flipped)["run_key"], "auto")
    assert plan.checkpoint is None and flipped in plan.discard
    assert "does not match its sha256" in capsys.readouterr().err


def test_the_policy_directory_carries_the_step_manifest_hashes(tiny_run) -> None:
    import json

    step = json.loads((tiny_run.checkpoint.parent / CHECKPOINT_MANIFEST_FILE).read_text())
    inner = json.loads((tiny_run.checkpoint / CHECKPOINT_MANIFEST_FILE).read_text())
    assert inner == {k.removeprefix("pretrained_model/"): v for k, v in step.items()
                     if k.startswith("pretrained_model/") and k != f"pretrained_model/{CHECKPOINT_MANIFEST_FILE}"}
    assert "model.safetensors" in inner and f"pretrained_model/{CHECKPOINT_MANIFEST_FILE}" in step
