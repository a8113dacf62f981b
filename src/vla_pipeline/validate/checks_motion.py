"""Behavioural checks of the contract's joints (issue 29): faults that poison the loss while every number
looks fine. A recorder drop-out that freezes the state while the action moves, a state that does not follow
its action (a dead follower motor, a calibration), a joint pinned at a limit or clamped, single-frame glitches
and encoder wraparounds, a static lead-in or lead-out. Each finding is a warning naming the episode, its
frames (frame_index, [first, last]) and the joint, with the numbers seen and a suggestion: exclude the
episode, or trim it to the frames to keep. Thresholds are ``v.quality`` (validate.quality); fractions are of
the joint's range width (``JointSeries.width``). Everything is vectorized over all frames, on the joints as
(J, n) rows (``_columns``); Python loops run only over what was found. Non-finite values (check_finite's
errors) count as not moving and never as a fault.
"""

from __future__ import annotations

import numpy as np

from vla_pipeline.validate.behaviour import JointSeries, joint_series
from vla_pipeline.validate.findings import Findings, View

FROZEN_ACTION_MOVES = 5.0  # x still_fraction: the action's span in each half of a frozen run (1 % of the range)
FOLLOW_MIN_SPAN = 0.05  # an action spanning less of its range in an episode is not judged by state_follows_action
MAX_LAG = 5  # frames the state may trail its action by in state_follows_action
CONSTANT = 1e-12  # a variance this small relative to the mean square: a constant series (its correlation is 0)


# ----------------------------------------------------------------------------- helpers
def _signals(s: JointSeries) -> list[tuple[str, np.ndarray]]:
    return [("action", s.action)] + ([("state", s.state)] if s.state is not None else [])


def _columns(v: View, s: JointSeries) -> dict[str, np.ndarray]:
    """Action and state as contiguous (J, n) arrays, one row per joint, cached on the view: numpy reduces
    and differences along a contiguous row several times faster than down a column of (n, J)."""
    cached = v.cache.get("motion_columns")
    if cached is None or cached[0] is not s:
        cached = (s, {name: np.ascontiguousarray(x.T) for name, x in _signals(s)})
        v.cache["motion_columns"] = cached
    return cached[1]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and one past the last of each run of True in a 1-D boolean array."""
    edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
    return np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]


def _span(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(k, J) max - min of the (J, n) ``x`` over frames [lo, hi) of each segment (hi > lo), NaN ignored."""
    idx = np.stack([lo, hi], axis=1).ravel()
    if idx[-1] == x.shape[1]:  # the last segment runs to the end: reduceat's last index does
        idx = idx[:-1]
    return (np.fmax.reduceat(x, idx, axis=1) - np.fmin.reduceat(x, idx, axis=1))[:, ::2].T


def _episode_of(s: JointSeries, rows: np.ndarray) -> np.ndarray:
    """Position (in ``s.starts``) of the episode of each row."""
    return np.searchsorted(s.starts, rows, side="right") - 1


def _frames(s: JointSeries, first_row: int, last_row: int) -> list[int]:
    return [int(s.frame[first_row]), int(s.frame[last_row])]


# ----------------------------------------------------------------------------- frozen state
@np.errstate(invalid="ignore")  # inf - inf in a non-finite row: NaN, never a fault
def check_frozen_state(v: View, out: Findings) -> None:
    """Runs of at least ``frozen_state_frames`` frames in which no joint's state changes (every step and the
    run's span within still_fraction of the range) while some joint's action moves by more than
    FROZEN_ACTION_MOVES x still_fraction of its range in each half of the run: the recorder repeated a stale
    state while the operator kept moving. Both halves: a grasp, where the follower's gripper stalls on the
    object while the leader's trigger closes a little further and then holds, moves the action only at the
    start of the run. One finding per episode, its longest run."""
    s, q = joint_series(v), v.quality
    if s is None or s.state is None or len(s.state) < 2:
        return
    cols, tol = _columns(v, s), q.still_fraction * s.width
    steps = np.abs(np.diff(cols["state"], axis=1))
    # near-still runs, and runs of a bit-identical state (a recorder repeating its last reading), which a
    # slow stretch next to them cannot hide
    lo, hi = zip(*(_runs((steps <= t).all(axis=0) & s.same_episode()) for t in (tol[:, None], 0.0)), strict=True)
    lo, hi = np.concatenate(lo), np.concatenate(hi) + 1  # still steps lo..hi-1: frames lo..hi hold one state
    keep = hi - lo >= max(q.frozen_state_frames, 2)
    lo, hi = np.unique(np.stack([lo[keep], hi[keep]]), axis=1)
    if not len(lo):
        return
    mid = (lo + hi) // 2
    moved = np.minimum(_span(cols["action"], lo, mid + 1), _span(cols["action"], mid, hi)) / s.width
    flagged = (_span(cols["state"], lo, hi) <= tol).all(axis=1) & \
        (moved > FROZEN_ACTION_MOVES * q.still_fraction).any(axis=1)
    for i in np.nonzero(flagged)[0]:  # a run inside another flagged run is the same drop-out
        flagged[i] = not ((lo[flagged] <= lo[i]) & (hi[flagged] >= hi[i]) & (hi[flagged] - lo[flagged] > hi[i] - lo[i])).any()
    lo, hi, moved = lo[flagged], hi[flagged], moved[flagged]
    ep = _episode_of(s, lo)
    for i in np.unique(ep):
        _frozen_finding(v, s, out, i, (lo[ep == i], hi[ep == i], moved[ep == i]))


def _frozen_finding(v: View, s: JointSeries, out: Findings, i: int, runs: tuple) -> None:
    lo, hi, moved = runs
    k = int(np.argmax(hi - lo))
    a, b, length = int(lo[k]), int(hi[k]) - 1, int(hi[k] - lo[k])
    j = int(np.argmax(moved[k]))
    span = float(np.ptp(_columns(v, s)["action"][j, a:b + 1]))
    start, end = int(s.starts[i]), int(s.ends[i])
    head, tail = lo == start, hi == end
    keep = [int(hi[head].max()) if head.any() else start, int(lo[tail].min()) if tail.any() else end - 1]
    trim = bool((head | tail).all()) and keep[1] > keep[0]
    advice = (f"trim the episode to frames {s.frame[keep[0]]}..{s.frame[keep[1]]}" if trim
              else "exclude the episode")
    e, joint = int(s.episodes[i]), s.joints[j]
    out.warn("frozen_state", f"episode {e}: the state of every joint stays frozen for {length} frames "
             f"({length / s.fps:.2f} s, frames {s.frame[a]}..{s.frame[b]}) while the action of '{joint}' moves "
             f"by {span:.4g} ({span / s.width[j]:.0%} of its range): a recorder drop-out repeating a stale state "
             f"({len(lo)} such run{'s' if len(lo) > 1 else ''} in the episode, at least {v.quality.frozen_state_frames}"
             f" frames each); {advice}", episode=e, frame=s.frame[a], key=joint, value=length,
             expected=v.quality.frozen_state_frames, frames=_frames(s, a, b),
             suggestion="trim" if trim else "exclude", trim=_frames(s, *keep) if trim else None)


# ----------------------------------------------------------------------------- state follows action
@np.errstate(invalid="ignore")  # inf - inf in a non-finite row: NaN, never a fault
def check_state_follows_action(v: View, out: Findings) -> None:
    """Per episode and joint whose action spans more than FOLLOW_MIN_SPAN of its range, the state does not
    follow it: both the Pearson correlation of the action with the state, the state trailing by 0..MAX_LAG
    frames (the best lag counts), and the correlation of the state's steps with its distance to the action
    (a follower moves toward its target, however far behind it trails: the demo's slow first-order arm on a
    short episode) stay below ``follow_min_corr``. A state that never moves correlates 0. (A joint whose
    action never moves is check_static_joints'.)"""
    s, q = joint_series(v), v.quality
    if s is None or s.state is None or not len(s.starts):
        return
    cols = _columns(v, s)
    ok = np.isfinite(cols["action"]).all(axis=0) & np.isfinite(cols["state"]).all(axis=0)
    high, low = np.fmax.reduceat(cols["action"], s.starts, axis=1), np.fmin.reduceat(cols["action"], s.starts, axis=1)
    span = ((high - low) / s.width[:, None]).T
    corr = _correlation(cols["action"], cols["state"], ok, s.starts)
    weak = (span > FOLLOW_MIN_SPAN) & (corr < q.follow_min_corr)  # NaN (too few finite frames): not judged
    eps = np.nonzero(weak.any(axis=1))[0]
    toward = np.full(corr.shape, np.nan)
    if len(eps):
        for lag in range(1, MAX_LAG + 1):
            corr[eps] = np.fmax(corr[eps], _paired_correlation(s, cols, ok, eps, lag))
        toward[eps] = _paired_correlation(s, cols, ok, eps, 1, toward=True)
        weak[eps] &= (corr[eps] < q.follow_min_corr) & ~(toward[eps] >= q.follow_min_corr)
    for i, j in zip(*np.nonzero(weak), strict=True):
        e, joint, first, last = int(s.episodes[i]), s.joints[j], int(s.starts[i]), int(s.ends[i]) - 1
        out.warn("state_follows_action", f"episode {e}: the state of '{joint}' does not follow its action: "
                 f"correlation {corr[i, j]:.2f} at the best lag of 0..{MAX_LAG} frames, {toward[i, j]:.2f} between "
                 f"its steps and its distance to the action (at least {q.follow_min_corr} expected), while the "
                 f"action spans {span[i, j] * s.width[j]:.4g} ({span[i, j]:.0%} of its range) over frames "
                 f"{s.frame[first]}..{s.frame[last]}: a dead or unpowered follower motor, or a calibration fault; "
                 f"exclude the episode", episode=e, frame=s.frame[first], key=joint,
                 value=round(float(corr[i, j]), 4), expected=q.follow_min_corr, frames=_frames(s, first, last),
                 suggestion="exclude")


def _paired_correlation(s: JointSeries, cols: dict, ok: np.ndarray, eps: np.ndarray, lag: int,
                        toward: bool = False) -> np.ndarray:
    """(len(eps), J) correlation, within each of the episodes ``eps``, of action[t] with state[t + lag]; with
    ``toward``, of action[t] - state[t] with state[t + lag] - state[t]."""
    pairs = np.maximum(s.lengths[eps] - lag, 0)
    out = np.full((len(eps), len(s.joints)), np.nan)
    enough = pairs >= 3
    if not enough.any():
        return out
    pairs = pairs[enough]
    seg = np.cumsum(pairs) - pairs
    rows = np.arange(pairs.sum()) + np.repeat(s.starts[eps][enough] - seg, pairs)
    a, b, later = cols["action"][:, rows], cols["state"][:, rows], cols["state"][:, rows + lag]
    out[enough] = _correlation(a - b, later - b, ok[rows] & ok[rows + lag], seg) if toward else \
        _correlation(a, later, ok[rows] & ok[rows + lag], seg)
    return out


def _correlation(a: np.ndarray, b: np.ndarray, ok: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """(len(seg), J) Pearson correlation of the rows of the (J, m) ``a`` and ``b`` over the frames of each
    segment (starting at ``seg``) where ``ok``; 0 where either is constant, NaN with fewer than 3 frames."""
    if not ok.all():
        a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    n = np.add.reduceat(ok.astype(np.float64), seg)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = np.add.reduceat(a, seg, axis=1) / n, np.add.reduceat(b, seg, axis=1) / n
        aa, bb = np.add.reduceat(a * a, seg, axis=1) / n, np.add.reduceat(b * b, seg, axis=1) / n
        va, vb = aa - ma * ma, bb - mb * mb
        cov = np.add.reduceat(a * b, seg, axis=1) / n - ma * mb
        r = cov / np.sqrt(va * vb)
    r = np.where((va <= CONSTANT * aa) | (vb <= CONSTANT * bb), 0.0, np.clip(r, -1.0, 1.0))
    r[:, n < 3] = np.nan
    return r.T


# ----------------------------------------------------------------------------- saturation
@np.errstate(invalid="ignore")  # inf - inf in a non-finite row: NaN, never a fault
def check_saturation(v: View, out: Findings) -> None:
    """Per episode, joint and vector (action, state): at least ``saturation_fraction`` of the frames within
    still_fraction of the range of a contract limit (or beyond it), or exactly at the dataset's own extreme of
    the joint when the episode moves elsewhere too (a value clamped by the calibration, e.g. +-100 of
    LeRobot's normalized ranges, under a contract in degrees). A grasp held at one value is neither: the
    contract's limits lie beyond what the arm reaches, and a held object stops the gripper short of its
    extreme; only a hold over most of an episode at the limit or the extreme itself warns."""
    s, q = joint_series(v), v.quality
    if s is None or not len(s.starts):
        return
    tol = q.still_fraction * s.width
    limits = np.array([v.contract.ranges.get(j, (np.nan, np.nan)) for j in s.joints], dtype=np.float64)
    for name, x in _columns(v, s).items():
        high, low = np.fmax.reduceat(x, s.starts, axis=1), np.fmin.reduceat(x, s.starts, axis=1)
        moves = high - low > tol[:, None]
        for sign, extreme, limit in ((1.0, high, limits[:, 1]), (-1.0, low, limits[:, 0])):
            share, level, clamped = _pinned(v, s, x, (sign, extreme, limit), moves)
            for j, i in zip(*np.nonzero(share >= q.saturation_fraction), strict=True):
                cmp = np.equal if clamped[j, i] else np.greater_equal if sign > 0 else np.less_equal
                seg = x[j, s.starts[i]:s.ends[i]]
                pinned = cmp(seg, level[j, i]) & np.isfinite(seg)  # +-inf (check_finite's) is no limit
                if pinned.mean() >= q.saturation_fraction:
                    _saturation_finding(v, s, out, (name, i, j, sign), (
                        extreme[j, i] if clamped[j, i] else limit[j], pinned.mean(), not clamped[j, i], pinned))


def _pinned(v: View, s: JointSeries, x: np.ndarray, side: tuple, moves: np.ndarray) -> tuple:
    """(J, E) share of each episode's frames within still_fraction of one side's contract limit or beyond
    (sign 1: high, -1: low) or, where that share is short of saturation_fraction, exactly at the dataset's
    extreme when the episode sits there and moves elsewhere (a clamp repeats its value to the bit; a held
    pose drifts, and a grasp stops the gripper short of its extreme); the level counted, and which of them."""
    (sign, extreme, limit), tol = side, v.quality.still_fraction * s.width
    cmp = np.greater_equal if sign > 0 else np.less_equal
    level = np.repeat((limit - sign * tol)[:, None], len(s.starts), axis=1)
    share = np.zeros(extreme.shape)
    has = np.nonzero(~np.isnan(limit))[0]
    if len(has):
        share[has] = np.add.reduceat(cmp(x[has], level[has, :1]), s.starts, axis=1, dtype=np.int64) / s.lengths
    top = np.fmax.reduce(sign * extreme, axis=1)  # the dataset's extreme (NaN: all non-finite)
    clamped = (sign * extreme == top[:, None]) & moves & (share < v.quality.saturation_fraction)
    for j, i in zip(*np.nonzero(clamped), strict=True):  # the episodes at the dataset's extreme: few
        level[j, i] = extreme[j, i]
        share[j, i] = np.count_nonzero(x[j, s.starts[i]:s.ends[i]] == level[j, i]) / s.lengths[i]
    return share, level, clamped


def _saturation_finding(v: View, s: JointSeries, out: Findings, where: tuple, seen: tuple) -> None:
    name, i, j, sign = where
    value, share, at_limit, pinned = seen
    rows = s.starts[i] + np.nonzero(pinned)[0]
    e, joint, side = int(s.episodes[i]), s.joints[j], "upper" if sign > 0 else "lower"
    what = (f"the contract's {side} limit" if at_limit else
            f"exactly the {'largest' if sign > 0 else 'smallest'} value of the joint in the dataset (clamped?)")
    out.warn("saturation", f"episode {e}: {name} '{joint}' is pinned at {value:.4g}, {what}, in {share:.0%} of its "
             f"{s.lengths[i]} frames (frames {s.frame[rows[0]]}..{s.frame[rows[-1]]}; "
             f"{v.quality.saturation_fraction:.0%} warns): a joint held at its limit or clamped by its "
             f"calibration, not a demonstration of the task; exclude the episode", episode=e,
             frame=s.frame[rows[0]], key=joint, value=round(float(share), 4), expected=v.quality.saturation_fraction,
             frames=_frames(s, rows[0], rows[-1]), suggestion="exclude")


# ----------------------------------------------------------------------------- glitches
@np.errstate(invalid="ignore")  # inf - inf in a non-finite row: NaN, never a fault
def check_glitches(v: View, out: Findings) -> None:
    """Single-frame glitches (a frame departing from both neighbours by more than ``glitch_fraction`` of the
    range while they agree within it: a spike that comes back) and one-frame jumps of more than
    ``wrap_fraction`` of the range that do not come back (encoder wraparound), in the action and the state,
    never across episodes. One finding per episode and joint: its worst, with the counts."""
    s, q = joint_series(v), v.quality
    if s is None or len(s.action) < 2:
        return
    same = s.same_episode()
    events = [_glitch_events(s, x, same, q.glitch_fraction * s.width, q.wrap_fraction * s.width)
              for x in _columns(v, s).values()]
    events = [(*ev, np.full(len(ev[0]), k)) for k, ev in enumerate(events)]
    row, col, kind, mag, sig = (np.concatenate(z) for z in zip(*events, strict=True))
    if not len(row):
        return
    group = _episode_of(s, row) * len(s.joints) + col
    order = np.argsort(group, kind="stable")
    _, first = np.unique(group[order], return_index=True)
    for sel in np.split(order, first[1:]):  # one finding per episode and joint
        _glitch_finding(v, s, out, (row[sel], col[sel], kind[sel], mag[sel], sig[sel]))


def _glitch_events(s: JointSeries, x: np.ndarray, same: np.ndarray, glitch: np.ndarray, wrap: np.ndarray) -> tuple:
    """(frame row, joint, kind 0 spike / 1 jump, size as a fraction of the range) of each glitch in the (J, n)
    ``x``: a spike's row is the odd frame, a jump's the first frame after it."""
    step = np.diff(x, axis=1)
    np.abs(step, out=step)  # NaN next to a non-finite value: never above a threshold
    j, i = np.nonzero(step > glitch[:, None])  # candidates, few: the rest works on them only
    keep = np.isfinite(step[j, i]) & same[i]
    j, i = j[keep], i[keep]
    key = j * x.shape[1] + i  # sorted (row-major)
    nxt = np.searchsorted(key, key + 1)
    has = nxt < len(key)
    has[has] &= key[nxt[has]] == key[has] + 1  # the next frame's step is a candidate too
    spike = has.copy()
    spike[has] &= np.abs(x[j[has], i[has] + 2] - x[j[has], i[has]]) <= glitch[j[has]]
    in_spike = spike.copy()
    in_spike[nxt[spike]] = True  # a spike's step back
    jump = ~in_spike & (step[j, i] > wrap[j])
    si, sj = i[spike], j[spike]
    size = np.abs(x[sj, si + 1] - (x[sj, si] + x[sj, si + 2]) / 2) / s.width[sj]
    return (np.concatenate([si + 1, i[jump] + 1]), np.concatenate([sj, j[jump]]),
            np.repeat([0, 1], [len(si), int(jump.sum())]),
            np.concatenate([size, step[j[jump], i[jump]] / s.width[j[jump]]]))


def _glitch_finding(v: View, s: JointSeries, out: Findings, ev: tuple) -> None:
    row, col, kind, mag, sig = ev
    w = int(np.argmax(mag))
    names = [n for n, _ in _signals(s)]
    e, joint, j = int(s.episodes[_episode_of(s, row[:1])[0]]), s.joints[col[0]], int(col[0])
    spikes, jumps = int((kind == 0).sum()), int((kind == 1).sum())
    what = ("a single-frame spike that comes back" if kind[w] == 0 else "a one-frame jump that stays")
    out.warn("glitches", f"episode {e}: '{joint}' has {spikes} single-frame spike{'' if spikes == 1 else 's'} "
             f"(>{v.quality.glitch_fraction:.0%} of its range, back the next frame) and {jumps} jump"
             f"{'' if jumps == 1 else 's'} (>{v.quality.wrap_fraction:.0%}, not back: encoder wraparound) in "
             f"{' and '.join(sorted({names[k] for k in sig.tolist()}))}, frames {s.frame[row.min()]}.."
             f"{s.frame[row.max()]}; the worst: {what}, {mag[w] * s.width[j]:.4g} ({mag[w]:.0%} of the range) "
             f"in the {names[sig[w]]} at frame {s.frame[row[w]]}; exclude the episode", episode=e,
             frame=s.frame[row[w]], key=joint, value=round(float(mag[w]), 4),
             expected=v.quality.glitch_fraction if kind[w] == 0 else v.quality.wrap_fraction,
             frames=_frames(s, row.min(), row.max()), suggestion="exclude")


# ----------------------------------------------------------------------------- idle ends
@np.errstate(invalid="ignore")  # inf - inf in a non-finite row: NaN, never a fault
def check_idle_ends(v: View, out: Findings) -> None:
    """A static lead-in (lead-out): more than idle_seconds x fps leading (trailing) frames in which no joint
    of the action or the state departs from its first (last) value by more than still_fraction of its range.
    It teaches the policy to do nothing: trim to the frames from the last still one of the lead-in to the
    first still one of the lead-out. One finding per episode; an episode that never moves: exclude."""
    s, q = joint_series(v), v.quality
    if s is None or not len(s.starts):
        return
    tol = q.still_fraction * s.width
    idle = int(np.floor(q.idle_seconds * s.fps + 1e-9))  # frames allowed; one more warns
    head = _still_window(s, tol, s.starts, idle + 1)
    tail = _still_window(s, tol, s.ends - 1, -(idle + 1))
    for i in np.nonzero(head | tail)[0]:
        _idle_finding(v, s, out, int(i), idle)


def _still_window(s: JointSeries, tol: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """(E,) True where the |k| frames from ``ref`` on (backwards when k < 0) all stay within ``tol`` of
    frame ``ref`` in every joint of action and state (non-finite frames count as still; a non-finite
    reference frame never)."""
    rows = np.clip(ref[:, None] + np.sign(k) * np.arange(abs(k)), 0, len(s.action) - 1)
    still = s.lengths >= abs(k)
    for _, x in _signals(s):
        base = x[ref]
        still &= np.isfinite(base).all(axis=1) & ~(np.abs(x[rows] - base[:, None, :]) > tol).any(axis=(1, 2))
    return still


def _idle_extent(s: JointSeries, tol: np.ndarray, a: int, b: int) -> tuple[int, int, int, int]:
    """Frames of the still lead-in and lead-out of rows [a, b) (non-finite frames count as still), and the
    joints that end them (the one moving most in the frame after the lead-in, before the lead-out)."""
    dev_head, dev_tail = np.zeros((b - a, len(tol))), np.zeros((b - a, len(tol)))
    for _, x in _signals(s):
        seg = x[a:b]
        dev_head = np.fmax(dev_head, np.abs(seg - seg[0]) / tol)
        dev_tail = np.fmax(dev_tail, np.abs(seg - seg[-1]) / tol)
    head, tail = np.nonzero((dev_head > 1).any(axis=1))[0], np.nonzero((dev_tail > 1).any(axis=1))[0]
    if not len(head):
        j = int(np.argmax(dev_head.max(axis=0)))
        return b - a, b - a, j, j
    return (int(head[0]), b - a - 1 - int(tail[-1]), int(np.argmax(dev_head[head[0]])),
            int(np.argmax(dev_tail[tail[-1]])))


def _idle_finding(v: View, s: JointSeries, out: Findings, i: int, idle: int) -> None:
    a, b, e, q = int(s.starts[i]), int(s.ends[i]), int(s.episodes[i]), v.quality
    head, tail, j, jt = _idle_extent(s, q.still_fraction * s.width, a, b)
    still = f"no joint of the action or state moves by more than {q.still_fraction:.1%} of its range"
    if head == b - a:
        out.warn("idle_ends", f"episode {e}: {still} in any of its {b - a} frames ({s.frame[a]}..{s.frame[b - 1]}; "
                 f"'{s.joints[j]}' moves most): it teaches the policy to do nothing; exclude the episode",
                 episode=e, frame=s.frame[a], key=s.joints[j], value=[head, tail], expected=idle,
                 frames=_frames(s, a, b - 1), suggestion="exclude")
        return
    head, tail = head if head > idle else 0, tail if tail > idle else 0
    j = j if head else jt
    keep = [a + head - 1 if head else a, b - tail if tail else b - 1]  # the last still frame of the lead-in, ...
    parts = [f"a static lead-in of {head} frames ({head / s.fps:.1f} s, frames {s.frame[a]}..{s.frame[a + head - 1]}"
             f", until '{s.joints[j]}' moves)" if head else "",
             f"a static lead-out of {tail} frames ({tail / s.fps:.1f} s, frames {s.frame[b - tail]}.."
             f"{s.frame[b - 1]}, after '{s.joints[jt]}' stops)" if tail else ""]
    trim = keep[1] > keep[0]
    advice = f"trim the episode to frames {s.frame[keep[0]]}..{s.frame[keep[1]]}" if trim else "exclude the episode"
    covered = [a if head else b - tail, b - 1 if tail else a + head - 1]
    out.warn("idle_ends", f"episode {e}: {' and '.join(p for p in parts if p)} in which {still} (more than "
             f"{q.idle_seconds:g} s warns): it teaches the policy to do nothing; {advice}", episode=e,
             frame=s.frame[covered[0]], key=s.joints[j], value=[head, tail], expected=idle,
             frames=_frames(s, *covered), suggestion="trim" if trim else "exclude",
             trim=_frames(s, *keep) if trim else None)
