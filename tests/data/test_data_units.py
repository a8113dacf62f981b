"""Dataset access on a small LeRobot-written recording (tests/realdata.py: 3 short episodes, 24x32
videos) and on hand-made files: raw frame tables, the fingerprint by hand, the local-root guard,
and LeRobot's dataset as a run opens it (only the run's episodes and cameras, frames looked up by
frame_index/fps, the contract's joints by name, seeded augmentation). tests/data/test_data.py does the
same on the demo dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline.data.augment import AugmentConfig, apply_seeded, compute_sample_seed, make_image_transforms
from vla_pipeline.data.contract import Contract
from vla_pipeline.data.lerobot import _frame_timestamps, make_dataset
from vla_pipeline.data.metadata import camera_shapes, load_metadata, require_local_root
from vla_pipeline.data.samples import ArmOnlyDataset
from vla_pipeline.data.tables import feature_names, load_info, load_rows_by_index
from vla_pipeline.errors import ContractError, TrainInputError
from vla_pipeline.provenance import compute_dataset_fingerprint

from realdata import (
    SO101_JOINTS,
    TASKS,
    Recording,
    alter_tasks_in_index_column,
    alter_wall_clock_timestamps,
    write_recording,
)
from tabular import column_array, load_frames

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
LENGTHS = (6, 5, 7)
JOINTS = ("gripper.pos", "elbow_flex.pos")  # dataset positions 5 and 2


def contract(cameras: dict[str, str] | None = None) -> Contract:
    return Contract(name="arm", action_key="action", state_key="observation.state",
                    cameras=cameras if cameras is not None else {"wrist": WRIST}, joints=JOINTS, ranges={}, fps=30)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    return write_recording(tmp_path_factory.mktemp("data") / "rec", Recording(lengths=LENGTHS))


@pytest.fixture
def copy(recording, tmp_path) -> Path:
    shutil.copytree(recording, tmp_path / "rec")
    return tmp_path / "rec"


# ----------------------------------------------------------------------------- raw tables
def test_info_and_feature_names(recording) -> None:
    info = load_info(str(recording))
    assert info == json.loads((recording / "meta" / "info.json").read_text())
    assert feature_names(info, "action") == list(SO101_JOINTS)
    grouped = {"features": {"x": {"names": {"arm": ["a", "b"], "hand": ["c"]}}, "y": {"names": None}, "z": {}}}
    assert feature_names(grouped, "x") == ["a", "b", "c"]
    assert feature_names(grouped, "y") == [] and feature_names(grouped, "z") == []


def _part(path: Path, index: list[int], episode: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"index": index, "episode_index": episode, "v": [[float(i), -float(i)] for i in index]}).to_parquet(path)


def test_rows_of_every_file_ordered_by_global_index(tmp_path) -> None:
    _part(tmp_path / "data" / "chunk-000" / "file-001.parquet", [0, 1], [0, 0])
    _part(tmp_path / "data" / "chunk-000" / "file-000.parquet", [3, 2], [1, 1])
    rows = load_rows_by_index(tmp_path, {"v": 2})
    assert rows["index"].tolist() == [0, 1, 2, 3] and rows["episode_index"].tolist() == [0, 0, 1, 1]
    assert rows["v"].dtype == np.float64 and rows["v"].tolist() == [[0, 0], [1, -1], [2, -2], [3, -3]]
    with pytest.raises(FileNotFoundError) as e:
        load_rows_by_index(tmp_path / "nothing", {"v": 2})
    assert str(e.value) == f"no parquet files under {tmp_path / 'nothing' / 'data'}"


def test_fingerprint_by_hand(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "sub" / "b.bin").write_bytes(b"B")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "cache").write_bytes(b"ignored")
    (tmp_path / "sub" / ".tmp").write_bytes(b"ignored")
    expected = hashlib.sha256(b"a.txt" + hashlib.sha256(b"A").digest() + b"sub/b.bin" + hashlib.sha256(b"B").digest())
    assert compute_dataset_fingerprint(str(tmp_path)) == expected.hexdigest()
    (tmp_path / "sub" / "b.bin").rename(tmp_path / "sub" / "c.bin")  # the same content under another name
    assert compute_dataset_fingerprint(tmp_path) != expected.hexdigest()


def test_a_local_root_needs_its_meta_files(copy) -> None:
    assert require_local_root(str(copy)) == copy
    (copy / "meta" / "tasks.parquet").unlink()
    shutil.rmtree(copy / "meta" / "episodes")
    with pytest.raises(TrainInputError) as e:
        require_local_root(copy)
    assert str(e.value) == (f"{copy} is not a complete LeRobotDataset v3.0 root: ['meta/tasks.parquet', "
                            f"'meta/episodes'] missing; check dataset.root, then run `vla validate {copy} --contract "
                            f"...`")
    with pytest.raises(TrainInputError, match="is not a complete LeRobotDataset"):
        load_metadata(copy)


def test_metadata_reads_task_strings_from_a_bare_column(copy) -> None:
    alter_tasks_in_index_column(copy)
    meta = load_metadata(copy)
    assert list(meta.tasks.index) == list(TASKS) and meta.repo_id == "local/rec"


def test_frame_timestamps_are_frame_index_over_fps() -> None:
    import datasets

    hf = datasets.Dataset.from_dict({"frame_index": [0, 1, 2, 7]})
    out = _frame_timestamps(hf, 30)
    assert out.dtype == np.float32 and out.tolist() == np.array([0, 1 / 30, 2 / 30, 7 / 30], dtype=np.float32).tolist()


def test_camera_shapes_are_channels_first(recording) -> None:
    assert camera_shapes(recording, contract({"wrist": WRIST, "top": FRONT})) == {
        "observation.images.wrist": (3, 24, 32), "observation.images.top": (3, 24, 32)}


# ----------------------------------------------------------------------------- the run's dataset
def test_items_carry_the_contracts_joints_by_name_for_the_run_episodes(recording) -> None:
    frames = load_frames(recording)
    action, state = column_array(frames, "action"), column_array(frames, "observation.state")
    ds = make_dataset(recording, contract(), [2, 0], chunk_size=3)
    assert ds.episodes == [0, 2] and len(ds) == LENGTHS[0] + LENGTHS[2] and ds.dataset.repo_id == "local/rec"
    assert ds.frames == [*range(0, 6), *range(11, 18)]  # absolute indices of episodes 0 and 2
    for idx, g, pads in ((0, 0, [False] * 3), (5, 5, [False, True, True]), (6, 11, [False] * 3),
                         (12, 17, [False, True, True])):
        item = ds[idx]
        assert set(item) == {ACTION, OBS_STATE, f"{ACTION}_is_pad", "task", "episode_index", "frame_index",
                             "observation.images.wrist"}
        end = g + pads.count(False) - 1
        expected = action[[min(g + k, end) for k in range(3)]][:, [5, 2]]
        assert torch.allclose(item[ACTION], torch.tensor(expected, dtype=torch.float32))
        assert torch.allclose(item[OBS_STATE], torch.tensor(state[g, [5, 2]], dtype=torch.float32))
        assert item[f"{ACTION}_is_pad"].tolist() == pads
        episode = int(frames.loc[g, "episode_index"])
        assert item["task"] == TASKS[episode % 2] and int(item["episode_index"]) == episode
        assert int(item["frame_index"]) == int(frames.loc[g, "frame_index"])
        assert item["observation.images.wrist"].shape == (3, 24, 32)


def test_only_the_run_cameras_are_opened(copy) -> None:
    shutil.rmtree(copy / "videos" / FRONT)  # an unused camera may be absent
    ds = make_dataset(copy, contract({"wrist": WRIST}), [1], chunk_size=2)
    assert FRONT not in ds.dataset.meta.info["features"] and WRIST in ds.dataset.meta.info["features"]
    assert "observation.images.wrist" in ds[0]
    both = make_dataset(copy.parent / "rec", contract({"wrist": WRIST}), [0], chunk_size=2)
    assert both.dataset.meta.video_keys == [WRIST]


def test_a_missing_video_of_a_run_episode_is_named(copy) -> None:
    for path in (copy / "videos" / WRIST).rglob("*.mp4"):
        path.unlink()
    with pytest.raises(TrainInputError) as e:
        make_dataset(copy, contract(), [2, 1], chunk_size=2)
    path = copy / "videos" / WRIST / "chunk-000" / "file-000.mp4"
    assert str(e.value) == (f"episode 1: video file {path} ({WRIST}) does not exist; restore it, or add the episode to "
                            f"dataset.exclude_episodes and re-run `dvc repro` (validate reports every such file)")


def test_episodes_without_rows_are_named(recording) -> None:
    with pytest.raises(TrainInputError) as e:
        make_dataset(recording, contract(), [0, 9, 7], chunk_size=2)
    assert str(e.value) == f"episodes [7, 9] have no rows in {recording}/data; run `vla validate`"


def test_unreadable_data_files_are_a_train_input_error(copy) -> None:
    shutil.rmtree(copy / "data")
    with pytest.raises(TrainInputError) as e:
        make_dataset(copy, contract(), [0], chunk_size=2)
    assert str(e.value).startswith(f"cannot read the data files of {copy} (")
    assert str(e.value).endswith("); run `vla validate`")


def test_frames_are_looked_up_by_frame_index_not_a_wall_clock(copy) -> None:
    reference = make_dataset(copy.parent / "rec", contract(), [1], chunk_size=2)
    alter_wall_clock_timestamps(copy)  # 50-67 ms between frames at 30 fps: LeRobot's lookup would fail
    ds = make_dataset(copy, contract(), [1], chunk_size=2)
    for i in (0, 4):
        item = ds[i]
        assert int(item["frame_index"]) == i and torch.equal(item["observation.images.wrist"], reference[i]["observation.images.wrist"])
    hf = ds.dataset.hf_dataset.with_format("numpy")
    frame_index = np.concatenate([np.arange(n) for n in LENGTHS])
    assert np.asarray(hf["timestamp"]).tolist() == (frame_index / 30).astype(np.float32).tolist()


def test_the_lookup_tolerance_is_the_contracts(recording) -> None:
    c = contract()
    strict = Contract(**{**c.__dict__, "timestamp_tolerance_s": 1e-5})
    assert make_dataset(recording, strict, [0], chunk_size=2).dataset.tolerance_s == 1e-5
    assert make_dataset(recording, c, [0], chunk_size=4).dataset.delta_timestamps == {"action": [0, 1 / 30, 2 / 30,
                                                                                               3 / 30]}


def test_augmentation_is_seeded_per_sample_and_epoch(recording) -> None:
    transform = make_image_transforms(AugmentConfig(enable=True, brightness=(0.3, 1.7), contrast=None))
    plain = make_dataset(recording, contract(), [1, 2], chunk_size=2)
    ds = make_dataset(recording, contract(), [1, 2], chunk_size=2, augment=transform, augment_seed=5)
    raw = plain[3]["observation.images.wrist"]
    seeded = apply_seeded(transform, [raw], compute_sample_seed(5, 0, ds.frames[3]))[0]
    assert torch.equal(ds[3]["observation.images.wrist"], seeded) and not torch.equal(seeded, raw)
    assert torch.equal(ds[3]["observation.images.wrist"], ds[3]["observation.images.wrist"])  # reproducible
    ds.set_epoch(2)
    assert ds.epoch == 2
    assert torch.equal(ds[3]["observation.images.wrist"],
                       apply_seeded(transform, [raw], compute_sample_seed(5, 2, ds.frames[3]))[0])
    assert torch.equal(ds[3][ACTION], plain[3][ACTION])  # only the images are augmented
    unseeded = make_dataset(recording, contract(), [1, 2], chunk_size=2, augment=transform)  # seed 0 by default
    expected = apply_seeded(transform, [raw], compute_sample_seed(0, 0, ds.frames[3]))[0]
    assert torch.equal(unseeded[3]["observation.images.wrist"], expected)
    direct = ArmOnlyDataset(plain.dataset, contract(), [1, 2], augment=transform)
    assert torch.equal(direct[3]["observation.images.wrist"], expected)


def test_a_joint_the_dataset_lacks_is_named_with_its_key(recording) -> None:
    ds = make_dataset(recording, contract(), [0], chunk_size=2)
    missing = Contract(**{**contract().__dict__, "joints": ("gripper.pos", "wrist")})
    with pytest.raises(ContractError, match=r"joint 'wrist' is not among the dataset's names for 'action'"):
        ArmOnlyDataset(ds.dataset, missing, [0])
    ds.dataset.meta.info["features"]["observation.state"]["names"] = ["gripper.pos", "other"]
    with pytest.raises(ContractError, match=r"joint 'elbow_flex.pos' is not among the dataset's names for 'observation.state'"):
        ArmOnlyDataset(ds.dataset, contract(), [0])
