"""The pure helpers of benchmarks/full_size_rehearsal.py: byte accounting with each inode once, the
span sums, the stage-process lifetimes, the checkpoint pointer and the params edit (no pipeline run)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "full_size_rehearsal.py"


@pytest.fixture(scope="module")
def rehearsal():
    spec = importlib.util.spec_from_file_location("full_size_rehearsal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def write(path: Path, size: int, byte: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(byte * size)
    return path


def test_a_hard_link_counts_once_in_a_tree_and_in_the_union(rehearsal, tmp_path) -> None:
    a = write(tmp_path / "store" / "w.bin", 1 << 20)
    os.link(a, tmp_path / "store" / "again.bin")
    (tmp_path / "artifacts").mkdir()
    os.link(a, tmp_path / "artifacts" / "w.bin")
    (tmp_path / "cache").mkdir()
    shutil.copy(a, tmp_path / "cache" / "w.bin")
    (tmp_path / "store" / "link").symlink_to(a)
    used = rehearsal.usage({"store": tmp_path / "store", "artifacts": tmp_path / "artifacts",
                            "dvc cache": tmp_path / "cache"})
    one = a.stat().st_blocks * 512
    assert used == {"store": one, "artifacts": one, "dvc cache": one, "all": 2 * one}


def test_a_checkpoint_with_a_copy_uses_twice_what_it_needs_and_a_hard_link_nothing_more(rehearsal, tmp_path) -> None:
    ckpt = tmp_path / "store" / "runs" / "k" / "checkpoints" / "000002"
    weights = write(ckpt / "pretrained_model" / "model.safetensors", 1 << 20, b"a")
    other = write(tmp_path / "store" / "runs" / "k" / "checkpoints" / "000004" / "model.safetensors", 1 << 20, b"a")
    write(tmp_path / "artifacts" / "unrelated.bin", 1 << 20, b"b")  # same size, other bytes: not a copy
    (tmp_path / "cache").mkdir()
    os.link(weights, tmp_path / "cache" / "linked")  # the same inode: not a copy
    places = {"store": tmp_path / "store", "artifacts": tmp_path / "artifacts", "dvc cache": tmp_path / "cache"}
    first = rehearsal.checkpoints_report(tmp_path / "store", places)[0]
    assert first["copies"] == 0 and first["ratio"] == pytest.approx(1.0, abs=0.01)  # the other checkpoint's file is its own
    shutil.copy(weights, tmp_path / "artifacts" / "copy.bin")
    second = rehearsal.checkpoints_report(tmp_path / "store", places)[0]
    assert second["copies"] == 1 and second["ratio"] == pytest.approx(2.0, abs=0.01)
    assert second["copies_disk_bytes_by_place"] == {"artifacts/copy.bin": weights.stat().st_blocks * 512}
    assert other.exists()


def test_only_depth_0_spans_of_known_kinds_are_summed(rehearsal, tmp_path) -> None:
    log = tmp_path / "phases.jsonl"
    assert rehearsal.read_spans(log) is None
    log.write_text("\n".join([
        json.dumps({"kind": "saving", "what": "ckpt", "seconds": 2.0, "depth": 0, "pid": 1}),
        json.dumps({"kind": "hashing", "what": "ckpt", "seconds": 1.5, "depth": 1, "pid": 1}),  # inside saving
        json.dumps({"kind": "hashing", "what": "data", "seconds": 0.5, "depth": 0, "pid": 2}),
        "not json",
    ]) + "\n")
    assert rehearsal.read_spans(log) == {"hashing": 0.5, "saving": 2.0, "loading": 0.0, "copying": 0.0}


def test_stage_lifetimes_are_a_union_and_forks_are_not_stage_processes(rehearsal) -> None:
    # 10 and 12 started by DVC (pid 5); 11 forked by 10 (it shares 10's command line)
    sampler = rehearsal.GroupSampler(pgid=1, stages={10: [0.0, 4.0, 5], 11: [3.0, 5.0, 10], 12: [7.0, 8.0, 5]})
    assert sampler.stage_seconds() == pytest.approx(6.0)
    assert sampler.stage_processes() == 2


def test_a_checkpoint_counts_once_its_pointer_names_a_finished_step(rehearsal, tmp_path) -> None:
    run = tmp_path / "runs" / "abc"
    (run / "checkpoints" / "000002.tmp").mkdir(parents=True)
    assert rehearsal.first_checkpoint(tmp_path) is None
    (run / "checkpoints" / "000002.tmp").rename(run / "checkpoints" / "000002")
    assert rehearsal.first_checkpoint(tmp_path) is None  # no pointer yet
    (run / "last_checkpoint.json").write_text(json.dumps({"path": "checkpoints/000002"}))
    assert rehearsal.first_checkpoint(tmp_path) == str(run / "checkpoints" / "000002")


def test_params_edit_keeps_comments_and_refuses_an_unknown_key(rehearsal, tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  steps: null  # the phase's\n  peft:\n    preset: null\n")
    rehearsal.edit_params(params, {"train.steps": 4, "train.peft.preset": "expert"})
    text = params.read_text()
    assert "# the phase's" in text
    assert yaml.safe_load(text) == {"train": {"steps": 4, "peft": {"preset": "expert"}}}
    with pytest.raises(rehearsal.RehearsalError, match="train.stpes"):
        rehearsal.edit_params(params, {"train.stpes": 4})


def test_full_size_preset_is_lora_expert_in_bfloat16_at_batch_1(rehearsal) -> None:
    keys = rehearsal.preset("full", 4, 10)
    assert keys["policy.size"] == "full" and keys["policy.dtype"] == "bfloat16"
    assert keys["train.peft.preset"] == "expert" and keys["train.batch_size"] == 1
    assert (keys["train.save_every"], keys["train.eval_every"], keys["evaluate.stride"]) == (2, 2, 10)
    assert "policy.size" not in rehearsal.preset("tiny", 20, 10)
