"""Validation on recordings made the way other people make them (tests/realdata.py): each pattern gets
its diagnosis, printed in the first lines of `vla validate`, and nothing else is blamed.

Errors: a contract whose keys the dataset lacks (one contract error, the dataset's features by role,
a keys block; the checks that need the keys are skipped, never passed); videos in another directory
than info.json's template (named once, with the fix); video files absent for some episodes (those
episodes, with exclusion advice) or for all (one dataset-level error, no advice); exclusions that
leave too little; a contract with no camera. Warnings: info.json codec vs the files, task strings
in a bare ``__index_level_0__`` column, a joint whose action is offset from its state, wall-clock
timestamps (with the Δt distribution), an all-black and a frozen camera stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vla_pipeline.cli import main
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.data.tables import load_task_indices
from vla_pipeline.errors import ValidationError
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.report import format_report
from vla_pipeline.validate.run import validate_dataset

from realdata import (
    BIMANUAL_NAMES,
    TASKS,
    Recording,
    alter_info_codec,
    alter_move_videos,
    alter_remove_videos,
    alter_tasks_in_index_column,
    alter_wall_clock_timestamps,
    write_contract,
    write_recording,
)

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
LENGTHS = (18, 16, 20, 17)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("realdata")


@pytest.fixture(scope="module")
def so101(work) -> Path:
    """An SO-101-like set, one video file per episode and camera (as sets that grew over sessions have)."""
    return write_recording(work / "so101", Recording(lengths=LENGTHS, one_video_file_per_episode=True))


@pytest.fixture(scope="module")
def contract(work) -> Path:
    return write_contract(work / "so101.yaml")


@pytest.fixture
def copy(so101, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(so101, root)
    return root


def validate(root: Path, contract: Path, tmp_path: Path, *extra: str, capsys) -> tuple[int, list[str], dict]:
    """`vla validate`: exit code, the printed lines (stdout or stderr), the JSON report."""
    report = tmp_path / "report.json"
    capsys.readouterr()  # what writing the dataset printed
    code = main(["validate", str(root), "--contract", str(contract), "--report", str(report), *extra])
    captured = capsys.readouterr()
    text = captured.err if code else captured.out
    assert "Traceback" not in text
    return code, text.splitlines(), json.loads(report.read_text())


def first_lines(lines: list[str], n: int = 4) -> str:
    return "\n".join(lines[:n])


# ----------------------------------------------------------------------------- errors
def test_other_key_names_are_one_contract_error_with_the_keys_to_paste(work, tmp_path, capsys) -> None:
    root = write_recording(work / "keys", Recording(action_key="actions", state_key="state", cameras=("image",),
                                                    lengths=(12, 12)))
    code, lines, report = validate(root, write_contract(tmp_path / "c.yaml"), tmp_path, capsys=capsys)
    assert code == 1
    head = first_lines(lines, 3)
    assert "[contract_keys] contract 'so101_arm' does not fit this dataset" in head
    assert [e["check"] for e in report["errors"]] == ["contract_keys"]  # the dataset is not blamed
    message = report["errors"][0]["message"]
    assert "action 'action', state 'observation.state', camera 'front' 'observation.images.front'" in message
    assert "action/state candidates: 'state' float32 [6] (shoulder_pan.pos, shoulder_lift.pos" in message
    assert "'actions' float32 [6] (shoulder_pan.pos" in message and "... and 2 more" in message
    assert "cameras: 'image' video [24, 32, 3]" in message
    assert "keys:" in message and "  action: actions" in message and "  state: state" in message
    assert "    image: image" in message and "vla contract init" in message
    for name in ("feature_names", "vector_shape", "finite", "ranges", "videos", "calibration"):
        assert report["checks"][name]["status"] == "skipped", name
        assert "contract_keys" in report["checks"][name]["needs"]
    assert any(line.startswith("finite") and "skipped (needs: contract_keys)" in line for line in lines)
    # the pasted keys make it pass
    fixed = write_contract(tmp_path / "fixed.yaml", keys={"action": "actions", "state": "state",
                                                          "cameras": {"image": "image"}}, required_cameras=["image"])
    assert validate(root, fixed, tmp_path, capsys=capsys)[0] == 0


def test_contract_without_a_camera_is_refused(so101, tmp_path) -> None:
    camera_less = write_contract(tmp_path / "c.yaml", keys={"cameras": {}}, required_cameras=[])
    with pytest.raises(ValidationError, match="maps no camera .* Pi0.5 needs at least one camera"):
        validate_dataset(ValidateConfig(so101, camera_less, tmp_path / "r.json"))


def test_videos_in_another_directory_are_named_once_with_the_fix(copy, contract, tmp_path, capsys) -> None:
    alter_move_videos(copy, "video")
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 1
    videos = [e for e in report["errors"] if e["check"] == "videos"]
    assert len(videos) == 1 and videos[0]["episode"] is None  # not 8 "missing" files, one cause
    assert "8 video files that meta/info.json's video_path 'videos/{video_key}/chunk-{chunk_index:03d}/" in videos[0]["message"]
    assert f"`mv {copy / 'video'} {copy / 'videos'}`" in videos[0]["message"]
    assert "set video_path in meta/info.json to 'video/{video_key}/" in videos[0]["message"]
    assert "[videos] 8 video files" in first_lines(lines, 3)
    assert report["suggested_exclusions"] == [] and not any("exclude_episodes:" in line for line in lines)
    shutil.move(str(copy / "video"), str(copy / "videos"))  # the advised fix
    assert validate(copy, contract, tmp_path, capsys=capsys)[0] == 0


def test_absent_video_of_one_episode_is_that_episode(copy, contract, tmp_path, capsys) -> None:
    alter_remove_videos(copy, WRIST, [2])
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 1 and report["suggested_exclusions"] == [2] and report["dataset_wide"] == []
    assert "[videos] episode 2: video file videos/observation.images.wrist/chunk-000/file-002.mp4 (wrist) does not exist" \
        in first_lines(lines, 3)
    assert any(line.endswith("dataset.exclude_episodes: [2]") for line in lines)
    code, _, report = validate(copy, contract, tmp_path, "--exclude", "2", capsys=capsys)
    assert code == 0 and report["excluded_episodes"] == [2] and [e["episode"] for e in report["excluded"]] == [2]


def test_absent_videos_of_every_episode_are_one_dataset_error(copy, contract, tmp_path, capsys) -> None:
    alter_remove_videos(copy, FRONT, list(range(len(LENGTHS))))
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 1 and report["dataset_wide"] == ["videos"] and report["suggested_exclusions"] == []
    assert "[videos] 4 of 4 episodes fail this check: a fault of the whole dataset" in first_lines(lines, 3)
    assert sum(1 for e in report["errors"] if e["check"] == "videos" and e["episode"] is not None) == 4  # all kept
    assert not any("exclude_episodes:" in line for line in lines)


@pytest.mark.parametrize("exclude, match", [([0, 1, 2, 3], "excludes all 4 episodes: nothing is left"),
                                            ([0, 1, 2], "1 episode left after dataset.exclude_episodes"),
                                            ([7], r"names episodes \[7\] that the dataset does not have")])
def test_exclusions_that_leave_too_little_are_errors(so101, contract, tmp_path, exclude, match) -> None:
    with pytest.raises(ValidationError, match=match):
        validate_dataset(ValidateConfig(so101, contract, tmp_path / "r.json", exclude_episodes=tuple(exclude)))


def test_a_list_cut_on_screen_says_how_many_more(copy, contract, tmp_path, capsys) -> None:
    alter_remove_videos(copy, WRIST, [0, 1])
    alter_remove_videos(copy, FRONT, [0, 1])
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 1 and len([e for e in report["errors"] if e["check"] == "videos"]) == 4
    assert len([line for line in lines if line.startswith("  [videos] episode")]) == 4  # within the limit: all
    text = format_report(report, limit=2)
    assert len([line for line in text.splitlines() if line.startswith("  [videos] episode")]) == 2
    assert "  [videos] ... and 2 more (all in the JSON report)" in text


# ----------------------------------------------------------------------------- warnings
def test_codec_that_differs_from_info_json_warns(copy, contract, tmp_path, capsys) -> None:
    alter_info_codec(copy, WRIST, "h264")
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 0
    assert "[videos] 'observation.images.wrist': meta/info.json says codec 'h264', the files hold ['av1']" \
        in first_lines(lines, 2)


def test_tasks_in_a_bare_index_column_warn_and_are_read_as_strings(copy, contract, tmp_path, capsys) -> None:
    alter_tasks_in_index_column(copy)
    code, lines, report = validate(copy, contract, tmp_path, capsys=capsys)
    assert code == 0 and "[tasks] meta/tasks.parquet keeps the task strings in a bare '__index_level_0__'" \
        in first_lines(lines, 2)
    assert load_task_indices(copy) == {0: TASKS[0], 1: TASKS[1]}
    item = make_dataset(copy, load_contract(contract), [1], 4)[0]
    assert item["task"] == TASKS[1]  # LeRobot alone would give 1


def test_wall_clock_timestamps_warn_with_their_spacing_and_frames_are_read_by_position(
        work, tmp_path, capsys) -> None:
    clean = write_recording(work / "clock", Recording(fps=20, lengths=(30, 26)))
    root = tmp_path / "clock"
    shutil.copytree(clean, root)
    alter_wall_clock_timestamps(root, (0.050, 0.067))
    contract = write_contract(tmp_path / "c.yaml", fps=20)
    code, lines, report = validate(root, contract, tmp_path, capsys=capsys)
    assert code == 0
    head = first_lines(lines, 2)
    assert "[timestamps] timestamps are not 1/fps = 0.0500s apart in 2 of 2 episodes: a wall clock" in head
    spacing = report["warnings"][0]["value"]
    assert 0.050 <= spacing["min"] < spacing["median"] < spacing["max"] <= 0.067
    assert "LeRobot's own loader looks video frames up by these timestamps" in head
    # frame i is still the i-th picture: the same tensors as the recording with frame_index/fps timestamps
    c = load_contract(contract)
    altered, original = make_dataset(root, c, [0, 1], 4), make_dataset(clean, c, [0, 1], 4)
    for i in (0, 17, 29, 45):
        assert np.array_equal(altered[i]["observation.images.front"].numpy(),
                              original[i]["observation.images.front"].numpy())


def test_calibration_offset_black_and_frozen_streams_warn(work, contract, tmp_path, capsys) -> None:
    root = write_recording(work / "quirks", Recording(
        lengths=LENGTHS, offset_joints={"gripper.pos": (1.7, 1.7, 80.0, 20.0)},
        black=((WRIST, 2),), frozen=((FRONT, 3),)))
    code, lines, report = validate(root, contract, tmp_path, capsys=capsys)
    assert code == 0
    warned = {(w["check"], w["episode"], w["key"]) for w in report["warnings"]}
    assert warned == {("calibration", None, "gripper.pos"), ("camera_streams", 2, WRIST),
                      ("camera_streams", 3, FRONT)}
    text = "\n".join(lines[:5])
    assert "[camera_streams] episode 2: camera 'wrist'" in text and "is all black" in text
    assert "[camera_streams] episode 3: camera 'front'" in text and "a frozen stream" in text
    assert "[calibration] joint 'gripper.pos': its actions span [6" in text and "but its states span [0" in text


def test_clean_recordings_warn_about_nothing(so101, contract, tmp_path, capsys) -> None:
    code, lines, report = validate(so101, contract, tmp_path, capsys=capsys)
    assert code == 0 and report["warnings"] == [] and report["errors"] == []
    assert all(c["status"] == "pass" for c in report["checks"].values())


def test_one_arm_of_a_bimanual_set_is_selected_by_name(work, tmp_path, capsys) -> None:
    """The right arm sits after the left arm and hand (columns 17-23): the dataset items, the frozen
    stats and validation's range check all read those columns, by name, never the first seven."""
    from vla_pipeline.norms import NormsConfig, compute_norm_stats

    from tabular import column_array, load_frames

    root = write_recording(work / "bimanual", Recording(names=BIMANUAL_NAMES, action_key="actions", state_key="state",
                                                        cameras=("image",), lengths=(12, 12)))
    right = [f"right.joint_{i}.pos" for i in range(1, 8)]
    columns = [BIMANUAL_NAMES.index(j) for j in right]
    assert columns == list(range(17, 24))
    frames = load_frames(root, ["index", "episode_index", "actions", "state"])
    actions, states = column_array(frames, "actions"), column_array(frames, "state")
    # ranges that hold the right arm's actions exactly and not the first seven columns' (left arm)
    lo, hi = actions[:, columns].min(axis=0), actions[:, columns].max(axis=0)
    assert ((actions[:, :7] < lo) | (actions[:, :7] > hi)).any(axis=0).all()
    keys = {"action": "actions", "state": "state", "cameras": {"image": "image"}}
    contract = write_contract(tmp_path / "right.yaml", keys=keys, required_cameras=["image"], joints=right, units={},
                              ranges={j: [float(a), float(b)] for j, a, b in zip(right, lo, hi, strict=True)})
    code, lines, report = validate(root, contract, tmp_path, capsys=capsys)
    assert code == 0 and report["checks"]["ranges"]["status"] == "pass", lines[:5]

    item = make_dataset(root, load_contract(contract), [1], 3)[0]
    raw = make_dataset(root, load_contract(contract), [1], 3).dataset[12]
    assert np.array_equal(item["action"].numpy(), raw["actions"][:, columns].numpy())
    assert np.array_equal(item["observation.state"].numpy(), raw["state"][columns].numpy())

    doc, split = compute_norm_stats(NormsConfig(root, contract, tmp_path / "norms", val_episodes=(1,)))
    train = (frames["episode_index"] == 0).to_numpy()
    for role, values in (("action", actions), ("observation.state", states)):
        stats = doc["features"][role]
        assert np.allclose(stats["mean"], values[train][:, columns].mean(axis=0), atol=1e-6), role
        assert np.allclose(stats["max"], values[train][:, columns].max(axis=0), atol=1e-6), role

    narrow = write_contract(tmp_path / "narrow.yaml", keys=keys, required_cameras=["image"], joints=right, units={},
                            ranges={"right.joint_3.pos": [float(lo[2]), float(hi[2]) - 1.0]})
    code, lines, report = validate(root, narrow, tmp_path, capsys=capsys)
    assert code == 1 and {e["key"] for e in report["errors"]} == {"right.joint_3.pos"}
    assert max(e["value"] for e in report["errors"]) == pytest.approx(hi[2], abs=1e-4)
