"""The demo dataset: LeRobot-readable, LeKiwi-shaped, deterministic and learnable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vla_pipeline.data import demo
from vla_pipeline.data.demo import (
    ALPHA_LEAD,
    ARM_JOINTS,
    GRIPPER_TASK,
    LEKIWI_NAMES,
    TASK_GOALS,
    TASKS,
    DemoConfig,
    make_demo_dataset,
)

HEIGHT, WIDTH = 32, 40
MIN_LENGTH, MAX_LENGTH = 20, 30
NUM_ARM = len(ARM_JOINTS)


def small_config(root: Path, seed: int = 0) -> DemoConfig:
    return DemoConfig(
        root=root,
        num_episodes=4,
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        image_height=HEIGHT,
        image_width=WIDTH,
        seed=seed,
    )


def read_frames(root: Path) -> pd.DataFrame:
    """All rows of the dataset's data/ parquet files, in index order."""
    files = sorted((root / "data").rglob("*.parquet"))
    assert files, f"no parquet files under {root / 'data'}"
    return pd.concat([pd.read_parquet(f) for f in files]).sort_values("index").reset_index(drop=True)


def column(frames: pd.DataFrame, name: str) -> np.ndarray:
    return np.stack(frames[name].to_numpy()).astype(np.float64)


def load_dataset(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("vla/lekiwi_demo", root=root, video_backend="pyav")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(small_config(tmp_path_factory.mktemp("demo") / "ds"))


@pytest.fixture(scope="module")
def frames(demo_root: Path) -> pd.DataFrame:
    return read_frames(demo_root)


@pytest.fixture(scope="module")
def task_names(demo_root: Path) -> dict[int, str]:
    tasks = pd.read_parquet(demo_root / "meta" / "tasks.parquet")
    return {int(index): str(name) for name, index in zip(tasks.index, tasks["task_index"], strict=True)}


def test_reads_back_with_lerobot(demo_root: Path) -> None:
    dataset = load_dataset(demo_root)
    assert dataset.num_episodes == 4
    assert dataset.meta.robot_type == "lekiwi"
    assert dataset.fps == 30
    for key in ("observation.state", "action"):
        assert dataset.meta.features[key]["names"] == list(LEKIWI_NAMES)
        assert tuple(dataset.meta.features[key]["shape"]) == (9,)
    item = dataset[len(dataset) - 1]
    assert item["observation.state"].shape == (9,)
    assert item["action"].shape == (9,)
    for camera in ("front", "wrist"):
        assert item[f"observation.images.{camera}"].shape == (3, HEIGHT, WIDTH)
    assert item["task"] in TASKS


def test_tasks_and_episode_lengths(frames: pd.DataFrame, task_names: dict[int, str]) -> None:
    assert len(set(frames["task_index"])) >= 3
    assert set(task_names.values()) <= set(TASKS)
    lengths = frames.groupby("episode_index").size()
    assert len(lengths) == 4
    assert lengths.between(MIN_LENGTH, MAX_LENGTH).all()
    assert lengths.nunique() > 1
    assert (frames.groupby("episode_index")["task_index"].nunique() == 1).all()


def test_every_task_appears_with_enough_episodes() -> None:
    cfg = DemoConfig(root=Path("unused"), num_episodes=len(TASKS) + 1)
    assert {episode.task for episode in demo.simulate_episodes(cfg)} == set(TASKS)


def test_same_seed_same_data_and_other_seed_differs(
    demo_root: Path, frames: pd.DataFrame, tmp_path: Path
) -> None:
    again_root = make_demo_dataset(small_config(tmp_path / "again", seed=0))
    again = read_frames(again_root)
    for key in ("observation.state", "action"):
        np.testing.assert_array_equal(column(again, key), column(frames, key))
    for name in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet"):
        assert (again_root / name).read_bytes() == (demo_root / name).read_bytes(), name
    stats_keys = list(json.loads((demo_root / "meta" / "stats.json").read_text()))
    assert stats_keys == sorted(stats_keys)  # LeRobot's own order depends on the string-hash seed
    other = demo.simulate_episodes(small_config(tmp_path / "unused", seed=1))
    other_state = np.concatenate([episode.state for episode in other])
    same_shape = other_state.shape == column(frames, "observation.state").shape
    assert not same_shape or not np.allclose(other_state, column(frames, "observation.state"))


def test_action_leads_state_towards_task_goal(frames: pd.DataFrame, task_names: dict[int, str]) -> None:
    """action - state == ALPHA_LEAD * (goal - state): a function of state and task, far from 'hold'."""
    state = column(frames, "observation.state")[:, :NUM_ARM]
    action = column(frames, "action")[:, :NUM_ARM]
    goals = np.array([TASK_GOALS[task_names[int(i)]] for i in frames["task_index"]])
    joints = np.ones_like(state, dtype=bool)
    joints[:, 5] = [task_names[int(i)] != GRIPPER_TASK for i in frames["task_index"]]
    lead, delta = (goals - state)[joints], (action - state)[joints]
    gain = float(lead @ delta / (lead @ lead))
    residual = delta - gain * lead
    assert gain == pytest.approx(ALPHA_LEAD, rel=1e-3)
    assert np.abs(residual).max() < 1e-2
    assert np.abs(delta).mean() > 1.0  # the "hold current joints" baseline is clearly wrong


def test_arm_converges_towards_goal(frames: pd.DataFrame, task_names: dict[int, str]) -> None:
    for _, episode in frames.groupby("episode_index"):
        goal = np.array(TASK_GOALS[task_names[int(episode["task_index"].iloc[0])]])[:5]
        state = column(episode, "observation.state")[:, :5]
        assert np.abs(goal - state[-1]).sum() < np.abs(goal - state[0]).sum()


def test_base_velocities_vary_and_command_leads(frames: pd.DataFrame) -> None:
    for _, episode in frames.groupby("episode_index"):
        state = column(episode, "observation.state")[:, NUM_ARM:]
        action = column(episode, "action")[:, NUM_ARM:]
        assert (state.std(axis=0) > 1e-3).all()
        np.testing.assert_allclose(action[:-1], state[1:], atol=1e-6)


def test_front_frames_follow_the_arm(demo_root: Path, frames: pd.DataFrame) -> None:
    dataset = load_dataset(demo_root)
    episode = frames[frames["episode_index"] == 0]
    first, last = int(episode["index"].iloc[0]), int(episode["index"].iloc[-1])
    start = column(episode, "observation.state")[0, :NUM_ARM]
    end = column(episode, "observation.state")[-1, :NUM_ARM]
    assert np.abs(start - end).max() > 5.0
    first_image = dataset[first]["observation.images.front"].numpy()
    last_image = dataset[last]["observation.images.front"].numpy()
    assert np.abs(first_image - last_image).mean() > 0.01


def test_renderers_encode_pose() -> None:
    task = TASKS[0]
    pose = np.array(TASK_GOALS[task])
    front = demo.render_front(pose, task, 48, 64)
    assert front.shape == (48, 64, 3) and front.dtype == np.uint8
    np.testing.assert_array_equal(front, demo.render_front(pose, task, 48, 64))
    bent = pose + np.array([0.0, 30.0, -30.0, 0.0, 0.0, 0.0])
    assert (demo.render_front(bent, task, 48, 64) != front).any(axis=-1).mean() > 0.02
    wrist = demo.render_wrist(pose, 48, 64)
    rolled = pose + np.array([0.0, 0.0, 0.0, 0.0, 60.0, 0.0])
    opened = pose + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 60.0])
    for changed in (rolled, opened):
        assert (demo.render_wrist(changed, 48, 64) != wrist).any(axis=-1).mean() > 0.02


def test_existing_root_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "stale.txt").write_text("old")
    cfg = DemoConfig(
        root=root, num_episodes=1, min_length=5, max_length=5, image_height=HEIGHT, image_width=WIDTH
    )
    assert make_demo_dataset(cfg) == root
    assert not (root / "stale.txt").exists()
    assert len(read_frames(root)) == 5


def test_invalid_lengths_rejected() -> None:
    with pytest.raises(ValueError):
        demo.simulate_episodes(DemoConfig(root=Path("unused"), min_length=10, max_length=5))


def test_demo_poison_plants_its_fault_into_the_named_episodes_only(tmp_path):
    """demo.poison (issue 29's dvc exp pair): the fault is in the data of the named episodes, nowhere else."""
    from vla_pipeline.data.contract import load_contract

    from conftest import CONTRACT

    cfg = DemoConfig(root=tmp_path / "demo", num_episodes=4, min_length=20, max_length=24, image_height=32,
                     image_width=40, poison="action_is_state", poison_episodes=(1, 2), contract=CONTRACT)
    make_demo_dataset(cfg)
    frames = pd.concat(pd.read_parquet(f) for f in sorted((cfg.root / "data").rglob("*.parquet")))
    arm = len(load_contract(CONTRACT).joints)
    for e, rows in frames.groupby("episode_index"):
        action, state = (np.stack(rows[k].to_numpy())[:, :arm] for k in ("action", "observation.state"))
        assert np.array_equal(action, state) == (e in (1, 2)), f"episode {e}"
