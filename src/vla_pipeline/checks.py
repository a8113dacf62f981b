"""The validator's checks. Each takes the loaded dataset view and a :class:`Findings` sink and
records errors (the dataset must not be trained on as is) or warnings (worth a look). Tabular
checks are vectorised over whole columns; none loops over frames in Python."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.tables import BARE_INDEX_COLUMN, Frames, feature_names, has_bare_task_column

SUPPORTED_CODEBASE = "v3.0"
MAX_OFFENDERS = 5  # lines per check on screen ("... and N more" after them; the JSON report has every one)
MIN_EPISODES = 2  # a train/validation split needs one episode on each side
CALIBRATION_SAMPLES = 100_000  # frames the calibration check compares (evenly spread over the dataset)


@dataclass
class Finding:
    check: str
    message: str
    episode: int | None = None
    frame: int | None = None
    key: str | None = None
    value: Any = None
    expected: Any = None


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
    probes: dict = field(default_factory=dict)  # video path -> VideoProbe | Exception | None (absent)

    @property
    def dt(self) -> float:
        return 1.0 / float(self.info["fps"])

    def names(self, key: str) -> list[str]:
        return feature_names(self.info, key)

    def joint_positions(self, key: str) -> list[int] | None:
        names = self.names(key)
        return [names.index(j) for j in self.contract.joints] if all(j in names for j in self.contract.joints) else None


def _episodes_of(frames: Frames, rows: np.ndarray) -> list[int]:
    return sorted(set(frames["episode_index"][rows].tolist()))


# ----------------------------------------------------------------------------- meta and keys
def check_codebase(v: View, out: Findings) -> None:
    found = v.info.get("codebase_version")
    if found != SUPPORTED_CODEBASE:
        from vla_pipeline.data.convert import format_conversion_hint

        out.error("codebase", format_conversion_hint(v.root), key="codebase_version", value=found,
                  expected=SUPPORTED_CODEBASE)


def check_fps(v: View, out: Findings) -> None:
    if v.info.get("fps") != v.contract.fps:
        out.error("fps", f"meta/info.json: fps {v.info.get('fps')} but contract '{v.contract.name}' says "
                  f"{v.contract.fps}; re-record, resample, or use a contract with the dataset's fps",
                  key="fps", value=v.info.get("fps"), expected=v.contract.fps)


def required_keys(contract: Contract) -> dict[str, str]:
    """role -> dataset key of everything the run reads: the action, the state, every camera."""
    return {"action": contract.action_key, "state": contract.state_key,
            **{f"camera '{c}'": key for c, key in contract.cameras.items()}}


def check_contract_keys(v: View, out: Findings) -> None:
    """The contract maps what Pi0.5 needs (a state, at least one camera) onto keys the dataset has. A
    mismatch is one error about the contract, with the dataset's features by role and a keys block."""
    from vla_pipeline.data.contract_init import format_feature_roles, format_keys_block

    c = v.contract
    if not c.cameras:
        out.error("contract_keys", f"contract '{c.name}' maps no camera (keys.cameras is empty): Pi0.5 needs at "
                  f"least one camera image; map one or more of the dataset's cameras:\n"
                  f"{format_feature_roles(v.info)}", key="keys.cameras")
    if not c.state_required:
        out.error("contract_keys", f"contract '{c.name}' sets state_required: false, but Pi0.5 tokenizes the state "
                  f"into its prompt; map keys.state and set state_required: true", key="state_required")
    features = v.info.get("features", {})
    missing = {role: key for role, key in required_keys(c).items() if key not in features}
    if missing:
        listed = ", ".join(f"{role} '{key}'" for role, key in missing.items())
        out.error("contract_keys", f"contract '{c.name}' does not fit this dataset: it names {listed}, which the "
                  f"dataset does not have. The dataset's features:\n{format_feature_roles(v.info)}\n"
                  f"Map them in the contract (dataset.contract), e.g.:\n{format_keys_block(v.info)}\n"
                  f"or write a starter contract: vla contract init {v.root} --out contracts/NAME.yaml",
                  key=next(iter(missing.values())), value=sorted(features), expected=sorted(missing.values()))


def check_features_in_data(v: View, out: Findings) -> None:
    declared = [k for k, f in v.info["features"].items() if f.get("dtype") not in ("video", "image")]
    missing = [k for k in declared if k not in v.frames.columns]
    for k in missing:
        out.error("features_in_data", f"feature '{k}' is declared in meta/info.json but no data parquet file has "
                  f"that column; rewrite the data files or fix info.json", key=k)


def check_feature_names(v: View, out: Findings) -> None:
    for key in (v.contract.action_key, v.contract.state_key):
        if key not in v.info["features"]:
            continue
        names, shape = v.names(key), v.info["features"][key].get("shape")
        if not isinstance(shape, list) or len(shape) != 1:
            out.error("feature_names", f"meta/info.json: '{key}' has shape {shape!r}; a vector feature needs "
                      f"[n_dims]", key=key, value=shape, expected=[len(names)])
        elif shape[0] != len(names):
            out.error("feature_names", f"meta/info.json: '{key}' has shape {shape} but {len(names)} names",
                      key=key, value=len(names), expected=shape[0])
        missing = [j for j in v.contract.joints if j not in names]
        if missing:
            out.error("feature_names", f"'{key}' lacks the contract's joints {missing}; its names are {names}; "
                      f"use the contract for this robot (dataset.contract)", key=key, value=names,
                      expected=list(v.contract.joints))
            continue
        order = [j for j in names if j in v.contract.joints]
        if order != list(v.contract.joints):
            out.error("feature_names", f"'{key}' holds the contract's joints in another order: {order}; the contract "
                      f"expects {list(v.contract.joints)}; check which convention the recording used",
                      key=key, value=order, expected=list(v.contract.joints))


# ----------------------------------------------------------------------------- indices and episodes
def check_global_index(v: View, out: Findings) -> None:
    idx = v.frames["index"]
    bad = np.nonzero(idx != np.arange(v.frames.n))[0]
    if len(bad):
        row = bad[0]
        out.error("global_index", f"data: global 'index' is not contiguous 0..{v.frames.n - 1}: row {row} has "
                  f"{idx[row]}", episode=v.frames["episode_index"][row], value=idx[row], expected=row)


def check_episode_bounds(v: View, out: Findings) -> None:
    meta, ep = v.episodes, v.frames["episode_index"]
    eps, start, to, length = meta["episode_index"], meta["dataset_from_index"], meta["dataset_to_index"], meta["length"]
    gaps = np.nonzero(eps != np.arange(len(eps)))[0]
    if len(gaps):
        out.error("episode_bounds", f"meta/episodes: episode indices are not 0..{len(eps) - 1} (gap before "
                  f"{eps[gaps[0]]})", episode=eps[gaps[0]], value=eps[gaps[0]], expected=gaps[0])
    for i in np.nonzero(to - start != length)[0]:
        out.error("episode_bounds", f"meta/episodes: episode {eps[i]} has length {length[i]} but spans "
                  f"[{start[i]}, {to[i]})", episode=eps[i], value=int(to[i] - start[i]), expected=length[i])
    for i in np.nonzero(start[1:] != to[:-1])[0]:
        kind = "gap" if start[i + 1] > to[i] else "overlap"
        out.error("episode_bounds", f"meta/episodes: {kind} between episodes {eps[i]} and {eps[i + 1]}",
                  episode=eps[i + 1], value=start[i + 1], expected=to[i])
    data_eps, counts = np.unique(ep, return_counts=True)
    counted = dict(zip(data_eps.tolist(), counts.tolist(), strict=True))
    for e, n in zip(eps.tolist(), length.tolist(), strict=True):
        if counted.get(e, 0) != n:
            out.error("episode_bounds", f"episode {e}: meta/episodes says {n} frames, the data parquet has "
                      f"{counted.get(e, 0)}; the files disagree: re-export the episode or exclude it",
                      episode=e, value=counted.get(e, 0), expected=n)
    for e in sorted(set(counted) - set(eps.tolist())):
        out.error("episode_bounds", f"episode {e} has data rows but no meta/episodes entry", episode=e)


def check_exclusions(v: View, out: Findings) -> None:
    """``dataset.exclude_episodes`` names episodes that exist and leaves enough to split into train and
    validation."""
    episodes = set(v.episodes["episode_index"].tolist())
    unknown = sorted(set(v.exclude_episodes) - episodes)
    if unknown:
        out.error("exclusions", f"dataset.exclude_episodes names episodes {unknown} that the dataset does not have "
                  f"(it has {len(episodes)}: 0..{max(episodes, default=-1)}); remove them", value=unknown)
    left = len(episodes - set(v.exclude_episodes))
    if left == 0:
        out.error("exclusions", f"dataset.exclude_episodes excludes all {len(episodes)} episodes: nothing is left "
                  f"to train on; fix the dataset instead of excluding it", value=left, expected=MIN_EPISODES)
    elif left < MIN_EPISODES:
        out.error("exclusions", f"{left} episode left after dataset.exclude_episodes; a train/validation split "
                  f"needs at least {MIN_EPISODES}", value=left, expected=MIN_EPISODES)


def _episode_starts(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """First row of each run of equal episode_index, and the run each row belongs to."""
    ep = frames["episode_index"]
    new = np.ones(frames.n, dtype=bool)
    new[1:] = ep[1:] != ep[:-1]
    starts = np.nonzero(new)[0]
    return starts, np.cumsum(new) - 1


def check_frame_index(v: View, out: Findings) -> None:
    starts, run = _episode_starts(v.frames)
    expected = np.arange(v.frames.n) - starts[run]
    bad = np.nonzero(v.frames["frame_index"] != expected)[0]
    for e in _episodes_of(v.frames, bad):
        row = bad[v.frames["episode_index"][bad] == e][0]
        out.error("frame_index", f"episode {e}: frame_index does not run 0..n-1 (row {row} has "
                  f"{v.frames['frame_index'][row]}, expected {expected[row]}): a dropped or duplicated frame",
                  episode=e, frame=expected[row], value=v.frames["frame_index"][row], expected=expected[row])


def check_timestamps(v: View, out: Findings) -> None:
    """Timestamps that go backwards are an error. Spacing off 1/fps is a warning: the pipeline reads
    frame i of an episode's video at i / fps, as LeRobot's writer encodes it, not at the timestamp
    (LeRobot's own loader looks frames up by timestamp and fails beyond its tolerance)."""
    ts, ep = v.frames["timestamp"].astype(np.float64), v.frames["episode_index"]
    same = ep[1:] == ep[:-1]
    gaps = np.diff(ts)
    not_increasing = same & (gaps <= 0)
    for e in _episodes_of(v.frames, np.nonzero(not_increasing)[0] + 1):
        row = np.nonzero(not_increasing & (ep[1:] == e))[0][0]
        frame = int(v.frames["frame_index"][row + 1])
        out.error("timestamps", f"episode {e}: timestamps not strictly increasing at frame {frame} ({ts[row]:.5f}s "
                  f"then {ts[row + 1]:.5f}s): frames out of order; exclude the episode or fix its timestamps",
                  episode=e, frame=frame, value=float(gaps[row]), expected=v.dt)
    tol = v.contract.timestamp_tolerance_s
    off = same & ~not_increasing & (np.abs(gaps - v.dt) > tol)
    off_episodes = _episodes_of(v.frames, np.nonzero(off)[0] + 1)
    if not off_episodes:
        return
    starts, run = _episode_starts(v.frames)
    drift = np.abs(ts - ts[starts[run]] - v.frames["frame_index"] * v.dt)
    within = gaps[same]
    lerobot = (f"LeRobot's own loader looks video frames up by these timestamps and fails beyond tolerance_s: "
               f"{int((drift > tol).sum())} of {v.frames.n} frames are more than {tol}s from frame_index/fps "
               f"(up to {drift.max():.3f}s). This pipeline reads frame i of an episode at i/fps, so training "
               f"and evaluation read the right frames; check that the videos hold one frame per row")
    if len(off_episodes) * 2 > len(starts):
        q = np.percentile(within, [0, 5, 50, 95, 100])
        out.warn("timestamps", f"timestamps are not 1/fps = {v.dt:.4f}s apart in {len(off_episodes)} of "
                 f"{len(starts)} episodes: a wall clock, not frame_index/fps. Frame spacing min {q[0]:.4f}s, "
                 f"p5 {q[1]:.4f}s, median {q[2]:.4f}s, p95 {q[3]:.4f}s, max {q[4]:.4f}s. {lerobot}",
                 value={"min": q[0], "p5": q[1], "median": q[2], "p95": q[3], "max": q[4]}, expected=v.dt)
        return
    for e in off_episodes:
        rows = np.nonzero(off & (ep[1:] == e))[0]
        worst = rows[np.argmax(np.abs(gaps[rows] - v.dt))]
        frame = int(v.frames["frame_index"][worst + 1])
        out.warn("timestamps", f"episode {e}: timestamps off 1/fps at {len(rows)} frames (worst at frame {frame}: "
                 f"spacing {gaps[worst]:.5f}s, expected {v.dt:.5f}s +- {tol}s): a stall or a clock that drifts. "
                 f"{lerobot}", episode=e, frame=frame, value=float(gaps[worst]), expected=v.dt)


def check_tasks(v: View, out: Findings) -> None:
    if "task_index" not in v.frames.columns:
        out.error("tasks", "data: no 'task_index' column; every frame needs a task", key="task_index")
        return
    tasks = pd.read_parquet(Path(v.root) / "meta" / "tasks.parquet")
    if has_bare_task_column(tasks):
        out.warn("tasks", f"meta/tasks.parquet keeps the task strings in a bare '{BARE_INDEX_COLUMN}' column (written "
                 f"without pandas metadata), so LeRobot's loader would prompt the policy with the task's number "
                 f"instead of its text (e.g. {tasks.index[0]!r} for {str(tasks[BARE_INDEX_COLUMN].iloc[0])!r}); this "
                 f"pipeline reads the strings from that column. To fix the file for other tools: "
                 f"df.set_index('{BARE_INDEX_COLUMN}').to_parquet(...) with pandas", key=BARE_INDEX_COLUMN)
    ti = v.frames["task_index"]
    known = np.array(sorted(v.tasks), dtype=ti.dtype)
    bad = np.nonzero(~np.isin(ti, known))[0]
    for e in _episodes_of(v.frames, bad):
        value = int(ti[bad[v.frames["episode_index"][bad] == e][0]])
        out.error("tasks", f"episode {e}: task_index {value} has no task string in meta/tasks.parquet; "
                  f"add the task or exclude the episode", episode=e, key="task_index", value=value)


# ----------------------------------------------------------------------------- vectors
def _vector_keys(v: View) -> list[str]:
    keys = [v.contract.action_key]
    if v.contract.state_key in v.frames.vectors:
        keys.append(v.contract.state_key)
    return [k for k in keys if k in v.frames.vectors]


def check_vector_shape(v: View, out: Findings) -> None:
    for key in _vector_keys(v):
        dim = v.info["features"][key]["shape"][0]
        lengths = v.frames.lengths[key]
        bad = np.nonzero((lengths != dim) & (lengths >= 0))[0]
        for e in _episodes_of(v.frames, bad):
            found = int(lengths[bad[v.frames["episode_index"][bad] == e][0]])
            out.error("vector_shape", f"episode {e}: '{key}' has {found} values per frame, meta/info.json declares "
                      f"{dim}; exclude the episode or re-export it", episode=e, key=key, value=found, expected=dim)


def check_sequence_length(v: View, out: Findings) -> None:
    """Observation and action sequences have equal length: no frame lacks one of them."""
    for key in _vector_keys(v):
        bad = np.nonzero(v.frames.lengths[key] < 0)[0]
        for e in _episodes_of(v.frames, bad):
            n = int((v.frames["episode_index"][bad] == e).sum())
            out.error("sequence_length", f"episode {e}: {n} frames have no '{key}' (null), so observations and "
                      f"actions differ in length; exclude the episode", episode=e, key=key, value=n, expected=0)


def check_finite(v: View, out: Findings) -> None:
    for key in _vector_keys(v):
        values = v.frames.vectors[key]
        ok = v.frames.lengths[key] == values.shape[1]  # null or other-length rows (NaN here): not this check's
        bad_rows = np.nonzero(ok & ~np.isfinite(values).all(axis=1))[0]
        names = v.names(key)
        for e in _episodes_of(v.frames, bad_rows):
            rows = bad_rows[v.frames["episode_index"][bad_rows] == e]
            col = int(np.nonzero(~np.isfinite(values[rows[0]]))[0][0])
            out.error("finite", f"episode {e}: {len(rows)} frames of '{key}' hold NaN/Inf (first at frame "
                      f"{v.frames['frame_index'][rows[0]]}, joint '{names[col] if col < len(names) else col}'); "
                      f"exclude the episode", episode=e, frame=v.frames["frame_index"][rows[0]], key=key,
                      value=str(values[rows[0], col]))


def check_ranges(v: View, out: Findings) -> None:
    key, pos = v.contract.action_key, v.joint_positions(v.contract.action_key)
    if pos is None or key not in v.frames.vectors:
        return
    actions = v.frames.vectors[key]
    for joint, (lo, hi) in v.contract.ranges.items():
        col = actions[:, pos[v.contract.joints.index(joint)]]
        excess = np.where(col < lo, lo - col, np.where(col > hi, col - hi, 0.0))
        bad = np.nonzero(excess > 0)[0]
        if not len(bad):
            continue
        by_excess = bad[np.argsort(-excess[bad], kind="stable")]
        _, first = np.unique(v.frames["episode_index"][by_excess], return_index=True)
        for row in by_excess[np.sort(first)]:  # the worst frame of each episode, worst episodes first
            e = v.frames["episode_index"][row]
            out.error("ranges", f"episode {e} frame {v.frames['frame_index'][row]}: action '{joint}' = "
                      f"{col[row]:.3f} outside the contract's range [{lo}, {hi}] ({len(bad)} frames in all); "
                      f"check units/calibration or exclude", episode=e, frame=v.frames["frame_index"][row],
                      key=joint, value=float(col[row]), expected=[lo, hi])


# ----------------------------------------------------------------------------- warnings
def _grouped(v: View) -> tuple[np.ndarray, np.ndarray]:
    """Start row and episode index of each episode run."""
    starts, _ = _episode_starts(v.frames)
    return starts, v.frames["episode_index"][starts]


def check_short_episodes(v: View, out: Findings) -> None:
    eps, length = v.episodes["episode_index"], v.episodes["length"]
    for e, n in zip(eps[length < v.min_episode_length].tolist(), length[length < v.min_episode_length].tolist(),
                    strict=True):
        out.warn("short_episodes", f"episode {e} has {n} frames, fewer than the policy's chunk size "
                 f"{v.min_episode_length}: most of its action chunks are padding", episode=e, value=n,
                 expected=v.min_episode_length)


def _arm_actions(v: View) -> np.ndarray | None:
    pos = v.joint_positions(v.contract.action_key)
    if pos is None or v.contract.action_key not in v.frames.vectors:
        return None
    return v.frames.vectors[v.contract.action_key][:, pos]


def check_static_joints(v: View, out: Findings) -> None:
    actions = _arm_actions(v)
    if actions is None:
        return
    starts, eps = _grouped(v)
    span = np.maximum.reduceat(actions, starts, axis=0) - np.minimum.reduceat(actions, starts, axis=0)
    for i, j in zip(*np.nonzero(span == 0), strict=True):
        out.warn("static_joints", f"episode {eps[i]}: joint '{v.contract.joints[j]}' never moves",
                 episode=eps[i], key=v.contract.joints[j])


def check_action_jumps(v: View, out: Findings) -> None:
    actions, limit = _arm_actions(v), v.contract.max_action_jump
    if actions is None or limit is None:
        return
    ep = v.frames["episode_index"]
    jump = np.abs(np.diff(actions, axis=0)) * (ep[1:] == ep[:-1])[:, None]
    rows, cols = np.nonzero(jump > limit)
    for e in _episodes_of(v.frames, rows + 1)[:20]:
        sel = ep[rows + 1] == e
        k = np.argmax(jump[rows[sel], cols[sel]])
        row, col = rows[sel][k], cols[sel][k]
        out.warn("action_jumps", f"episode {e}: '{v.contract.joints[col]}' jumps by {jump[row, col]:.2f} at frame "
                 f"{v.frames['frame_index'][row + 1]} (limit {limit}; {int(sel.sum())} jumps in the episode)",
                 episode=e, frame=v.frames["frame_index"][row + 1], key=v.contract.joints[col],
                 value=float(jump[row, col]), expected=limit)


def check_calibration(v: View, out: Findings) -> None:
    """A joint whose action and state ranges do not overlap: the action sits at an offset from the state
    it commands (a leader/follower calibration mismatch, or other units)."""
    c = v.contract
    pos_a, pos_s = v.joint_positions(c.action_key), v.joint_positions(c.state_key)
    if pos_a is None or pos_s is None or c.action_key not in v.frames.vectors or c.state_key not in v.frames.vectors:
        return
    sample = np.arange(0, v.frames.n, max(1, v.frames.n // CALIBRATION_SAMPLES))  # evenly spread: ranges need no more
    actions = v.frames.vectors[c.action_key][sample][:, pos_a]
    states = v.frames.vectors[c.state_key][sample][:, pos_s]
    ok = np.isfinite(actions).all(axis=1) & np.isfinite(states).all(axis=1)
    if not ok.any():
        return
    actions, states = actions[ok], states[ok]
    a_lo, a_hi = np.percentile(actions, [1, 99], axis=0)
    s_lo, s_hi = np.percentile(states, [1, 99], axis=0)
    offset = np.median(actions - states, axis=0)
    for j in np.nonzero((a_lo > s_hi) | (s_lo > a_hi))[0]:
        joint = v.contract.joints[j]
        out.warn("calibration", f"joint '{joint}': its actions span [{a_lo[j]:.4g}, {a_hi[j]:.4g}] but its states "
                 f"span [{s_lo[j]:.4g}, {s_hi[j]:.4g}] (median action - state {offset[j]:+.4g}): the action does not "
                 f"command the state it is paired with. A leader/follower calibration offset or different units "
                 f"(degrees vs radians, percent vs 0..1); check the recording's calibration before training, the "
                 f"policy would learn the offset", key=joint, value=float(offset[j]))


def check_duplicate_episodes(v: View, out: Findings) -> None:
    actions = _arm_actions(v)
    if actions is None:
        return
    starts, eps = _grouped(v)
    ends = np.append(starts[1:], v.frames.n)
    seen: dict[str, int] = {}
    for e, a, b in zip(eps.tolist(), starts.tolist(), ends.tolist(), strict=True):
        digest = hashlib.sha1(np.ascontiguousarray(actions[a:b]).tobytes()).hexdigest()
        if digest in seen:
            out.warn("duplicate_episodes", f"episode {e} repeats the actions of episode {seen[digest]}",
                     episode=e, value=seen[digest])
        else:
            seen[digest] = e
