"""The fault planters (vla_pipeline.data.faults): each plants what it says into exactly the chosen
episodes of a dataset copy, and leaves the schema, every other column, the episode lengths and the
contract's ranges as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.faults import (
    FAULT_KINDS,
    Episode,
    FaultError,
    Layout,
    compute_state_not_following,
    plant_fault,
)
from vla_pipeline.data.features import vector_dims
from vla_pipeline.data.tables import feature_names, load_frames_raw, load_info

from conftest import CONTRACT

CHOSEN = [1, 4]


@pytest.fixture
def contract():
    return load_contract(CONTRACT)


@pytest.fixture
def copy(demo_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(demo_dataset, tmp_path / "demo"))


def episodes(root: Path, contract) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """episode -> (action, state) of the contract's joints in frame order, read as validation reads them."""
    info, keys = load_info(root), (contract.action_key, contract.state_key)
    frames = load_frames_raw(root, vector_dims(info, keys))
    cols = {k: contract.select_indices(feature_names(info, k), k) for k in keys}
    out = {}
    for e in np.unique(frames["episode_index"]).tolist():
        rows = np.nonzero(frames["episode_index"] == e)[0]
        rows = rows[np.argsort(frames["frame_index"][rows])]
        out[e] = tuple(frames.vectors[k][rows][:, cols[k]] for k in keys)
    return out


def plant(copy: Path, contract, kind: str, chosen=CHOSEN, seed: int = 0, **options):
    before = episodes(copy, contract)
    report = plant_fault(copy, kind, chosen, contract, np.random.default_rng(seed), **options)
    return before, episodes(copy, contract), report


def planted(report: dict, e: int) -> dict:
    return next(r for r in report["planted"] if r["episode"] == e)


def joint(contract, record: dict) -> int:
    return contract.joints.index(record["joints"][0])


def widths(contract) -> np.ndarray:
    return np.array([contract.ranges[j][1] - contract.ranges[j][0] for j in contract.joints])


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_only_the_chosen_episodes_change_and_the_files_stay_valid(kind, copy, demo_dataset, contract):
    chosen = list(range(6)) if kind == "drift" else CHOSEN
    before, after, report = plant(copy, contract, kind, chosen)
    assert report["episodes"] == chosen and [r["episode"] for r in report["planted"]] == chosen
    for e in before:
        same = all(np.array_equal(b, a) for b, a in zip(before[e], after[e], strict=True))
        assert same == (e not in chosen or (kind == "drift" and e == 0)), (kind, e)  # drift grows from 0
        assert len(after[e][0]) == len(before[e][0])
    for name in (p.relative_to(demo_dataset) for p in demo_dataset.glob("data/*/*.parquet")):
        clean, dirty = pq.read_table(demo_dataset / name), pq.read_table(copy / name)
        assert dirty.schema.equals(clean.schema, check_metadata=True)
        others = [c for c in clean.column_names if c not in (contract.action_key, contract.state_key)]
        assert dirty.select(others).equals(clean.select(others))
    low, high = np.array([contract.ranges[j] for j in contract.joints]).T
    for action, _ in after.values():
        assert ((action >= low) & (action <= high)).all(), kind


def test_action_is_state_and_action_lag(copy, contract, tmp_path):
    _, after, _ = plant(copy, contract, "action_is_state")
    for e in CHOSEN:
        np.testing.assert_array_equal(after[e][0], after[e][1])
    lag = Path(shutil.copytree(copy.parent / "demo", tmp_path / "lag"))
    before, after, _ = plant(lag, contract, "action_lag", frames=5)
    for e in CHOSEN:
        action, state = after[e]
        np.testing.assert_array_equal(action[5:], state[:-5])
        np.testing.assert_array_equal(action[:5], np.repeat(state[:1], 5, axis=0))


def test_frozen_state_holds_the_state_while_the_action_moves(copy, contract):
    before, after, report = plant(copy, contract, "frozen_state", length=17)
    for e in CHOSEN:
        first, last = planted(report, e)["frames"]
        state = after[e][1]
        assert last - first + 1 == 17 and first > 0 and last < len(state) - 1
        assert (state[first: last + 1] == state[first]).all() and not (state[last + 1] == state[first]).all()
        assert np.ptp(after[e][0][first: last + 1], axis=0).max() > 0  # the action moves meanwhile
        np.testing.assert_array_equal(after[e][0], before[e][0])


def test_dead_joint_and_state_not_following(copy, contract, tmp_path):
    before, after, report = plant(copy, contract, "dead_joint")
    for e in CHOSEN:
        j = joint(contract, planted(report, e))
        assert np.ptp(after[e][0][:, j]) == 0 and np.ptp(after[e][1][:, j]) == 0
        assert np.ptp(before[e][0][:, j]) > 0
    other = Path(shutil.copytree(copy.parent / "demo", tmp_path / "follow"))
    before, after, report = plant(other, contract, "state_not_following")
    for e in CHOSEN:
        j = joint(contract, planted(report, e))
        np.testing.assert_array_equal(after[e][0], before[e][0])  # the action is untouched
        assert np.ptp(after[e][1][:, j]) < 0.02 * widths(contract)[j] < np.ptp(after[e][0][:, j])


def test_saturation_pins_a_joint_at_a_limit_and_an_action_at_its_maximum(copy, contract, tmp_path):
    _, after, report = plant(copy, contract, "saturation")
    for e in CHOSEN:
        record = planted(report, e)
        j, (first, last) = joint(contract, record), record["frames"]
        assert record["value"] in contract.ranges[contract.joints[j]]
        assert (last - first + 1) / len(after[e][0]) >= 0.84
        for arr in after[e]:
            assert (arr[first: last + 1, j] == record["value"]).all()
    other = Path(shutil.copytree(copy.parent / "demo", tmp_path / "max"))
    before, after, report = plant(other, contract, "saturation_action")
    maximum = np.max([a.max(axis=0) for a, _ in before.values()], axis=0)
    for e in CHOSEN:
        record = planted(report, e)
        j, (first, last) = joint(contract, record), record["frames"]
        assert np.isclose(record["value"], maximum[j]) and (last - first + 1) / len(after[e][0]) >= 0.94
        assert np.allclose(after[e][0][first: last + 1, j], maximum[j])
        np.testing.assert_array_equal(after[e][1], before[e][1])


def test_glitch_spikes_single_frames_and_wraparound_jumps_and_stays(copy, contract, tmp_path):
    before, after, report = plant(copy, contract, "glitch")
    for e in CHOSEN:
        record = planted(report, e)
        j, frames = joint(contract, record), record["frames"]
        for arr, clean in zip(after[e], before[e], strict=True):
            moved = np.nonzero(arr[:, j] != clean[:, j])[0]
            assert moved.tolist() == frames
            assert (np.abs(arr[frames, j] - clean[frames, j]) >= 0.29 * widths(contract)[j]).all()
    other = Path(shutil.copytree(copy.parent / "demo", tmp_path / "wrap"))
    before, after, report = plant(other, contract, "wraparound")
    for e in CHOSEN:
        record = planted(report, e)
        j, k = joint(contract, record), record["frames"][0]
        for arr, clean in zip(after[e], before[e], strict=True):
            shift = arr[:, j] - clean[:, j]
            assert np.allclose(shift[:k], 0) and np.allclose(shift[k:], shift[k], atol=1e-3)
            assert abs(shift[k]) >= 0.5 * widths(contract)[j]


def test_idle_ends_hold_the_first_and_last_pose(copy, contract):
    _, after, report = plant(copy, contract, "idle_ends", seconds=0.2)
    for e in CHOSEN:
        record, n = planted(report, e), len(after[e][0])
        hold = min(6, (n - 10) // 2)  # 0.2 s at 30 fps, as far as 10 moving frames are left
        assert record["head"] == record["tail"] == hold and record["frames"] == [0, hold - 1, n - hold, n - 1]
        for arr in after[e]:
            assert (arr[:hold] == arr[hold]).all() and (arr[-hold:] == arr[-hold - 1]).all()


def test_scale_mismatch_converts_the_angular_joints(copy, contract):
    before, after, _ = plant(copy, contract, "scale_mismatch")
    angular = [i for i, j in enumerate(contract.joints) if contract.units[j] == "deg"]
    for e in CHOSEN:
        for arr, clean in zip(after[e], before[e], strict=True):
            np.testing.assert_allclose(arr[:, angular], clean[:, angular] * np.pi / 180, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(arr[:, -1], clean[:, -1])  # the gripper is in percent


def test_near_duplicate_copies_another_episode_with_tiny_noise(copy, contract):
    before, after, report = plant(copy, contract, "near_duplicate")
    for e in CHOSEN:
        source = planted(report, e)["source"]
        lengths = {c: len(before[c][0]) for c in before if c not in CHOSEN}
        assert source not in CHOSEN and abs(lengths[source] - len(before[e][0])) == min(
            abs(m - len(before[e][0])) for m in lengths.values())  # one of the closest length
        n, m = len(after[e][0]), lengths[source]
        for arr, src in zip(after[e], before[source], strict=True):
            at = np.linspace(0, m - 1, n)  # the whole source at the episode's length
            expected = np.column_stack([np.interp(at, np.arange(m), src[:, j]) for j in range(src.shape[1])])
            diff = np.abs(arr - expected) / widths(contract)
            assert 0 < diff.mean() < 0.005 and diff.max() < 0.01


def test_drift_grows_across_the_episodes(copy, contract):
    before, after, report = plant(copy, contract, "drift", list(range(6)))
    offsets = [r["offset"] for r in report["planted"]]
    j = joint(contract, report["planted"][0])
    assert offsets[0] == 0 and (np.all(np.diff(offsets) > 0) or np.all(np.diff(offsets) < 0))
    assert abs(offsets[-1]) >= 0.1 * widths(contract)[j]
    for e, offset in enumerate(offsets):
        np.testing.assert_allclose(after[e][0][:, j] - before[e][0][:, j], offset, atol=1e-3)


def test_a_planted_dataset_still_loads_with_lerobot(copy, contract):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    plant(copy, contract, "action_is_state")
    dataset = LeRobotDataset("vla/faulty", root=copy, video_backend="pyav")
    rows = dataset.hf_dataset.with_format("numpy")
    chosen = np.isin(rows["episode_index"], CHOSEN)
    action, state = np.stack(rows["action"]), np.stack(rows["observation.state"])
    assert (action[chosen] == state[chosen]).all() and not (action[~chosen] == state[~chosen]).all()
    assert dataset.num_frames == len(action) and dataset[0]["action"].shape == (9,)


def test_unknown_faults_and_episodes_are_refused(copy, contract):
    with pytest.raises(FaultError, match="unknown fault"):
        plant_fault(copy, "gremlins", [0], contract, np.random.default_rng(0))
    with pytest.raises(FaultError, match="not in"):
        plant_fault(copy, "dead_joint", [99], contract, np.random.default_rng(0))


def test_a_state_cannot_fail_to_follow_an_action_that_does_not_move():
    lay = Layout(("j",), np.array([0]), np.array([0]), np.array([0.0]), np.array([1.0]), np.array([False]),
                 ((0, 0),), 30.0)
    still = Episode(np.full((20, 1), 0.5), np.linspace(0.4, 0.5, 20)[:, None])
    with pytest.raises(FaultError, match="moves"):
        compute_state_not_following(still, lay, np.random.default_rng(0))
