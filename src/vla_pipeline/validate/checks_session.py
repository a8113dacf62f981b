"""Behavioural checks of how a session was recorded (issue 29): the action recorded as the state, the action
trailing the state, an episode in other units, episodes nearly repeating another, and the session drifting.
They read the contract's joints of action and state (``behaviour.joint_series``) in fractions of each joint's
range width and warn: a per-episode finding names the episode, its frames and a joint and suggests excluding
the episode; drift is one dataset-level warning per joint. Numpy over all frames; loops only over findings."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vla_pipeline.validate.behaviour import JointSeries, joint_series
from vla_pipeline.validate.findings import Findings, View

MIN_MOVING = 10  # moving (frame, joint) pairs an episode needs before its action/state relation is judged
AS_STATE_SHARE = 0.9  # share of the moving (frame, joint) pairs whose action equals the state: the recorder's bug
LAG_EXTRA = 4  # lags searched: -K..K with K = 2 * lag_frames + LAG_EXTRA
LAG_GAIN = 0.5  # the best lag must halve the error of the healthy lags before a lag is blamed
LAG_SAMPLE = 50_000  # frames the lag search reads at most (every r-th moving frame; shifts stay exact)
SCALE_MIN_EPISODES = 3  # a median of the episodes needs a majority that agrees
SCALE_MIN_REFERENCE = 0.01  # a joint whose typical episode sits closer to zero than this share of its range: no scale
SCALE_MIN_SPREAD = 1e-3  # a joint whose typical episode spreads less than this share of its range (std): no scale
UNIT_FACTORS = {57.2958: "degrees vs radians", 100.0: "percent vs fraction", 4096 / 360: "encoder ticks vs degrees"}
UNIT_TOLERANCE = 0.2  # a ratio within this of a unit factor names it
LONE_FACTORS = (57.2958, 100.0)  # about zero: one joint off by one (level within 1.5x, spread, jitter 3x) warns alone
DUP_POINTS = 32  # points each episode's action is resampled to before comparing episodes
DUP_LENGTH_RATIO = 0.9  # near duplicates have lengths within this ratio
DUP_RELATIVE = 0.05  # without a state: closer than this share of their motion (mean |action - its mean|)
DUP_CHUNK, DUP_PAIRS = 256, 16_384  # rows of the distance matrix, candidate pairs' exact distances, at once
DRIFT_MIN_EPISODES = 8
DRIFT_TASK_EPISODES = 3  # a task with this many episodes has a median pose each of them is measured from
DRIFT_Z = 3.5  # the trend's z-score (Spearman's rho through Student's t) at least: p ~ 0.0005 by chance
DRIFT_SCATTER = 1.5  # the quarters' medians apart by this many robust sigmas of the episodes within them


@dataclass
class Session:
    """The series in fractions of each joint's width (float32, sums in float64) and what checks share."""

    s: JointSeries
    a: np.ndarray  # (n, J) action / width
    st: np.ndarray | None  # (n, J) state / width
    run: np.ndarray  # (n,) the episode run of each row (0..E-1)
    moving: np.ndarray | None  # (n, J) the state steps by more than still_fraction of the range to the next frame
    finite: bool  # every value of a (and st) is finite: the checks skip their masks
    memo: dict = field(default_factory=dict)


def _session(v: View) -> Session | None:
    if "session" in v.cache:
        return v.cache["session"]
    s = joint_series(v)
    sess = None  # no contract joints in the action, or no rows
    if s is not None and len(s.starts):
        a, st = (None if x is None else np.divide(x, s.width, out=np.empty(x.shape, dtype=np.float32),
                                                  casting="unsafe") for x in (s.action, s.state))
        run, moving = np.repeat(np.arange(len(s.starts)), s.lengths), None
        if st is not None:
            moving, step = np.zeros(st.shape, dtype=bool), np.diff(st, axis=0)
            with np.errstate(invalid="ignore"):
                np.greater(np.abs(step, out=step), v.quality.still_fraction, out=moving[:-1])
            moving[s.ends - 1] = False  # the last frame of an episode has no next one in it
        sess = Session(s, a, st, run, moving, bool(np.isfinite(a).all() and (st is None or np.isfinite(st).all())))
    v.cache["session"] = sess
    return sess


def _where(s: JointSeries, i: int) -> dict:  # where a per-episode finding points, and its exclusion
    first, last = int(s.frame[s.starts[i]]), int(s.frame[s.ends[i] - 1])
    return {"episode": int(s.episodes[i]), "frame": first, "frames": [first, last], "suggestion": "exclude"}


def _per_episode(x: np.ndarray, s: JointSeries) -> np.ndarray:  # (E, ...) sums over each episode, in float64
    return np.add.reduceat(x, s.starts, axis=0, dtype=np.float64)


# ----------------------------------------------------------------------------- 6 action_is_state
def _offset(sess: Session) -> np.ndarray:  # (n, J) action - state, computed once
    return sess.memo["offset"] if "offset" in sess.memo else sess.memo.setdefault("offset", sess.a - sess.st)


def _as_state(sess: Session, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per episode and joint: the moving frames, those whose action equals the state; and the flagged episodes."""
    if "as_state" not in sess.memo:
        with np.errstate(invalid="ignore"):
            same = np.abs(_offset(sess)) <= q.action_state_fraction
        same &= sess.moving
        moving, same = _per_episode(sess.moving, sess.s).astype(np.int64), _per_episode(same, sess.s).astype(np.int64)
        n_moving, n_same = moving.sum(axis=1), same.sum(axis=1)
        flagged = (n_moving >= MIN_MOVING) & (n_same >= AS_STATE_SHARE * np.maximum(n_moving, 1))
        sess.memo["as_state"] = (moving, same, flagged)
    return sess.memo["as_state"]


def check_action_is_state(v: View, out: Findings) -> None:
    """The action recorded as the current state: while the joints move a healthy action leads the state, so
    the two differ; equal on nearly every moving frame, the recorder saved the observed position instead."""
    sess = _session(v)
    if sess is None or sess.st is None:
        return
    q, s = v.quality, sess.s
    moving, same, flagged = _as_state(sess, q)
    for i in np.nonzero(flagged)[0]:
        j, share = int(np.argmax(moving[i])), same[i].sum() / moving[i].sum()
        out.warn("action_is_state", f"episode {s.episodes[i]}: its action equals the same frame's state (|action - "
                 f"state| <= {q.action_state_fraction:g} of the range) on {same[i].sum()} of {moving[i].sum()} moving "
                 f"frame-joints ({share:.0%}; '{s.joints[j]}': {same[i, j]} of {moving[i, j]}), where a healthy action "
                 f"leads the state: the recorder saved the observed position as the action, and the policy would "
                 f"learn to hold still. Exclude the episode",
                 key=s.joints[j], value=round(float(share), 4), expected=f"< {AS_STATE_SHARE}", **_where(s, i))


# ----------------------------------------------------------------------------- 7 action_lag
def _lag_errors(sess: Session, k_max: int, usable: np.ndarray) -> np.ndarray:
    """(E, 2K+1) mean |action[t] - state[t + k]| over the episode's moving frames, k = -K..K (NaN: too few)."""
    s, n = sess.s, len(sess.a)
    keep = np.logical_or.reduce([sess.moving[:, j] for j in range(sess.moving.shape[1])])  # any(axis=1), faster
    if not sess.finite:
        keep &= np.isfinite(sess.a).all(axis=1)
    if not usable.all():
        keep &= usable[sess.run]
    rows = _thinned(np.nonzero(keep)[0], sess.run, max(4 * MIN_MOVING, LAG_SAMPLE // len(s.starts)))
    errors, run = np.full((len(s.starts), 2 * k_max + 1), np.nan), sess.run[rows]
    if not len(rows):
        return errors
    idx = rows[:, None] + np.arange(-k_max, k_max + 1)[None]
    ok = (idx >= s.starts[run][:, None]) & (idx < s.ends[run][:, None])
    idx = np.clip(idx, 0, n - 1)
    with np.errstate(invalid="ignore"):
        err = np.abs(sess.a[rows][:, None, :] - sess.st[idx]).mean(axis=2)
    ok &= np.isfinite(err)
    first = np.nonzero(np.r_[True, run[1:] != run[:-1]])[0]  # rows are sorted: each episode's rows are a run
    sums = np.add.reduceat(np.where(ok, err, 0.0), first, axis=0)
    counts = np.add.reduceat(ok.astype(np.int64), first, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        errors[run[first]] = np.where(counts >= MIN_MOVING, sums / counts, np.nan)
    return errors


def _thinned(rows: np.ndarray, run: np.ndarray, cap: int) -> np.ndarray:
    """About ``cap`` of each episode's (sorted) rows, evenly spaced: every r-th row of an episode with r * cap."""
    run = run[rows]
    first = np.nonzero(np.r_[True, run[1:] != run[:-1]])[0]
    count = np.diff(np.r_[first, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(first, count)
    return rows[rank % np.repeat(-(-count // cap), count) == 0]


def _lag_verdicts(errors: np.ndarray, k_max: int, lag: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Best lag and its error per episode, the median lag, why blamed (0 not, 1 trails, 2 off the median)."""
    filled = np.where(np.isnan(errors), np.inf, errors)
    judged = np.isfinite(filled).any(axis=1)
    best = filled.argmin(axis=1) - k_max
    err_best = filled.min(axis=1)
    healthy = filled[:, k_max:k_max + lag + 1].min(axis=1)
    median = int(np.round(np.median(best[judged]))) if judged.any() else 0
    at_median = filled[:, median + k_max]
    why = np.where(judged & (best < -lag) & (err_best <= LAG_GAIN * healthy) & np.isfinite(healthy), 1, 0)
    why[(why == 0) & judged & (np.abs(best - median) > lag) & (err_best <= LAG_GAIN * at_median)
        & np.isfinite(at_median)] = 2
    return best, err_best, median, why


def check_action_lag(v: View, out: Findings) -> None:
    """The action trailing the state: a healthy state follows its action (state[t + k] ~ action[t], k ~ 1..3),
    a late-stamped action has action[t] ~ state[t - m]. Per episode the k in [-K, K] that fits best, blamed
    when the action trails by more than lag_frames, or the episode's k is off the dataset's median k by more
    than lag_frames (recorded otherwise), and only when it fits at least twice as well as those."""
    sess = _session(v)
    if sess is None or sess.st is None:
        return
    q, s = v.quality, sess.s
    k_max = 2 * q.lag_frames + LAG_EXTRA
    errors = _lag_errors(sess, k_max, ~_as_state(sess, q)[2])  # the recorded-as-state episodes are not lags
    best, err_best, median, why = _lag_verdicts(errors, k_max, q.lag_frames)
    for i in np.nonzero(why)[0]:
        j = int(np.argmax(np.nan_to_num(np.abs(np.diff(sess.a[s.starts[i]:s.ends[i]], axis=0))).sum(axis=0)))
        what = (f"its action matches the state {-best[i]} frames earlier (action[t] ~ state[t - {-best[i]}]): it "
                f"trails the state it should lead by more than {q.lag_frames} frames, stamped late" if why[i] == 1 else
                f"its action best matches the state {best[i]:+d} frames later, the other episodes' at {median:+d}: "
                f"recorded differently (more than {q.lag_frames} frames off)")
        out.warn("action_lag", f"episode {s.episodes[i]}: {what}; mean |action - state| {err_best[i]:.2%} of the range "
                 f"at that lag (joint '{s.joints[j]}' moves most). The policy would learn the wrong timing; exclude "
                 f"the episode", key=s.joints[j], value=int(best[i]),
                 expected=f">= {-q.lag_frames}" if why[i] == 1 else median, **_where(s, i))


# ----------------------------------------------------------------------------- 8 scale_mismatch
def _scale_stats(sess: Session) -> np.ndarray:
    """(3, E, J) each episode's level (mean |action|), spread (std) and jitter (mean |second difference|: the
    sensor's noise and quantization, whatever the motion) over its finite rows (NaN: under 3)."""
    s, ok = sess.s, np.ones(len(sess.a), dtype=bool) if sess.finite else np.isfinite(sess.a).all(axis=1)
    a = sess.a if sess.finite else np.where(ok[:, None], sess.a, np.float32(0))
    centred = ok.copy()  # the rows whose neighbours are in their episode, all three finite
    centred[s.starts], centred[s.ends - 1] = False, False
    centred[1:-1] &= ok[:-2] & ok[2:]
    jerk = np.zeros_like(a)
    jerk[1:-1] = np.abs(np.diff(a, 2, axis=0))
    jerk[~centred] = 0
    n = _per_episode(ok, s)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = _per_episode(a, s) / n
        stats = np.stack([_per_episode(np.abs(a), s) / n,
                          np.sqrt(np.maximum(_per_episode(a * a, s) / n - mean * mean, 0.0)),
                          _per_episode(jerk, s) / _per_episode(centred, s)[:, None]])
    stats[:, n[:, 0] < 3] = np.nan
    return stats


def _unit_name(ratio: float) -> str:
    return next((f" (~{f:.4g}x: {name}?)" for f, name in UNIT_FACTORS.items()
                 if abs(max(ratio, 1 / ratio) / f - 1) <= UNIT_TOLERANCE), "")


def _scale_flags(stats: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E, J) the joints whose level, spread and jitter are all off the episodes' median by more than
    ``ratio`` in one direction, and their spread ratio; (E,) the episodes in other units."""
    ref = np.nanmedian(stats, axis=1)  # (3, J)
    informative = (ref[0] > SCALE_MIN_REFERENCE) & (ref[1] > SCALE_MIN_SPREAD) & (ref[2] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = stats / ref[:, None]
        joint = ((r > ratio).all(axis=0) | (r < 1 / ratio).all(axis=0)) & informative
        lone = np.zeros_like(joint)
        for f in LONE_FACTORS:  # a single joint scaled by a unit factor about zero (the gripper in 0..1)
            off = np.abs(np.abs(np.log(r)) - np.log(f))  # (3, E, J) how far from the factor, either way
            lone |= (off[0] <= np.log(1.5)) & (off[1:] <= np.log(3)).all(axis=0)
    episodes = (joint.sum(axis=1) >= np.ceil(stats.shape[2] / 2)) | (joint & lone).any(axis=1)
    return joint, r[1], episodes


def check_scale_mismatch(v: View, out: Findings) -> None:
    """An episode in other units (radians among degrees, 0..1 among percent, degrees among ticks): level (mean
    |action|), spread (std) and jitter (mean |second difference|) all off the episodes' medians by more than
    scale_ratio one way, on half the contract's joints (a unit setting changes them all) or on one joint with
    the level off by 57.3 or 100. A small motion near zero shrinks level and spread, not the sensor's jitter."""
    sess = _session(v)
    if sess is None or len(sess.s.starts) < SCALE_MIN_EPISODES:
        return
    s, stats = sess.s, _scale_stats(sess)
    if np.isnan(stats).all(axis=1).any():
        return
    joint, r_spread, episodes = _scale_flags(stats, v.quality.scale_ratio)
    for i in np.nonzero(episodes)[0]:
        cols = np.nonzero(joint[i])[0]
        r = float(r_spread[i, j := int(cols[np.argmax(np.abs(np.log(r_spread[i, cols])))])])
        listed = ", ".join(f"'{s.joints[c]}' {r_spread[i, c]:.3g}x" for c in cols)
        out.warn("scale_mismatch", f"episode {s.episodes[i]}: its actions are {r:.3g}x the other episodes' scale "
                 f"(level, spread and jitter all off by more than {v.quality.scale_ratio:g}x){_unit_name(r)}; joints: "
                 f"{listed}. An episode in other units teaches the policy a different robot; convert it or exclude "
                 f"the episode", key=s.joints[j], value=round(r, 4),
                 expected=[round(1 / v.quality.scale_ratio, 4), v.quality.scale_ratio], **_where(s, i))


# ----------------------------------------------------------------------------- 9 near_duplicate_episodes
def _resampled(sess: Session, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, DUP_POINTS * J) each episode's ``values`` at evenly spaced frames (zeros where not finite), and how
    much they move: the mean |value - its mean| (NaN: not compared)."""
    s = sess.s
    pick = s.starts[:, None] + np.round(np.linspace(0, 1, DUP_POINTS)[None] * (s.lengths[:, None] - 1)).astype(int)
    x = values[pick]  # (E, P, J)
    usable = np.isfinite(x).all(axis=(1, 2))
    x = np.where(usable[:, None, None], x, 0.0)
    motion = np.where(usable, np.abs(x - x.mean(axis=1, keepdims=True)).mean(axis=(1, 2)), np.nan)
    return x.reshape(len(x), -1), motion


def _close_pairs(x: np.ndarray, near: Callable, lengths: np.ndarray, limit: float) -> tuple[np.ndarray, ...]:
    """Pairs (i < j) of similar length, mean |difference| below ``limit`` and ``near``: candidates by matrix
    products (mean |d| < limit implies RMS < limit * sqrt(D)), then their exact mean |d|."""
    d = x.shape[1]
    sq = (x * x).sum(axis=1, dtype=np.float64)
    found = [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))]
    for a in range(0, len(x), DUP_CHUNK):
        rms2 = (sq[a:a + DUP_CHUNK, None] + sq[None] - 2 * (x[a:a + DUP_CHUNK] @ x.T)) / d
        i, j = np.nonzero(rms2 < limit * limit * d)
        i += a
        keep = (i < j) & (np.minimum(lengths[i], lengths[j]) >= DUP_LENGTH_RATIO * np.maximum(lengths[i], lengths[j]))
        i, j = i[keep], j[keep]
        for b in range(0, len(i), DUP_PAIRS):  # the exact distances in bounded memory
            ib, jb = i[b:b + DUP_PAIRS], j[b:b + DUP_PAIRS]
            dist = np.abs(x[ib] - x[jb]).mean(axis=1, dtype=np.float64)
            ok = (dist < limit) & near(ib, jb, dist)
            found.append((ib[ok], jb[ok], dist[ok]))
    return tuple(np.concatenate(c) for c in zip(*found, strict=True))


def check_near_duplicate_episodes(v: View, out: Findings) -> None:
    """An episode whose actions and states nearly repeat an earlier one's (resampled to DUP_POINTS frames, mean
    |difference| below duplicate_fraction of the range; without a state, the actions also within DUP_RELATIVE
    of their motion; lengths within 10%): a replayed or re-saved demonstration weighs twice. Bit-identical
    actions are duplicate_episodes' finding."""
    sess = _session(v)
    if sess is None or len(sess.s.starts) < 2:
        return
    s, limit = sess.s, v.quality.duplicate_fraction
    x, motion = _resampled(sess, sess.a)
    if sess.st is not None:  # the states alike too: same actions from other states are other demonstrations
        y, still = _resampled(sess, sess.st)
        ok = np.isfinite(motion) & np.isfinite(still)
        near = lambda i, j, _: ok[i] & ok[j] & (np.abs(y[i] - y[j]).mean(axis=1) < limit)  # noqa: E731
    else:  # no state: the actions alike within DUP_RELATIVE of how much they move (NaN: not compared)
        near = lambda i, j, d: d <= DUP_RELATIVE * np.minimum(motion[i], motion[j])  # noqa: E731
    i, j, dist = _close_pairs(x, near, s.lengths, limit)
    order = np.lexsort((i, j))  # by the later episode, then the earlier
    i, j, dist = i[order], j[order], dist[order]
    zero = np.unique(j[dist == 0], return_index=True)[1]  # each episode's first pair alike to the bit, if any
    exact = [b for a, b in zip(i[dist == 0][zero].tolist(), j[dist == 0][zero].tolist(), strict=True)
             if _identical(s, a, b)]
    keep = ~np.isin(i, exact) & ~np.isin(j, exact)
    first = np.unique(j[keep], return_index=True)[1]  # each later episode with the earliest it repeats
    for a, b, d in zip(i[keep][first].tolist(), j[keep][first].tolist(), dist[keep][first].tolist(), strict=True):
        jj = int(np.argmax(cols := np.abs(x[a] - x[b]).reshape(DUP_POINTS, -1).mean(axis=0)))
        out.warn("near_duplicate_episodes", f"episode {s.episodes[b]} nearly repeats episode {s.episodes[a]}: their "
                 f"actions, resampled to {DUP_POINTS} points, differ by {d:.2%} of the range on average (below "
                 f"{v.quality.duplicate_fraction:.2%}; most on '{s.joints[jj]}', {cols[jj]:.2%}), lengths "
                 f"{s.lengths[b]} and {s.lengths[a]}: a replayed or re-saved demonstration weighs twice. Exclude the "
                 f"episode", key=s.joints[jj], value=int(s.episodes[a]), expected=round(d, 6), **_where(s, b))


def _identical(s: JointSeries, a: int, b: int) -> bool:  # bit-identical actions: duplicate_episodes'
    return bool(s.lengths[a] == s.lengths[b] and np.array_equal(
        s.action[s.starts[a]:s.ends[a]], s.action[s.starts[b]:s.ends[b]], equal_nan=True))


# ----------------------------------------------------------------------------- 10 drift
def _quarters(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the last quarter's median minus the first's, and whether it is a drift: a trend over all the
    episodes (rank correlation z >= DRIFT_Z) beyond DRIFT_SCATTER robust sigmas of the quarters' episodes."""
    q = len(values) // 4
    first, last = values[:q], values[-q:]
    diff = np.nanmedian(last, axis=0) - np.nanmedian(first, axis=0)
    around = np.concatenate([first - np.nanmedian(first, axis=0), last - np.nanmedian(last, axis=0)])
    scatter = 1.4826 * np.nanmedian(np.abs(around), axis=0)
    z = np.zeros(values.shape[1])
    for j in range(values.shape[1]):  # the joints, not the episodes
        order = np.nonzero(np.isfinite(values[:, j]))[0]
        if len(order) >= DRIFT_MIN_EPISODES:
            ranks = np.argsort(np.argsort(values[order, j], kind="stable")).astype(np.float64)
            rho, nu = np.corrcoef(np.arange(len(order)), ranks)[0, 1] if ranks.std() > 0 else 0.0, len(order) - 2
            t = rho * np.sqrt(nu / max(1 - rho * rho, 1e-12))  # Student's t of the rank correlation, nu df
            z[j] = t * (1 - 1 / (4 * nu)) / np.sqrt(1 + t * t / (2 * nu))  # as a normal z-score
    return diff, (z * np.sign(diff) >= DRIFT_Z) & (np.abs(diff) > DRIFT_SCATTER * scatter)


def _drift_measures(v: View, sess: Session) -> dict[str, np.ndarray]:
    """(E, J) per episode (run order), less its task's median: the pose at the episode's start (the state's,
    else the action's), its mean action, and its mean action - state where the joint rests."""
    s = sess.s
    measures = {"the pose at the episode's start": (sess.st if sess.st is not None else sess.a)[s.starts],
                "the episode's mean action": _mean_where(sess.a, np.isfinite(sess.a), s)}
    if sess.st is not None:
        measures["the offset action - state at rest"] = _mean_where(_offset(sess), ~sess.moving & np.isfinite(
            _offset(sess)), s)
    task = v.frames.scalars.get("task_index")
    _, of, count = np.unique(np.zeros(len(s.starts)) if task is None else task[s.starts], return_inverse=True,
                             return_counts=True)
    common = (count >= DRIFT_TASK_EPISODES)[of]
    if common.mean() < 0.5:
        return measures  # most tasks too rare to have a median: the values as they are
    for k in np.nonzero(count >= DRIFT_TASK_EPISODES)[0]:  # the tasks, not the episodes
        for values in measures.values():
            values[of == k] -= np.nanmedian(values[of == k], axis=0)
    return {what: np.where(common[:, None], values, np.nan) for what, values in measures.items()}


def _mean_where(x: np.ndarray, ok: np.ndarray, s: JointSeries) -> np.ndarray:  # (E, J) mean over ok (NaN: none)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _per_episode(np.where(ok, x, np.float32(0)), s) / _per_episode(ok, s)


def check_drift(v: View, out: Findings) -> None:
    """The session drifting, per joint: the pose at the episode's start (the home moving), its mean action, or
    its offset action - state at rest (a calibration creeping), each less its task's median; the last quarter
    of the episodes against the first: over drift_fraction of the range apart, in a steady trend (rank
    correlation with the order, z >= DRIFT_Z) beyond DRIFT_SCATTER sigmas of the quarters' episodes."""
    sess = _session(v)
    if sess is None or len(sess.s.starts) < DRIFT_MIN_EPISODES:
        return
    s, limit = sess.s, v.quality.drift_fraction
    order = np.argsort(s.episodes, kind="stable")
    q, eps = len(order) // 4, s.episodes[order]
    found: dict[int, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a joint with no value in a quarter: NaN, no drift
        measures = {what: _quarters(values[order]) for what, values in _drift_measures(v, sess).items()}
    for what, (delta, trend) in measures.items():
        for j in np.nonzero((np.abs(delta) > limit) & trend)[0]:
            found.setdefault(int(j), []).append((what, float(delta[j])))
    for j, seen in sorted(found.items()):
        said = "; ".join(f"{what} moved by {d * s.width[j]:+.4g} ({d:+.1%} of the range, in a steady trend over "
                         f"the episodes)" for what, d in seen)
        out.warn("drift", f"joint '{s.joints[j]}' drifts over the session (episodes {eps[0]}..{eps[q - 1]} vs "
                 f"{eps[-q]}..{eps[-1]}): {said}, more than {limit:.0%} of the range. A calibration creeping or the "
                 f"robot's home moving: re-calibrate, or split the session into the parts before and after",
                 key=s.joints[j], value=round(max((d for _, d in seen), key=abs) * float(s.width[j]), 6),
                 expected=round(limit * float(s.width[j]), 6))
