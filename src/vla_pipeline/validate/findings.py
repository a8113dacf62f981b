"""What a check reports (errors and warnings, each with where: episode, frame, key), the view of the
dataset every check reads, and the helpers that map rows to episodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.tables import Frames, feature_names
from vla_pipeline.validate.config import QualityThresholds

MAX_OFFENDERS = 5  # lines per check on screen ("... and N more" after them; the JSON report has every one)


MIN_EPISODES = 2  # a train/validation split needs one episode on each side


@dataclass
class Finding:
    check: str
    message: str
    episode: int | None = None
    frame: int | None = None
    key: str | None = None
    value: Any = None
    expected: Any = None
    frames: list[int] | None = None  # [first, last] frame of the episode the finding covers
    suggestion: str | None = None  # "exclude" (the episode) or "trim" (keep frames [first, last] of ``trim``)
    trim: list[int] | None = None  # with suggestion "trim": the frames to keep


@dataclass
class Findings:
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    def error(self, check: str, message: str, **where) -> None:
        self.errors.append(Finding(check, message, **_plain(where)))

    def warn(self, check: str, message: str, **where) -> None:
        self.warnings.append(Finding(check, message, **_plain(where)))


def _plain(where: dict) -> dict:
    """numpy scalars -> python, so the report is JSON."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in where.items()}


@dataclass
class View:
    root: Path
    info: dict
    contract: Contract
    frames: Frames | None = None
    episodes: dict[str, np.ndarray] | None = None
    tasks: dict[int, str] | None = None
    min_episode_length: int = 1
    decode_samples: int = 0
    exclude_episodes: tuple[int, ...] = ()
    contract_path: Path | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    cache: dict = field(default_factory=dict)  # what several checks compute once (behaviour.joint_series)
    probes: dict = field(default_factory=dict)  # video path -> VideoProbe | Exception | None (absent)

    @property
    def dt(self) -> float:
        return 1.0 / float(self.info["fps"])

    def names(self, key: str) -> list[str]:
        return feature_names(self.info, key)

    def joint_positions(self, key: str) -> list[int] | None:
        names = self.names(key)
        return [names.index(j) for j in self.contract.joints] if all(j in names for j in self.contract.joints) else None


def episodes_of(frames: Frames, rows: np.ndarray) -> list[int]:
    return sorted(set(frames["episode_index"][rows].tolist()))


def episode_starts(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """First row of each run of equal episode_index, and the run each row belongs to."""
    ep = frames["episode_index"]
    new = np.ones(frames.n, dtype=bool)
    new[1:] = ep[1:] != ep[:-1]
    starts = np.nonzero(new)[0]
    return starts, np.cumsum(new) - 1
