"""Write a small, learnable LeKiwi-style demo dataset with LeRobot's own dataset writer.

The demo exists so that the whole pipeline (data -> fine-tune -> evaluate) can run offline on
a CPU in minutes. It therefore has to be

* in LeRobot's real on-disk format (v3.0: parquet + AV1 videos + meta/), written by
  ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize``;
* deterministic from a seed, so DVC stages are reproducible;
* learnable: the action is a smooth function of the state and the task, so a policy can beat
  the "hold the current joint positions" baseline.

Dynamics: every task has a fixed goal pose for the six arm joints. The arm relaxes towards it,
``q(t+1) = q(t) + ALPHA * (goal - q(t)) + noise``; the state is ``q(t)`` and the action is the
joint-position target ``q(t) + ALPHA_LEAD * (goal(t) - q(t))``, which leads the state towards the
goal. The gripper of ``GRIPPER_TASK`` follows a slow open/close sinusoid instead of a constant
goal. The base velocities are smooth per-episode sinusoids, independent of the arm; the action
is the command one frame ahead of the measured state.

Frames are drawn with numpy: the ``front`` camera shows a stick-figure arm whose link angles are
the joint angles, the ``wrist`` camera shows two finger bars rotated by ``wrist_roll`` and
separated by the gripper opening.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.faults import plant_fault
from vla_pipeline.errors import ConfigError
from vla_pipeline.params import int_list, param

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

ARM_JOINTS = (
    "arm_shoulder_pan.pos",
    "arm_shoulder_lift.pos",
    "arm_elbow_flex.pos",
    "arm_wrist_flex.pos",
    "arm_wrist_roll.pos",
    "arm_gripper.pos",
)
BASE_VELOCITIES = ("x.vel", "y.vel", "theta.vel")
LEKIWI_NAMES = ARM_JOINTS + BASE_VELOCITIES

CAMERAS = ("front", "wrist")

# Goal pose per task, in ARM_JOINTS order (degrees; gripper in [0, 100]).
TASK_GOALS: dict[str, tuple[float, ...]] = {
    "pick up the red cube": (30.0, 40.0, -50.0, 60.0, 0.0, 10.0),
    "place the cube in the bowl": (-45.0, 20.0, -20.0, 30.0, 90.0, 85.0),
    "wave to the camera": (0.0, -60.0, 70.0, -40.0, -120.0, 50.0),
    "open and close the gripper": (10.0, -10.0, 30.0, 0.0, 45.0, 50.0),
}
TASKS = tuple(TASK_GOALS)
GRIPPER_TASK = "open and close the gripper"
TASK_COLORS: dict[str, tuple[int, int, int]] = {
    "pick up the red cube": (220, 30, 30),
    "place the cube in the bowl": (30, 160, 60),
    "wave to the camera": (40, 80, 220),
    "open and close the gripper": (230, 180, 20),
}

ALPHA = 0.04  # fraction of the remaining distance to the goal the arm covers per frame
ALPHA_LEAD = 0.8  # how far the commanded joint target leads the state towards the goal
JOINT_NOISE_STD = 0.05  # degrees of process noise per frame
GRIPPER_WAVE_HZ = 0.5  # open/close frequency of GRIPPER_TASK
GRIPPER_WAVE_MEAN = 50.0
GRIPPER_WAVE_AMPLITUDE = 45.0

# Start poses are drawn uniformly in this sub-range of the joint limits.
START_LOW = np.array([-60.0, -60.0, -60.0, -60.0, -120.0, 0.0])
START_HIGH = np.array([60.0, 60.0, 60.0, 60.0, 120.0, 100.0])
JOINT_LOW = np.array([-90.0, -90.0, -90.0, -90.0, -150.0, 0.0])
JOINT_HIGH = np.array([90.0, 90.0, 90.0, 90.0, 150.0, 100.0])

# Base velocity amplitudes (m/s, m/s, deg/s) and frequency range (Hz).
BASE_AMPLITUDE = np.array([0.2, 0.2, 30.0])
BASE_FREQ_RANGE = (0.2, 0.8)


@dataclass(frozen=True)
class DemoConfig:
    """Where and how big the demo dataset is; ``seed`` fixes every number in it."""

    root: Path
    repo_id: str = "vla/lekiwi_demo"
    num_episodes: int = 24
    min_length: int = 40
    max_length: int = 90
    image_height: int = 96
    image_width: int = 128
    fps: int = 30
    seed: int = 0
    # a behavioural fault planted into some episodes (data/faults.py), for experiments on what bad data costs
    poison: str | None = None
    poison_episodes: tuple[int, ...] = ()
    contract: Path | None = None  # the contract the planter reads the joints and ranges from

    @classmethod
    def from_params(cls, p: dict) -> DemoConfig:
        ints = ("num_episodes", "min_length", "max_length", "image_height", "image_width", "fps", "seed")
        return cls(
            root=param(p, "demo.root", Path),
            repo_id=param(p, "demo.repo_id", str),
            **{k: param(p, f"demo.{k}", int) for k in ints},
            poison=param(p, "demo.poison", default=None),
            poison_episodes=tuple(param(p, "demo.poison_episodes", int_list, default=[])),
            contract=param(p, "dataset.contract", Path),
        )


@dataclass(frozen=True)
class Episode:
    """One simulated episode: its task and per-frame (T, 9) state and action arrays."""

    task: str
    state: np.ndarray
    action: np.ndarray


def demo_features(cfg: DemoConfig) -> dict[str, dict]:
    """LeRobot feature spec: 9-dim LeKiwi state/action and two video cameras."""
    vector = {"dtype": "float32", "shape": (len(LEKIWI_NAMES),), "names": list(LEKIWI_NAMES)}
    features: dict[str, dict] = {"observation.state": dict(vector), "action": dict(vector)}
    for camera in CAMERAS:
        features[f"observation.images.{camera}"] = {
            "dtype": "video",
            "shape": (cfg.image_height, cfg.image_width, 3),
            "names": ["height", "width", "channels"],
        }
    return features


def assign_tasks(rng: np.random.Generator, num_episodes: int) -> list[str]:
    """Task per episode: a shuffled round-robin, so every task appears once there are enough episodes."""
    tasks = [TASKS[i % len(TASKS)] for i in range(num_episodes)]
    order = rng.permutation(num_episodes)
    return [tasks[i] for i in order]


def goal_at(task: str, frame_index: int, fps: int) -> np.ndarray:
    """Arm goal pose of ``task`` at a frame; only ``GRIPPER_TASK``'s gripper goal moves with time."""
    goal = np.array(TASK_GOALS[task], dtype=np.float64)
    if task == GRIPPER_TASK:
        phase = 2.0 * np.pi * GRIPPER_WAVE_HZ * frame_index / fps
        goal[5] = GRIPPER_WAVE_MEAN - GRIPPER_WAVE_AMPLITUDE * np.cos(phase)
    return goal


def simulate_arm(rng: np.random.Generator, task: str, length: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 6) arm states and joint-position targets following the first-order goal dynamics."""
    q = rng.uniform(START_LOW, START_HIGH)
    noise = rng.normal(0.0, JOINT_NOISE_STD, size=(length, len(ARM_JOINTS)))
    states = np.empty((length, len(ARM_JOINTS)))
    actions = np.empty((length, len(ARM_JOINTS)))
    for t in range(length):
        goal = goal_at(task, t, fps)
        states[t] = q
        actions[t] = q + ALPHA_LEAD * (goal - q)
        q = np.clip(q + ALPHA * (goal - q) + noise[t], JOINT_LOW, JOINT_HIGH)
    return states, actions


def simulate_base(rng: np.random.Generator, length: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3) measured and commanded base velocities: smooth sinusoids, the command one frame ahead."""
    freq = rng.uniform(*BASE_FREQ_RANGE, size=len(BASE_VELOCITIES))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=len(BASE_VELOCITIES))
    scale = BASE_AMPLITUDE * rng.uniform(0.5, 1.0, size=len(BASE_VELOCITIES))
    times = np.arange(length + 1)[:, None] / fps
    velocity = scale * np.sin(2.0 * np.pi * freq * times + phase)
    return velocity[:-1], velocity[1:]


def simulate_episode(rng: np.random.Generator, task: str, length: int, fps: int) -> Episode:
    """Arm and base trajectories of one episode, concatenated in LEKIWI_NAMES order as float32."""
    arm_state, arm_action = simulate_arm(rng, task, length, fps)
    base_state, base_action = simulate_base(rng, length, fps)
    state = np.concatenate([arm_state, base_state], axis=1).astype(np.float32)
    action = np.concatenate([arm_action, base_action], axis=1).astype(np.float32)
    return Episode(task=task, state=state, action=action)


def simulate_episodes(cfg: DemoConfig) -> list[Episode]:
    """All episodes of the dataset, drawn from one numpy Generator seeded with ``cfg.seed``."""
    if not 1 <= cfg.min_length <= cfg.max_length:
        raise ConfigError(f"need 1 <= min_length <= max_length, got {cfg.min_length}, {cfg.max_length}")
    rng = np.random.default_rng(cfg.seed)
    tasks = assign_tasks(rng, cfg.num_episodes)
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=cfg.num_episodes)
    return [simulate_episode(rng, task, int(n), cfg.fps) for task, n in zip(tasks, lengths, strict=True)]


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre x and y coordinates, cached per image size."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return xs, ys


def draw_segment(
    image: np.ndarray, start: np.ndarray, end: np.ndarray, thickness: float, color: tuple[int, int, int]
) -> None:
    """Paint, in place, every pixel within ``thickness / 2`` of the segment start-end."""
    xs, ys = _pixel_grid(image.shape[0], image.shape[1])
    direction = end - start
    length_sq = max(float(direction @ direction), 1e-9)
    along = ((xs - start[0]) * direction[0] + (ys - start[1]) * direction[1]) / length_sq
    along = np.clip(along, 0.0, 1.0)
    dx = xs - (start[0] + along * direction[0])
    dy = ys - (start[1] + along * direction[1])
    image[dx * dx + dy * dy <= (thickness / 2.0) ** 2] = color


def _unit(angle_deg: float) -> np.ndarray:
    """Image-space unit vector for an angle measured clockwise from 'straight up'."""
    angle = np.deg2rad(angle_deg)
    return np.array([np.sin(angle), -np.cos(angle)])


def render_front(arm: np.ndarray, task: str, height: int, width: int) -> np.ndarray:
    """Side view of a stick-figure arm; link angles are the joint angles, plus a task-coloured marker."""
    pan, lift, elbow, wrist_flex, _, gripper = (float(v) for v in arm)
    image = np.full((height, width, 3), 235, dtype=np.uint8)
    size = float(min(height, width))
    thickness = max(1.5, size / 24.0)
    base = np.array([width / 2.0 + pan / 90.0 * width / 4.0, height * 0.9])
    half_base = size * 0.12 * np.array([np.cos(np.deg2rad(pan)), np.sin(np.deg2rad(pan))])
    draw_segment(image, base - half_base, base + half_base, thickness, (60, 60, 60))
    angles = np.cumsum([lift, elbow, wrist_flex])
    lengths = np.array([0.34, 0.28, 0.14]) * size
    joint = base
    for angle, length in zip(angles, lengths, strict=True):
        tip = joint + length * _unit(angle)
        draw_segment(image, joint, tip, thickness, (30, 50, 120))
        joint = tip
    spread = 5.0 + 35.0 * gripper / 100.0
    for sign in (-1.0, 1.0):
        finger_tip = joint + 0.12 * size * _unit(angles[-1] + sign * spread)
        draw_segment(image, joint, finger_tip, max(1.0, thickness * 0.6), (230, 120, 20))
    marker = max(2, int(size / 8))
    image[1 : 1 + marker, 1 : 1 + marker] = TASK_COLORS[task]
    return image


def render_wrist(arm: np.ndarray, height: int, width: int) -> np.ndarray:
    """Wrist view: two finger bars rotated by wrist_roll, their gap and the background set by the gripper."""
    roll, gripper = float(arm[4]), float(arm[5])
    opening = gripper / 100.0
    background = (40, int(40 + 150 * opening), 90)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    size = float(min(height, width))
    centre = np.array([width / 2.0, height / 2.0])
    direction = _unit(roll + 90.0)
    gap = size * (0.04 + 0.3 * opening)
    for sign in (-1.0, 1.0):
        start = centre + sign * gap * direction
        end = centre + sign * (gap + 0.3 * size) * direction
        draw_segment(image, start, end, max(2.0, size / 8.0), (240, 240, 240))
    return image


def _write_episode(dataset: LeRobotDataset, episode: Episode, cfg: DemoConfig) -> None:
    """Render and add every frame of one episode, then let LeRobot encode and save it."""
    for t in range(len(episode.state)):
        arm = episode.state[t, : len(ARM_JOINTS)]
        dataset.add_frame(
            {
                "observation.state": episode.state[t],
                "action": episode.action[t],
                "observation.images.front": render_front(
                    arm, episode.task, cfg.image_height, cfg.image_width
                ),
                "observation.images.wrist": render_wrist(arm, cfg.image_height, cfg.image_width),
                "task": episode.task,
            }
        )
    dataset.save_episode()


def make_demo_dataset(cfg: DemoConfig) -> Path:
    """Write the demo dataset to ``cfg.root`` (replacing whatever is there) and return the root.

    ``finalize()`` is required in LeRobot 0.4.2 (dataset format v3.0): it closes the parquet
    writers of data/ and flushes the buffered meta/episodes/ rows; before that the dataset cannot
    be read back (LeRobot then falls back to downloading the metadata from the hub).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when writing

    root = Path(cfg.root)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    episodes = simulate_episodes(cfg)
    dataset = LeRobotDataset.create(
        repo_id=cfg.repo_id,
        fps=cfg.fps,
        root=root,
        robot_type="lekiwi",
        features=demo_features(cfg),
        use_videos=True,
    )
    try:
        for episode in tqdm(episodes, desc="demo episodes", unit="ep"):
            _write_episode(dataset, episode, cfg)
    finally:
        dataset.finalize()
    sort_stats_file(root)
    if cfg.poison:
        plant_poison(cfg)
    return root


def plant_poison(cfg: DemoConfig) -> dict:
    """Plant ``cfg.poison`` into ``cfg.poison_episodes`` of the freshly written demo (its data files only)."""
    if cfg.contract is None or not cfg.poison_episodes:
        raise ConfigError("demo.poison needs demo.poison_episodes and dataset.contract")
    planted = plant_fault(Path(cfg.root), cfg.poison, cfg.poison_episodes, load_contract(cfg.contract),
                          np.random.default_rng(cfg.seed))
    log.info(f"planted {cfg.poison} into episodes {planted['episodes']} of {cfg.root}")
    return planted


def sort_stats_file(root: Path) -> None:
    """Rewrite meta/stats.json with sorted keys, so that identical data gives identical bytes.

    LeRobot aggregates the per-episode stats over a ``set`` of feature names, so the key order
    of stats.json (not its values) changes with Python's string-hash seed from run to run, and
    with it the DVC hash of the output.
    """
    path = root / "meta" / "stats.json"
    stats = json.loads(path.read_text())
    path.write_text(json.dumps(stats, indent=4, ensure_ascii=False, sort_keys=True))
