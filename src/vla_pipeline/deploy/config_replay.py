"""The configuration of the replay robot (``--robot.type=vla_replay``), registered with LeRobot's
robot configs on import. LeRobot finds the robot class, ``ReplayRobot``, in ``deploy/replay.py``
by its naming rule (``config_replay`` -> ``replay``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lerobot.robots.config import RobotConfig

ROBOT_TYPE = "vla_replay"


@RobotConfig.register_subclass(ROBOT_TYPE)
@dataclass(kw_only=True)
class ReplayRobotConfig(RobotConfig):
    root: Path  # a LeRobotDataset v3.0 root
    episode: int = 0  # the episode whose frames the robot shows
    state_key: str = "observation.state"  # the dataset key whose names are the robot's motors
    action_key: str = "action"  # the dataset key whose names are the robot's actions
