"""Fault injection: each corruption of the demo dataset is caught by the intended check, naming the
episode; the clean dataset passes; no corruption produces a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vla_pipeline.cli import main
from vla_pipeline.data.validation_report import load_report
from vla_pipeline.errors import ValidationError
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

from conftest import CONTRACT

WRIST = "videos/observation.images.wrist/chunk-000/file-000.mp4"


# ----------------------------------------------------------------------------- editing helpers
def _data_file(root: Path) -> Path:
    return sorted((root / "data").glob("**/*.parquet"))[0]


def _episodes_file(root: Path) -> Path:
    return sorted((root / "meta" / "episodes").glob("**/*.parquet"))[0]


def edit_parquet(path: Path, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    df = pd.read_parquet(path)
    result = fn(df)  # edits in place, or returns a new frame
    (df if result is None else result).to_parquet(path)


def edit_data(root: Path, fn) -> None:
    edit_parquet(_data_file(root), fn)


def edit_meta(root: Path, fn) -> None:
    edit_parquet(_episodes_file(root), fn)


def edit_info(root: Path, fn) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))


def rows(df: pd.DataFrame, episode: int) -> pd.Index:
    return df.index[df["episode_index"] == episode]


def set_vector(df: pd.DataFrame, key: str, row: int, col: int, value: float) -> None:
    values = [np.asarray(v, dtype=np.float32).copy() for v in df[key]]
    values[row][col] = value
    df[key] = values


# ----------------------------------------------------------------------------- corruptions
def nan_action(root):
    edit_data(root, lambda df: set_vector(df, "action", rows(df, 2)[3], 1, np.nan))


def inf_state(root):
    edit_data(root, lambda df: set_vector(df, "observation.state", rows(df, 3)[0], 0, np.inf))


def dropped_frame(root):
    edit_data(root, lambda df: df.drop(index=rows(df, 3)[4]).reset_index(drop=True))


def swapped_timestamps(root):
    def swap(df):
        a, b = rows(df, 1)[5], rows(df, 1)[6]
        df.loc[[a, b], "timestamp"] = df.loc[[b, a], "timestamp"].to_numpy()
    edit_data(root, swap)


def drifting_timestamps(root):
    def drift(df):
        r = rows(df, 5)
        df.loc[r, "timestamp"] = (df.loc[r, "timestamp"] * 1.05).astype(np.float32)
    edit_data(root, drift)


def wrong_fps(root):
    edit_info(root, lambda info: info.update(fps=15))


def old_codebase(root):
    edit_info(root, lambda info: info.update(codebase_version="v2.1"))


def unreadable_info(root):
    (root / "meta" / "info.json").write_text("{ not json")


def missing_camera_key(root):
    edit_info(root, lambda info: info["features"].pop("observation.images.wrist"))


def different_joint_order(root):
    def swap(info):
        names = info["features"]["action"]["names"]
        names[0], names[2] = names[2], names[0]
    edit_info(root, swap)


def names_shape_mismatch(root):
    edit_info(root, lambda info: info["features"]["observation.state"]["names"].pop())


def malformed_shape(root):
    edit_info(root, lambda info: info["features"]["action"].update(shape="nine"))


def five_dim_action(root):
    def shrink(df):
        values = [np.asarray(v, dtype=np.float32) for v in df["action"]]
        for r in rows(df, 4):
            values[r] = values[r][:5]
        df["action"] = values
    edit_data(root, shrink)


def null_state(root):
    def nullify(df):
        values = list(df["observation.state"])
        for r in rows(df, 1)[:3]:
            values[r] = None
        df["observation.state"] = values
    edit_data(root, nullify)


def joint_out_of_range(root):
    edit_data(root, lambda df: set_vector(df, "action", rows(df, 0)[5], 5, 150.0))


def missing_state_column(root):
    edit_data(root, lambda df: df.drop(columns=["observation.state"]))


def broken_global_index(root):
    def shift(df):
        df.loc[rows(df, 4), "index"] += 1000
    edit_data(root, shift)


def duplicated_frame_index(root):
    def dup(df):
        r = rows(df, 2)
        df.loc[r[6], "frame_index"] = df.loc[r[5], "frame_index"]
    edit_data(root, dup)


def episode_index_gap(root):
    for edit in (edit_data, edit_meta):
        edit(root, lambda df: df.__setitem__("episode_index", df["episode_index"].replace(5, 6)))


def meta_length_disagrees(root):
    def longer(df):
        df.loc[df["episode_index"] == 2, "length"] += 1
    edit_meta(root, longer)


def meta_overlap(root):
    def overlap(df):
        df.loc[df["episode_index"] == 3, "dataset_from_index"] -= 2
    edit_meta(root, overlap)


def missing_meta_episode(root):
    edit_meta(root, lambda df: df[df["episode_index"] != 5])


def missing_task(root):
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    data = pd.read_parquet(_data_file(root))
    used = int(data.loc[data["episode_index"] == 0, "task_index"].iloc[0])
    tasks[tasks["task_index"] != used].to_parquet(root / "meta" / "tasks.parquet")


def missing_video(root):
    (root / WRIST).unlink()


def truncated_video(root):
    path = root / WRIST
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def short_video(root):
    """A valid container that is too short: the episode spans in meta/episodes reach past its end."""
    def later(df):
        key = "videos/observation.images.wrist/to_timestamp"
        df.loc[df["episode_index"] == 5, key] += 5.0
    edit_meta(root, later)


# name -> (corruption, check that must catch it, episode it must name; None for dataset-level)
CORRUPTIONS: dict[str, tuple[Callable, str, int | None]] = {
    "nan_action": (nan_action, "finite", 2),
    "inf_state": (inf_state, "finite", 3),
    "dropped_frame": (dropped_frame, "frame_index", 3),
    "swapped_timestamps": (swapped_timestamps, "timestamps", 1),
    "wrong_fps": (wrong_fps, "fps", None),
    "old_codebase": (old_codebase, "codebase", None),
    "unreadable_info": (unreadable_info, "info_json", None),
    "missing_camera_key": (missing_camera_key, "contract_keys", None),
    "different_joint_order": (different_joint_order, "feature_names", None),
    "names_shape_mismatch": (names_shape_mismatch, "feature_names", None),
    "malformed_shape": (malformed_shape, "feature_names", None),
    "five_dim_action": (five_dim_action, "vector_shape", 4),
    "null_state": (null_state, "sequence_length", 1),
    "joint_out_of_range": (joint_out_of_range, "ranges", 0),
    "missing_state_column": (missing_state_column, "features_in_data", None),
    "broken_global_index": (broken_global_index, "global_index", 4),
    "duplicated_frame_index": (duplicated_frame_index, "frame_index", 2),
    "episode_index_gap": (episode_index_gap, "episode_bounds", 6),
    "meta_length_disagrees": (meta_length_disagrees, "episode_bounds", 2),
    "meta_overlap": (meta_overlap, "episode_bounds", 3),
    "missing_meta_episode": (missing_meta_episode, "episode_bounds", 5),
    "missing_task": (missing_task, "tasks", 0),
    "missing_video": (missing_video, "videos", None),  # the file holds every episode: a dataset-wide fault
    "truncated_video": (truncated_video, "videos", None),
    "short_video": (short_video, "videos", 5),
}


@pytest.fixture
def dataset(demo_dataset, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(demo_dataset, root)
    return root


def _validate(root: Path, tmp_path: Path, **kw) -> tuple[dict, str | None]:
    report_path = tmp_path / "report.json"
    try:
        validate_dataset(ValidateConfig(root, kw.pop("contract", CONTRACT), report_path, **kw))
        message = None
    except ValidationError as e:
        message = str(e)
    return json.loads(report_path.read_text()), message


def test_clean_dataset_passes(dataset, tmp_path) -> None:
    report, message = _validate(dataset, tmp_path, min_episode_length=10)
    assert message is None and report["ok"]
    assert all(c["status"] in ("pass", "warn") for c in report["checks"].values())
    assert report["summary"]["n_episodes"] == 6 and report["dataset_fingerprint"]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_caught_by_its_check(name, dataset, tmp_path) -> None:
    corrupt, check, episode = CORRUPTIONS[name]
    corrupt(dataset)
    report, message = _validate(dataset, tmp_path)
    assert not report["ok"] and message is not None
    assert report["checks"].get(check, {}).get("status") == "fail", report["checks"]
    found = [e for e in report["errors"] if e["check"] == check]
    assert any(e["episode"] == episode for e in found), found
    if episode is not None:
        assert episode in report["suggested_exclusions"]
        assert f"dataset.exclude_episodes: {report['suggested_exclusions']}" in message


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_cli_fails_with_one_screen_and_no_traceback(name, dataset, tmp_path, capsys) -> None:
    CORRUPTIONS[name][0](dataset)
    code = main(["validate", str(dataset), "--contract", str(CONTRACT), "--report", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.splitlines()) <= 45, err


@pytest.mark.parametrize("name", ["missing_video", "truncated_video"])
def test_a_fault_in_every_episode_is_one_dataset_error_without_exclusion_advice(name, dataset, tmp_path) -> None:
    CORRUPTIONS[name][0](dataset)
    report, message = _validate(dataset, tmp_path)
    assert report["dataset_wide"] == ["videos"] and report["suggested_exclusions"] == []
    first = report["errors"][0]
    assert first["check"] == "videos" and first["episode"] is None and "6 of 6 episodes" in first["message"]
    assert "exclude_episodes:" not in message
    assert message.splitlines()[2].startswith("  [videos] 6 of 6 episodes fail this check")


def test_excluded_episodes_pass_and_are_reported(dataset, tmp_path) -> None:
    nan_action(dataset)
    report, message = _validate(dataset, tmp_path, exclude_episodes=(2,))
    assert message is None and report["ok"]
    assert [e["episode"] for e in report["excluded"]] == [2]


def test_warnings_do_not_fail(dataset, tmp_path) -> None:
    def flatten_gripper(df):
        values = [np.asarray(v, dtype=np.float32).copy() for v in df["action"]]
        for r in rows(df, 2):
            values[r][5] = 42.0
        values[rows(df, 3)[4]][0] += 80.0
        df["action"] = values
    edit_data(dataset, flatten_gripper)
    report, message = _validate(dataset, tmp_path, min_episode_length=25)
    assert message is None and report["ok"]
    warned = {(w["check"], w["episode"]) for w in report["warnings"]}
    assert ("static_joints", 2) in warned
    assert ("action_jumps", 3) in warned
    assert any(c == "short_episodes" for c, _ in warned)


def test_duplicate_episodes_warn(tmp_path) -> None:
    from vla_pipeline.data.demo import DemoConfig, make_demo_dataset

    root = make_demo_dataset(DemoConfig(root=tmp_path / "eq", num_episodes=3, min_length=12, max_length=12,
                                        image_height=32, image_width=40))
    def copy_episode(df):
        values = list(df["action"])
        for a, b in zip(rows(df, 0), rows(df, 2), strict=True):
            values[b] = values[a]
        df["action"] = values
    edit_data(root, copy_episode)
    report, _ = _validate(root, tmp_path)
    assert any(w["check"] == "duplicate_episodes" and w["episode"] == 2 for w in report["warnings"])


def test_so101_contract_names_the_missing_joints(dataset, tmp_path) -> None:
    report, message = _validate(dataset, tmp_path, contract=CONTRACT.parent / "so101_arm.yaml")
    assert report["checks"]["feature_names"]["status"] == "fail"
    assert "shoulder_pan.pos" in message and "arm_shoulder_pan.pos" in message


def test_report_is_refused_when_stale_or_failed(dataset, tmp_path) -> None:
    _validate(dataset, tmp_path)
    assert load_report(tmp_path / "report.json", dataset)["ok"]
    nan_action(dataset)
    with pytest.raises(ValidationError, match="another version"):
        load_report(tmp_path / "report.json", dataset)
    _validate(dataset, tmp_path)
    with pytest.raises(ValidationError, match="failed"):
        load_report(tmp_path / "report.json", dataset)


def test_report_is_refused_for_another_contract_or_other_exclusions(dataset, tmp_path) -> None:
    _validate(dataset, tmp_path, exclude_episodes=(3,))
    report = tmp_path / "report.json"
    assert load_report(report, dataset, CONTRACT, (3,))["excluded_episodes"] == [3]
    with pytest.raises(ValidationError, match=r"made with dataset.exclude_episodes \[3\], not \[\]"):
        load_report(report, dataset, CONTRACT, ())
    other = tmp_path / "other.yaml"
    other.write_text(CONTRACT.read_text().replace("max_action_jump: 30", "max_action_jump: 20"))
    with pytest.raises(ValidationError, match="made against another contract"):
        load_report(report, dataset, other, (3,))


def test_contract_ranges_must_name_its_joints(dataset, tmp_path) -> None:
    """A range for a joint outside ``joints`` is a validation error of the contract (checked once the joints
    are the dataset's, so a typo in ``joints`` is named as such: tests/test_entry_point_messages.py)."""
    raw = yaml.safe_load(CONTRACT.read_text())
    raw["ranges"]["elbow"] = [0, 1]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    report, message = _validate(dataset, tmp_path, contract=tmp_path / "c.yaml")
    assert report["checks"]["feature_names"]["status"] == "fail" and report["checks"]["ranges"]["status"] == "skipped"
    assert "ranges name joints ['elbow'] that are not in its joints" in message
