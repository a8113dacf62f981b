"""What the behavioural checks read: the contract's joints of the action and the state, per episode,
with each joint's range width, computed once per validation run and shared by the checks of
``checks_motion`` and ``checks_session``. Pure numpy over all frames: no per-frame Python loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_pipeline.validate.findings import View, episode_starts

MIN_WIDTH = 1e-9  # a joint whose range is zero: widths divide


@dataclass(frozen=True)
class JointSeries:
    joints: tuple[str, ...]  # the contract's joints, the columns below
    action: np.ndarray  # (n, J) float64, every data row in file order
    state: np.ndarray | None  # (n, J), None when the dataset has no state with the contract's joints
    width: np.ndarray  # (J,) the contract's range width of each joint, else its robust span (p99 - p1) in the data
    starts: np.ndarray  # (E,) first row of each episode
    ends: np.ndarray  # (E,) one past its last row
    episodes: np.ndarray  # (E,) episode index of each
    frame: np.ndarray  # (n,) frame_index of each row
    fps: float

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def same_episode(self) -> np.ndarray:
        """(n - 1,) True where row i + 1 is in row i's episode (np.diff never crosses episodes with it)."""
        ep = np.repeat(np.arange(len(self.starts)), self.lengths)
        return ep[1:] == ep[:-1]


def joint_series(v: View) -> JointSeries | None:
    """The series of ``v``'s contract joints (cached on the view); None when the action lacks them."""
    if "joint_series" in v.cache:
        return v.cache["joint_series"]
    series = _make_series(v)
    v.cache["joint_series"] = series
    return series


def _make_series(v: View) -> JointSeries | None:
    c = v.contract
    pos_a = v.joint_positions(c.action_key)
    if pos_a is None or v.frames is None or c.action_key not in v.frames.vectors:
        return None
    action = v.frames.vectors[c.action_key][:, pos_a]
    pos_s = v.joint_positions(c.state_key) if c.state_key in v.frames.vectors else None
    state = v.frames.vectors[c.state_key][:, pos_s] if pos_s is not None else None
    starts, _ = episode_starts(v.frames)
    ends = np.append(starts[1:], v.frames.n)
    return JointSeries(tuple(c.joints), action, state, _widths(v, action), starts, ends,
                       v.frames["episode_index"][starts], v.frames["frame_index"], float(v.info["fps"]))


def _widths(v: View, action: np.ndarray) -> np.ndarray:
    """The contract's range width of each joint; for a joint it declares no range, its p1..p99 span."""
    declared = [v.contract.ranges.get(j) for j in v.contract.joints]
    width = np.array([np.nan if r is None else r[1] - r[0] for r in declared], dtype=np.float64)
    if np.isnan(width).any():  # the percentiles only when the contract leaves a joint without a range
        finite = action[np.isfinite(action).all(axis=1)]
        span = np.subtract(*np.percentile(finite, [99, 1], axis=0)) if len(finite) else np.zeros(action.shape[1])
        width = np.where(np.isnan(width), span, width)
    return np.maximum(width, MIN_WIDTH)
