"""A LeRobot ``Robot`` without hardware: its observations are the frames of one recorded episode.

Frame i is shown until the robot has executed i actions (one frame per action, the dataset's own
clock), then the next; after the last frame it keeps showing the last one and ``done`` is set. Each
observation is what a real robot's ``get_observation()`` returns (one float per motor name, an
HxWx3 uint8 image per camera) plus the ``episode_index``/``frame_index`` it shows, so a server
started with ``--noise-seed`` draws the noise ``vla evaluate`` draws for that frame. Every action
received is kept (``executed``), with the frame it answered. Works with LeRobot's async robot
client and ``lerobot-record`` (``--robot.type=vla_replay --robot.root=... --robot.episode=...``).
"""

from __future__ import annotations

from functools import cached_property

import torch
from lerobot.robots.robot import Robot
from lerobot.utils.constants import OBS_IMAGES

from vla_pipeline.data.features import read_cameras
from vla_pipeline.data.lerobot import RunDataset
from vla_pipeline.data.metadata import VIDEO_BACKEND
from vla_pipeline.data.tables import camera_keys, feature_names, load_info
from vla_pipeline.deploy.config_replay import ROBOT_TYPE, ReplayRobotConfig
from vla_pipeline.deploy.policy import EPISODE_KEY, FRAME_KEY
from vla_pipeline.errors import ConfigError


class ReplayRobot(Robot):
    config_class = ReplayRobotConfig
    name = ROBOT_TYPE

    def __init__(self, config: ReplayRobotConfig):
        super().__init__(config)
        self.config = config
        info = load_info(config.root)
        self.motors = feature_names(info, config.state_key)
        self.action_names = feature_names(info, config.action_key)
        self.video_keys = [k for k in camera_keys(info) if k.startswith(f"{OBS_IMAGES}.")]
        self.shapes = {k.removeprefix(f"{OBS_IMAGES}."): camera.robot_shape
                       for k, camera in read_cameras(info, self.video_keys).items()}
        self.cameras: dict = {}  # no camera objects: frames come from the dataset
        self.dataset = None
        self.frames: list[int] = []
        self.position = 0  # index into frames of the frame shown now
        self.executed: list[tuple[int, dict[str, float]]] = []  # (frame shown, action received)
        self.shown: list[int] = []  # frame index of every observation returned

    @cached_property
    def observation_features(self) -> dict:
        return {**{m: float for m in self.motors}, **self.shapes}

    @cached_property
    def action_features(self) -> dict:
        return {a: float for a in self.action_names}

    @property
    def is_connected(self) -> bool:
        return self.dataset is not None

    @property
    def done(self) -> bool:
        return len(self.executed) >= len(self.frames)  # an action for every frame

    def connect(self, calibrate: bool = True) -> None:
        cfg = self.config
        self.dataset = RunDataset(cfg.root, [cfg.episode], self.video_keys, video_backend=VIDEO_BACKEND)
        episodes = self.dataset.meta.episodes
        if not 0 <= cfg.episode < len(episodes):
            raise ConfigError(f"--robot.episode={cfg.episode}: {cfg.root} has episodes 0..{len(episodes) - 1}")
        self.frames = list(range(episodes[cfg.episode]["dataset_from_index"], episodes[cfg.episode]["dataset_to_index"]))

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        item = self.dataset[self.frames[self.position]]
        obs = {m: float(v) for m, v in zip(self.motors, item[self.config.state_key].tolist(), strict=True)}
        for key in self.video_keys:
            image = item[key]  # 3xHxW float in [0, 1], decoded from uint8
            obs[key.removeprefix(f"{OBS_IMAGES}.")] = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        obs[EPISODE_KEY], obs[FRAME_KEY] = int(item["episode_index"]), int(item["frame_index"])
        self.shown.append(obs[FRAME_KEY])
        return obs

    def send_action(self, action: dict) -> dict:
        self.executed.append((self.position, {k: float(v) for k, v in action.items()}))
        self.position = min(self.position + 1, len(self.frames) - 1)
        return action

    def disconnect(self) -> None:
        self.dataset = None
