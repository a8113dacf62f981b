"""Validation's dry run: sampled frames go through the train stage's decode and frame-cache paths and are
held to the video's own frames and the table rows, then one tiny Pi0.5 step runs. A channel-first
declaration (LeRobot reads it right) passes and reaches the policy as [3, H, W]; a declaration that
does not match the videos, or a data path that hands the policy other pixels or other joints, is a
finding naming the feature and the frame, never a traceback."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_pipeline.cli import main
from vla_pipeline.data.metadata import camera_shapes
from vla_pipeline.data.samples import ArmOnlyDataset
from vla_pipeline.errors import ValidationError
from vla_pipeline.train.dry_run import DryRunConfig, make_dry_run_check, pick_rows
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

from conftest import REPO
from realdata import Recording, alter_declare_channel_first, edit_info, write_contract, write_recording

FRONT, WRIST = "observation.images.front", "observation.images.wrist"


@pytest.fixture(scope="module")
def chw_set(tmp_path_factory) -> Path:
    """Cameras declared [3, H, W] with names [channel, height, width], one video file per episode."""
    root = write_recording(tmp_path_factory.mktemp("chw") / "so101",
                           Recording(lengths=(14, 12, 16, 13), one_video_file_per_episode=True))
    alter_declare_channel_first(root)
    return root


@pytest.fixture(scope="module")
def contract(tmp_path_factory) -> Path:
    return write_contract(tmp_path_factory.mktemp("contract") / "so101.yaml")


def run_params(params: dict, root: Path, *, resize: bool = True) -> dict:
    p = copy.deepcopy(params)
    p["dataset"]["root"] = str(root)
    p["frame_cache"]["resize"] = resize
    return p


def dry_validate(root: Path, contract: Path, tmp_path: Path, params: dict, *, resize: bool = True):
    cfg = ValidateConfig(root, contract, tmp_path / "report.json")
    with contextlib.suppress(ValidationError):  # the report says why
        validate_dataset(cfg, make_dry_run_check(DryRunConfig.from_params(run_params(params, root, resize=resize))))
    return json.loads((tmp_path / "report.json").read_text())


def dry_run_errors(report: dict) -> list[dict]:
    return [e for e in report["errors"] if e["check"] == "dry_run"]


@pytest.mark.parametrize("resize", [True, False], ids=["cache_resized", "cache_native"])
def test_a_channel_first_camera_reaches_the_policy_as_three_by_h_by_w(chw_set, contract, tmp_path, params, resize):
    report = dry_validate(chw_set, contract, tmp_path, params, resize=resize)
    assert report["ok"], report["errors"]
    assert report["checks"]["dry_run"]["status"] == "pass"
    assert report["checks"]["dry_run"]["frames"] == 3 * 4  # first, middle and last frame of each episode
    from vla_pipeline.data.contract import load_contract

    shapes = camera_shapes(chw_set, load_contract(contract))
    assert set(shapes.values()) == {(3, 24, 32)}  # not (32, 3, 24): what reading [3, 24, 32] as HWC gives


def test_a_declaration_unlike_the_videos_is_named_with_declared_and_observed(chw_set, contract, tmp_path, params):
    root = tmp_path / "swapped"
    shutil.copytree(chw_set, root)
    edit_info(root, lambda info: info["features"][WRIST].__setitem__("shape", [3, 32, 24]))  # the videos are 24x32
    report = dry_validate(root, contract, tmp_path, params)
    (error,) = dry_run_errors(report)
    assert WRIST in error["message"] and "[3, 32, 24]" in error["message"], error["message"]
    assert "Traceback" not in error["message"]


def test_a_camera_lerobot_would_misread_is_refused_with_its_reading(chw_set, contract, tmp_path, params):
    root = tmp_path / "misread"
    shutil.copytree(chw_set, root)
    edit_info(root, lambda info: info["features"][FRONT].__setitem__("names", ["height", "width", "channels"]))
    report = dry_validate(root, contract, tmp_path, params)
    (error,) = report["errors"]  # named by its own check; the dry run, which needs it, is skipped
    assert error["check"] == "camera_features" and error["value"] == [3, 24, 32], error
    assert FRONT in error["message"] and "LeRobot reads it as channel-last: C=32, H=3, W=24" in error["message"], error
    assert report["checks"]["dry_run"] == {"status": "skipped", "needs": ["camera_features"], "errors": 0,
                                           "warnings": 0}


def test_a_data_path_that_hands_the_policy_the_next_frame_is_caught(chw_set, contract, tmp_path, params, monkeypatch):
    original = ArmOnlyDataset.__getitem__

    def next_frames_images(self, idx):  # a planted off-by-one: the images of the following frame
        item, later = original(self, idx), original(self, min(idx + 1, len(self) - 1))
        return {**item, **{k: v for k, v in later.items() if k.startswith("observation.images.")}}

    monkeypatch.setattr(ArmOnlyDataset, "__getitem__", next_frames_images)
    (error,) = dry_run_errors(dry_validate(chw_set, contract, tmp_path, params))
    assert "differs from the video's own frame" in error["message"] and error["episode"] == 0, error


def test_a_data_path_that_selects_other_joints_is_caught(chw_set, contract, tmp_path, params, monkeypatch):
    original = ArmOnlyDataset.__init__

    def reversed_state(self, *args, **kwargs):  # a planted selection bug: the state's joints reversed
        original(self, *args, **kwargs)
        self.state_idx = self.state_idx[::-1]

    monkeypatch.setattr(ArmOnlyDataset, "__init__", reversed_state)
    (error,) = dry_run_errors(dry_validate(chw_set, contract, tmp_path, params))
    assert "'observation.state' is" in error["message"] and "table row holds" in error["message"], error


def test_the_frame_cache_path_is_held_to_the_decode_path(chw_set, contract, tmp_path, params, monkeypatch):
    from vla_pipeline.data import frame_cache

    original = frame_cache.compute_resized_frames

    def flipped(frames, shape):  # a planted cache bug: frames stored upside down
        return original(torch.flip(frames, dims=[-2]), shape)

    monkeypatch.setattr(frame_cache, "compute_resized_frames", flipped)
    (error,) = dry_run_errors(dry_validate(chw_set, contract, tmp_path, params))
    assert "between the decode path and the frame-cache path" in error["message"], error


def test_a_large_dataset_is_sampled_evenly_and_excluded_episodes_never(tmp_path):
    class View:
        exclude_episodes = (3,)
        episodes = {"episode_index": np.arange(40), "dataset_from_index": np.arange(40) * 10,
                    "dataset_to_index": np.arange(40) * 10 + 10}

    rows = pick_rows(View(), 12)
    assert len(rows) == 12 and 3 not in rows and {0, 39} <= set(rows)
    assert rows[0] == [0, 4, 9] and rows[39] == [390, 394, 399]


def test_vla_validate_ends_with_the_dry_run_and_says_how_long_it_took(chw_set, contract, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["validate", str(chw_set), "--contract", str(contract), "--report", str(report)]) == 0
    checks = json.loads(report.read_text())["checks"]
    assert list(checks)[-1] == "dry_run" and checks["dry_run"]["status"] == "pass"
    assert "seconds" not in checks["dry_run"]  # the report is a DVC output: equal runs write equal bytes
    printed = capsys.readouterr()
    assert "dry run: 12 sampled frames read through the decode and frame-cache paths equal the source" in printed.out
    assert re.search(r"dry run: 12 sampled frames and one training step in \d+\.\d\d s", printed.err)
    assert main(["validate", str(chw_set), "--contract", str(contract), "--report", str(report), "--no-dry-run"]) == 0
    assert "dry_run" not in json.loads(report.read_text())["checks"]


def test_the_repository_params_run_the_dry_run_in_the_validate_stage():
    import yaml

    assert yaml.safe_load((REPO / "params.yaml").read_text())["validate"]["dry_run"] is True


def test_a_run_with_another_tokenizer_is_not_held_to_the_local_tokenizers_prompt_length(params):
    p = copy.deepcopy(params)
    p["policy"].update(tokenizer="google/paligemma-3b-pt-224", tokenizer_max_length=16)
    assert DryRunConfig.from_params(p).policy.tokenizer_max_length >= 200  # LeRobot's default window
    p["policy"]["tokenizer"] = "local"
    assert DryRunConfig.from_params(p).policy.tokenizer_max_length == 16  # the run's own tokenizer: its window
