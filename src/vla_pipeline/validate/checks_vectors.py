"""Checks of the action and state vectors: shape, sequence length, NaN/Inf, ranges against the
contract, short episodes, static joints, action jumps, calibration offsets and duplicate episodes."""

from __future__ import annotations

import hashlib

import numpy as np

from vla_pipeline.data.features import vector_dim
from vla_pipeline.validate.findings import Findings, View, episode_starts, episodes_of

CALIBRATION_SAMPLES = 100_000  # frames the calibration check compares (evenly spread over the dataset)


# ----------------------------------------------------------------------------- vectors
def _vector_keys(v: View) -> list[str]:
    keys = [v.contract.action_key]
    if v.contract.state_key in v.frames.vectors:
        keys.append(v.contract.state_key)
    return [k for k in keys if k in v.frames.vectors]


def check_vector_shape(v: View, out: Findings) -> None:
    for key in _vector_keys(v):
        dim = vector_dim(v.info, key)
        lengths = v.frames.lengths[key]
        bad = np.nonzero((lengths != dim) & (lengths >= 0))[0]
        for e in episodes_of(v.frames, bad):
            found = int(lengths[bad[v.frames["episode_index"][bad] == e][0]])
            out.error("vector_shape", f"episode {e}: '{key}' has {found} values per frame, meta/info.json declares "
                      f"{dim}; exclude the episode or re-export it", episode=e, key=key, value=found, expected=dim)


def check_sequence_length(v: View, out: Findings) -> None:
    """Observation and action sequences have equal length: no frame lacks one of them."""
    for key in _vector_keys(v):
        bad = np.nonzero(v.frames.lengths[key] < 0)[0]
        for e in episodes_of(v.frames, bad):
            n = int((v.frames["episode_index"][bad] == e).sum())
            out.error("sequence_length", f"episode {e}: {n} frames have no '{key}' (null), so observations and "
                      f"actions differ in length; exclude the episode", episode=e, key=key, value=n, expected=0)


def check_finite(v: View, out: Findings) -> None:
    for key in _vector_keys(v):
        values = v.frames.vectors[key]
        ok = v.frames.lengths[key] == values.shape[1]  # null or other-length rows (NaN here): not this check's
        bad_rows = np.nonzero(ok & ~np.isfinite(values).all(axis=1))[0]
        names = v.names(key)
        for e in episodes_of(v.frames, bad_rows):
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
        if joint not in v.contract.joints:  # feature_names reports it
            continue
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
    starts, _ = episode_starts(v.frames)
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
    for e in episodes_of(v.frames, rows + 1)[:20]:
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
