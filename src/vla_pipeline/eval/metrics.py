"""Offline action metrics: pure math on predicted chunks and the demonstrations that follow them.

Two views of the same predictions:

* **chunks**: every predicted chunk against the ground-truth actions that follow its frame
  (MSE, per-joint MAE / RMSE / max error, baselines, per task and per episode);
* **executed**: what the robot would run. It replans every ``stride`` frames and executes the
  first ``stride`` actions of each chunk, so each episode gets one action per frame. Smoothness
  (mean |Δa|, jerk), the jump at chunk boundaries and clipping are measured on it, beside the
  same quantities of the demonstration.

Steps past an episode's end (``pad``) never count. Units are the contract's (degrees, percent);
differences are per control step (multiply by fps, fps³ for per second, per second³).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Predictions:
    """One row per evaluated frame (N frames, chunks of C steps, D joints)."""

    pred: np.ndarray  # (N, C, D) predicted actions, contract units
    target: np.ndarray  # (N, C, D) the demonstration's actions that follow
    pad: np.ndarray  # (N, C) True past the episode's end
    state: np.ndarray  # (N, D) joint positions at the frame
    episode: np.ndarray  # (N,) episode index
    frame: np.ndarray  # (N,) frame index within the episode
    task: list[str] = field(default_factory=list)  # (N,) task of the episode

    def select(self, rows: np.ndarray) -> Predictions:
        return Predictions(self.pred[rows], self.target[rows], self.pad[rows], self.state[rows],
                           self.episode[rows], self.frame[rows], [self.task[i] for i in np.flatnonzero(rows)])


@dataclass
class Executed:
    """One episode as the robot would execute it: one predicted action per frame."""

    frames: np.ndarray  # (L,) frame indices, increasing
    pred: np.ndarray  # (L, D)
    target: np.ndarray  # (L, D)
    boundary: np.ndarray  # (L,) True where a new chunk starts (not at frame 0)


def compute_normalized(x: np.ndarray, stats: dict, mode: str) -> np.ndarray:
    """Map actions into the policy's training space with the frozen stats (LeRobot's formulas)."""
    if mode == "MEAN_STD":
        return (x - np.asarray(stats["mean"])) / (np.asarray(stats["std"]) + 1e-8)
    q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    return 2.0 * (x - q01) / np.maximum(q99 - q01, 1e-8) - 1.0


def compute_masked_mse(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Mean squared error over the valid (not padded) steps of (N, chunk, dim) arrays."""
    if not valid.any():
        raise ValueError("no valid (unpadded) steps to evaluate")
    return float(((pred - target) ** 2)[valid].mean())


def compute_joint_errors(p: Predictions, joints: list[str]) -> dict[str, dict[str, float]]:
    """Per joint, over every valid step of every chunk: MAE, RMSE and the largest |error|."""
    err = (p.pred - p.target)[~p.pad]  # (valid steps, D)
    return {j: {"mae": float(np.abs(err[:, d]).mean()), "rmse": float(np.sqrt((err[:, d] ** 2).mean())),
                "max_abs_error": float(np.abs(err[:, d]).max())} for d, j in enumerate(joints)}


def compute_chunk_metrics(p: Predictions, stats: dict, mode: str) -> dict[str, float]:
    """Chunk MSE (contract units and normalized) beside the hold-position and mean-action baselines."""
    valid = ~p.pad
    hold = np.broadcast_to(p.state[:, None, :], p.target.shape)
    mean = np.broadcast_to(np.asarray(stats["mean"], dtype=np.float64), p.target.shape)
    norm = lambda x: compute_normalized(x, stats, mode)  # noqa: E731
    out = {}
    for name, x in (("action_mse", p.pred), ("baseline_hold_mse", hold), ("baseline_mean_mse", mean)):
        out[name] = compute_masked_mse(x, p.target, valid)
        out[f"{name}_normalized"] = compute_masked_mse(norm(x), norm(p.target), valid)
    return out


def compute_executed(p: Predictions, stride: int) -> dict[int, Executed]:
    """Per episode, the first ``stride`` valid actions of each chunk, in frame order."""
    steps = np.arange(p.pred.shape[1])
    episodes = {}
    for ep in np.unique(p.episode):
        rows = np.flatnonzero(p.episode == ep)
        take = (~p.pad[rows]) & (steps[None, :] < stride)  # (rows, C)
        r, k = np.nonzero(take)
        frames = p.frame[rows][r] + k
        order = np.argsort(frames, kind="stable")
        if len(np.unique(frames)) != len(frames):
            raise ValueError(f"episode {ep}: chunks overlap in execution (stride {stride}); frames must be unique")
        boundary = (k == 0) & (frames > 0)
        episodes[int(ep)] = Executed(frames[order], p.pred[rows][r, k][order], p.target[rows][r, k][order],
                                     boundary[order])
    return episodes


def compute_smoothness(executed: dict[int, Executed]) -> dict[str, float]:
    """Mean |Δa|, mean |Δ³a| (jerk) and the jump where a new chunk starts, predicted vs demonstrated."""
    out: dict[str, float] = {}
    for who in ("pred", "target"):
        suffix = "" if who == "pred" else "_gt"
        trajs = [getattr(e, who) for e in executed.values()]
        deltas = [np.abs(np.diff(t, axis=0)) for t in trajs if len(t) > 1]
        jerks = [np.abs(np.diff(t, n=3, axis=0)) for t in trajs if len(t) > 3]
        jumps = [np.abs(getattr(e, who)[e.boundary] - getattr(e, who)[np.flatnonzero(e.boundary) - 1])
                 for e in executed.values()]
        jumps = np.concatenate(jumps) if jumps else np.zeros((0, 1))
        out[f"mean_abs_delta{suffix}"] = _mean(deltas)
        out[f"jerk{suffix}"] = _mean(jerks)
        out[f"chunk_boundary_jump{suffix}"] = float(jumps.mean()) if jumps.size else 0.0
        out[f"chunk_boundary_jump_max{suffix}"] = float(jumps.max()) if jumps.size else 0.0
    return out


def _mean(parts: list[np.ndarray]) -> float:
    parts = [x for x in parts if x.size]
    return float(np.concatenate([x.ravel() for x in parts]).mean()) if parts else 0.0


def compute_saturation(executed: dict[int, Executed], joints: list[str], ranges: dict[str, tuple[float, float]],
                       margin: float) -> dict:
    """Executed actions outside the contract's range of their joint (``clip_count``: the robot would
    clip them) and within ``margin`` x range of a limit or beyond (``saturation_count``), in total
    and per joint (``joints``). Joints without a range in the contract are not counted."""
    actions = np.concatenate([e.pred for e in executed.values()])
    out: dict = {"clip_count": 0, "saturation_count": 0, "joints": {}}
    for d, joint in enumerate(joints):
        if joint not in ranges:
            continue
        lo, hi = ranges[joint]
        x = actions[:, d]
        band = margin * (hi - lo)
        counts = {"clip_count": int(((x < lo) | (x > hi)).sum()),
                  "saturation_count": int(((x <= lo + band) | (x >= hi - band)).sum())}
        out["joints"][joint] = counts
        out["clip_count"] += counts["clip_count"]
        out["saturation_count"] += counts["saturation_count"]
    out["clip_fraction"] = out["clip_count"] / actions.size if actions.size else 0.0
    return out


def compute_metrics(p: Predictions, stats: dict, mode: str, joints: list[str],
                    ranges: dict[str, tuple[float, float]], *, stride: int, margin: float = 0.01) -> dict:
    """Every metric of the protocol (``metrics.json``): chunk errors and baselines, per joint,
    smoothness, saturation and the same chunk metrics per task."""
    executed = compute_executed(p, stride)
    per_task = {}
    for task in sorted(set(p.task)):
        sub = p.select(np.array([t == task for t in p.task]))
        per_task[compute_metric_key(task)] = {**compute_chunk_metrics(sub, stats, mode), "n_frames": len(sub.pred)}
    saturation = compute_saturation(executed, joints, ranges, margin)
    per_joint = compute_joint_errors(p, joints)
    for joint, counts in saturation.pop("joints").items():
        per_joint[joint].update(counts)
    return {
        **compute_chunk_metrics(p, stats, mode),
        "joints": per_joint,
        "smoothness": compute_smoothness(executed),
        "saturation": saturation,
        "per_task": per_task,
        "n_episodes": len(executed),
        "n_frames": int(len(p.pred)),
        "n_valid_steps": int((~p.pad).sum()),
        "n_executed_steps": int(sum(len(e.frames) for e in executed.values())),
    }


def compute_episode_table(p: Predictions, stats: dict, mode: str, joints: list[str],
                          ranges: dict[str, tuple[float, float]], *, stride: int,
                          margin: float = 0.01) -> list[dict]:
    """One row per episode: its chunk errors, smoothness and clipping (the per-episode table)."""
    rows = []
    executed = compute_executed(p, stride)
    for ep in sorted(executed):
        sub = p.select(p.episode == ep)
        chunk = compute_chunk_metrics(sub, stats, mode)
        smooth = compute_smoothness({ep: executed[ep]})
        sat = compute_saturation({ep: executed[ep]}, joints, ranges, margin)
        err = np.abs(sub.pred - sub.target)[~sub.pad]
        rows.append({
            "episode_index": int(ep), "task": sub.task[0], "n_frames": len(executed[ep].frames),
            "n_queries": len(sub.pred), "action_mse": chunk["action_mse"],
            "action_mse_normalized": chunk["action_mse_normalized"],
            "baseline_hold_mse_normalized": chunk["baseline_hold_mse_normalized"],
            "max_abs_error": float(err.max()), "mean_abs_delta": smooth["mean_abs_delta"],
            "mean_abs_delta_gt": smooth["mean_abs_delta_gt"], "chunk_boundary_jump": smooth["chunk_boundary_jump"],
            "clip_count": sat["clip_count"],
        })
    return rows


def pick_representative(table: list[dict], key: str = "action_mse_normalized") -> dict[str, int]:
    """The best, median and worst episodes by ``key`` (ties broken by episode index)."""
    ranked = sorted(table, key=lambda r: (r[key], r["episode_index"]))
    return {"best": ranked[0]["episode_index"], "median": ranked[(len(ranked) - 1) // 2]["episode_index"],
            "worst": ranked[-1]["episode_index"]}


def compute_metric_key(name: str) -> str:
    """A task string as a metrics key (DVC joins nested keys with dots)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "task"
