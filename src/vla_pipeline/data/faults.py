"""Planted behavioural faults: copies of a LeRobot v3.0 dataset with a known fault in known episodes.

One pure ``compute_*`` function per fault class (:data:`FAULT_KINDS`) on an episode's action and state
(whole vectors, float64, frame order) and the contract's :class:`Layout`, its docstring saying what it
plants and its options; :func:`plant_fault` reads a dataset *copy*'s data parquet files, plants one class
into the chosen episodes and writes them back with every other column, the schema (with its metadata),
the dtypes and every episode's length unchanged. ``meta/`` (stats included) and the videos keep the
clean values. The result stays valid by schema and by the contract's ranges (but ``scale_mismatch``
with a factor that leaves them)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.features import vector_dim
from vla_pipeline.data.tables import feature_names, load_info
from vla_pipeline.errors import VlaError

WHERE = {"both": ("action", "state"), "action": ("action",), "state": ("state",)}  # the vectors a fault is in
ANGULAR_UNITS = ("deg", "degree", "degrees", "rad", "radian", "radians")
MOVING = 0.05  # a joint whose action spans this fraction of its range in the episode moves


class FaultError(VlaError, ValueError):
    """A fault that cannot be planted as asked (an unknown class, an episode too short for it)."""


@dataclass(frozen=True)
class Layout:
    """Where the contract's joints are in the action and state vectors, and their ranges."""

    joints: tuple[str, ...]
    a_cols: np.ndarray  # (J,) position of each joint in the action vector
    s_cols: np.ndarray  # (J,) ... in the state vector
    low: np.ndarray  # (J,) the contract's range, else the joint's extent in the data
    high: np.ndarray
    angular: np.ndarray  # (J,) bool: the contract's unit of the joint is an angle
    shared: tuple[tuple[int, int], ...]  # (action col, state col) of every name both vectors have
    fps: float

    @property
    def width(self) -> np.ndarray:
        return np.maximum(self.high - self.low, 1e-9)


@dataclass(frozen=True)
class Episode:
    action: np.ndarray  # (T, Da) float64
    state: np.ndarray  # (T, Ds) float64

    def copy(self) -> Episode:
        return Episode(self.action.copy(), self.state.copy())


# ----------------------------------------------------------------------------- helpers
def pick_joint(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None,
               strict: bool = False) -> int:
    """Joint ``joint`` (by name), else one whose action moves in ``ep`` (else the most moving; strict: refused)."""
    if joint is not None:
        if joint not in lay.joints:
            raise FaultError(f"joint {joint!r} is not one of the contract's joints {list(lay.joints)}")
        return lay.joints.index(joint)
    span = np.ptp(ep.action[:, lay.a_cols], axis=0) / lay.width
    moving = np.nonzero(span >= MOVING)[0]
    if strict and not len(moving):
        raise FaultError(f"no joint's action moves by {MOVING:.0%} of its range in this episode")
    return int(rng.choice(moving)) if len(moving) else int(np.argmax(span))


def _column(ep: Episode, lay: Layout, key: str, j: int) -> np.ndarray:
    """A writable view of joint ``j``'s column of ``key`` in ``ep``."""
    return getattr(ep, key)[:, (lay.a_cols if key == "action" else lay.s_cols)[j]]


def _record(lay: Layout, j: int | None, frames: list[int], **extra) -> dict:
    return {"joints": [lay.joints[j]] if j is not None else list(lay.joints), "frames": frames, **extra}


# ----------------------------------------------------------------------------- per-episode faults
def compute_frozen_state(ep: Episode, lay: Layout, rng: np.random.Generator, length: int | None = None):
    """The whole state holds for ``length`` (17..82) frames, off both ends, where the action moves (busier half)."""
    n = len(ep.action)
    length = min(int(length or rng.integers(17, 83)), n - 3)
    if length < 2:
        raise FaultError(f"an episode of {n} frames is too short for a frozen state")
    motion = np.abs(np.diff(ep.action[:, lay.a_cols], axis=0) / lay.width).sum(axis=1)
    starts = np.arange(1, n - length)  # the window [start, start + length) touches neither end
    windows = np.convolve(motion, np.ones(length - 1), "valid")[starts]  # the action's motion inside it
    start = int(rng.choice(starts[windows >= 0.5 * windows.max()]))
    out = ep.copy()
    out.state[start: start + length] = ep.state[start]
    return out, _record(lay, None, [start, start + length - 1], length=length)


def compute_dead_joint(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None):
    """One moving joint holds its first value, in the action and the state, for the whole episode."""
    j, out = pick_joint(ep, lay, rng, joint), ep.copy()
    for key in ("action", "state"):
        col = _column(out, lay, key, j)
        col[:] = col[0]
    return out, _record(lay, j, [0, len(ep.action) - 1])


def compute_state_not_following(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None,
                                noise: float = 0.002):
    """One joint's state stays at its first value plus encoder noise while its action moves (by MOVING)."""
    j, out = pick_joint(ep, lay, rng, joint, strict=True), ep.copy()
    col = _column(out, lay, "state", j)
    col[:] = np.clip(col[0] + rng.normal(0.0, noise * lay.width[j], len(ep.action)), lay.low[j], lay.high[j])
    corr = np.corrcoef(_column(out, lay, "action", j), col)[0, 1]
    return out, _record(lay, j, [0, len(ep.action) - 1], correlation=round(float(corr), 3))


def compute_saturation(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None,
                       fraction: float | None = None, maximum: np.ndarray | None = None):
    """One joint pinned at its nearer contract limit, action and state, for ``fraction`` (drawn in
    0.84..1.0) of the episode; with ``maximum`` (each joint's maximum action in the dataset): its action
    only, at that maximum, for ``fraction`` (0.95)."""
    n, j, out = len(ep.action), pick_joint(ep, lay, rng, joint), ep.copy()
    fraction = fraction if fraction is not None else rng.uniform(0.84, 1.0) if maximum is None else 0.95
    m = max(1, min(n, int(np.ceil(n * fraction - 1e-9))))
    start = int(rng.integers(0, n - m + 1))
    if maximum is None:
        nearer_high = _column(ep, lay, "state", j).mean() >= (lay.low[j] + lay.high[j]) / 2
        value, keys = (lay.high[j] if nearer_high else lay.low[j]), ("action", "state")
    else:
        value, keys = maximum[j], ("action",)
    for key in keys:
        _column(out, lay, key, j)[start: start + m] = value
    return out, _record(lay, j, [start, start + m - 1], value=float(value), fraction=round(m / n, 3),
                        where="both" if maximum is None else "action")


def compute_glitch(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None,
                   count: int | None = None, where: str = "both"):
    """1..3 single-frame spikes of 30..50 % of the range on one joint, to the side the range allows."""
    n, j, out = len(ep.action), pick_joint(ep, lay, rng, joint), ep.copy()
    count = int(count or rng.integers(1, 4))
    spaced = np.arange(2, n - 2, 3)  # never two spikes in a row, never on the first or last frames
    frames = np.sort(rng.choice(spaced, size=min(count, len(spaced)), replace=False))
    sizes = rng.uniform(0.3, 0.5, len(frames)) * lay.width[j]
    for key in WHERE[where]:
        col = _column(out, lay, key, j)
        up = col[frames] + sizes <= lay.high[j]
        col[frames] = np.clip(np.where(up, col[frames] + sizes, col[frames] - sizes), lay.low[j], lay.high[j])
    return out, _record(lay, j, frames.tolist(), where=where, size=np.round(sizes / lay.width[j], 3).tolist())


def _largest_shift(ep: Episode, lay: Layout, j: int, k: int) -> float:
    """The shift of joint ``j`` from frame ``k`` on, largest in size, that keeps action and state in range."""
    values = np.concatenate([_column(ep, lay, "action", j)[k:], _column(ep, lay, "state", j)[k:]])
    margin = 0.01 * lay.width[j]
    up, down = lay.high[j] - margin - values.max(), lay.low[j] + margin - values.min()
    return float(up if abs(up) >= abs(down) else down)


def compute_wraparound(ep: Episode, lay: Layout, rng: np.random.Generator, joint: str | None = None,
                       where: str = "both"):
    """From a frame ``k`` in the middle third on, one joint shifted by the largest amount the range allows
    (at least half the range: the joint that allows most unless ``joint`` is given), and it stays."""
    n = len(ep.action)
    k = int(rng.integers(n // 3, max(n // 3 + 1, 2 * n // 3)))
    room = [abs(_largest_shift(ep, lay, i, k)) / lay.width[i] for i in range(len(lay.joints))]
    j = pick_joint(ep, lay, rng, joint) if joint is not None else int(np.argmax(room))
    shift = _largest_shift(ep, lay, j, k)
    if abs(shift) < 0.5 * lay.width[j]:
        raise FaultError(f"joint {lay.joints[j]!r} cannot jump by half its range at frame {k} and stay in range")
    out = ep.copy()
    for key in WHERE[where]:
        _column(out, lay, key, j)[k:] += shift
    return out, _record(lay, j, [k, n - 1], where=where, jump=round(shift / lay.width[j], 3))


def compute_idle_ends(ep: Episode, lay: Layout, rng: np.random.Generator, seconds: float = 1.5,
                      min_motion: int = 10):
    """The first and last pose (whole vectors) held ``seconds`` each, leaving ``min_motion`` frames moving."""
    n = len(ep.action)
    hold = min(round(seconds * lay.fps), (n - min_motion) // 2)
    if hold < 1:
        raise FaultError(f"an episode of {n} frames is too short for idle ends")
    out = ep.copy()
    for arr in (out.action, out.state):
        arr[:hold] = arr[hold]
        arr[n - hold:] = arr[n - hold - 1]
    return out, _record(lay, None, [0, hold - 1, n - hold, n - 1], head=hold, tail=hold)


def compute_action_lag(ep: Episode, lay: Layout, rng: np.random.Generator, frames: int = 5):
    """The action is the state ``frames`` earlier (the first frame's state before that), for every name
    the two vectors share: it trails the state. ``frames=0``: the action is recorded as the state."""
    out, src = ep.copy(), np.maximum(np.arange(len(ep.action)) - frames, 0)
    for a, s in lay.shared:
        out.action[:, a] = ep.state[src, s]
    return out, _record(lay, None, [0, len(ep.action) - 1], lag=frames)


def compute_scale_mismatch(ep: Episode, lay: Layout, rng: np.random.Generator, factor: float = np.pi / 180):
    """The contract's angular joints (every joint if none is declared angular) scaled by ``factor``."""
    joints = np.nonzero(lay.angular)[0] if lay.angular.any() else np.arange(len(lay.joints))
    out = ep.copy()
    out.action[:, lay.a_cols[joints]] *= factor
    out.state[:, lay.s_cols[joints]] *= factor
    return out, {"joints": [lay.joints[j] for j in joints], "frames": [0, len(ep.action) - 1], "factor": factor}


def compute_near_duplicate(ep: Episode, source: Episode, lay: Layout, rng: np.random.Generator,
                           noise: float = 0.001):
    """The whole of ``source`` at ``ep``'s length (linearly resampled: as it is when as long) with Gaussian
    noise of ``noise`` of each contract joint's range on its action and state."""
    n, m = len(ep.action), len(source.action)
    at = np.linspace(0.0, m - 1, n)
    lo, w = np.floor(at).astype(int), (at - np.floor(at))[:, None]
    out = Episode(*((1 - w) * x[lo] + w * x[np.minimum(lo + 1, m - 1)] for x in (source.action, source.state)))
    for key, cols in (("action", lay.a_cols), ("state", lay.s_cols)):
        arr = getattr(out, key)
        arr[:, cols] = np.clip(arr[:, cols] + rng.normal(0.0, noise, (n, len(cols))) * lay.width, lay.low, lay.high)
    return out, _record(lay, None, [0, n - 1], noise=noise, source_frames=m)


# ----------------------------------------------------------------------------- the dataset's files
@dataclass
class Session:
    """Every data row's action and state (file order), each episode's rows (frame order), the tables read."""

    files: list[Path]
    tables: list[pa.Table]
    action: np.ndarray  # (N, Da) float64
    state: np.ndarray  # (N, Ds) float64
    rows: dict[int, np.ndarray]  # episode -> its rows, in frame order
    layout: Layout
    action_key: str
    state_key: str

    def episode(self, e: int) -> Episode:
        return Episode(self.action[self.rows[e]].copy(), self.state[self.rows[e]].copy())

    def put(self, e: int, ep: Episode) -> None:
        if len(ep.action) != len(self.rows[e]):
            raise FaultError(f"episode {e}: a fault changed its length from {len(self.rows[e])} to {len(ep.action)}")
        self.action[self.rows[e]], self.state[self.rows[e]] = ep.action, ep.state


def _vectors(column: pa.ChunkedArray, dim: int, key: str) -> np.ndarray:
    arr = column.combine_chunks()
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)
    if arr.null_count or len(flat) != len(arr) * dim:
        raise FaultError(f"'{key}' has rows without {dim} values; plant faults into a valid dataset")
    return flat.reshape(len(arr), dim)


def _like(values: np.ndarray, like: pa.Array) -> pa.Array:
    """``values`` (n, dim) as a list column of ``like``'s type (float32 values stay float32, ints are rounded)."""
    value_type, flat = like.type.value_type, values.reshape(-1)
    flat = np.round(flat) if pa.types.is_integer(value_type) else flat
    child = pa.array(flat.astype(value_type.to_pandas_dtype()), type=value_type)
    if pa.types.is_fixed_size_list(like.type):
        return pa.FixedSizeListArray.from_arrays(child, type=like.type)
    offsets = pa.array(np.arange(0, len(flat) + 1, values.shape[1]), type=like.offsets.type)
    return type(like).from_arrays(offsets, child, type=like.type)


def make_layout(info: dict, contract: Contract, action: np.ndarray, state: np.ndarray) -> Layout:
    a_names, s_names = feature_names(info, contract.action_key), feature_names(info, contract.state_key)
    a_cols = np.array(contract.select_indices(a_names, contract.action_key))
    s_cols = np.array(contract.select_indices(s_names, contract.state_key))
    both = np.concatenate([action[:, a_cols], state[:, s_cols]])
    ranges = [contract.ranges.get(j, (both[:, i].min(), both[:, i].max())) for i, j in enumerate(contract.joints)]
    low, high = (np.array(r, dtype=np.float64) for r in zip(*ranges, strict=True))
    angular = np.array([contract.units.get(j, "").lower() in ANGULAR_UNITS for j in contract.joints])
    shared = tuple((i, s_names.index(n)) for i, n in enumerate(a_names) if n in s_names)
    return Layout(tuple(contract.joints), a_cols, s_cols, low, high, angular, shared, float(info["fps"]))


def load_session(root: Path, contract: Contract) -> Session:
    """Every data parquet file of ``root`` with its action and state as arrays."""
    info, root = load_info(root), Path(root)
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FaultError(f"no data parquet files under {root / 'data'}")
    tables = [pq.read_table(f) for f in files]
    keys = (contract.action_key, contract.state_key)
    action, state = (np.concatenate([_vectors(t[k], vector_dim(info, k), k) for t in tables]) for k in keys)
    episode = np.concatenate([t["episode_index"].to_numpy() for t in tables])
    frame = np.concatenate([t["frame_index"].to_numpy() for t in tables])
    order = np.lexsort((frame, episode))
    bounds = np.nonzero(np.diff(episode[order]))[0] + 1
    rows = {int(episode[r[0]]): r for r in np.split(order, bounds)}
    return Session(files, tables, action, state, rows, make_layout(info, contract, action, state), *keys)


def save_session(s: Session) -> None:
    """Write the action and state back into the files they came from, every other column as read."""
    start = 0
    for path, table in zip(s.files, s.tables, strict=True):
        end = start + table.num_rows
        for key, values in ((s.action_key, s.action), (s.state_key, s.state)):
            i = table.schema.get_field_index(key)
            table = table.set_column(i, table.schema.field(i), _like(values[start:end], table[key].combine_chunks()))
        pq.write_table(table, path)
        start = end


# ----------------------------------------------------------------------------- planting
Planter = Callable[[Session, list[int], np.random.Generator, dict], list[dict]]


def _per_episode(compute: Callable) -> Planter:
    def plant(s: Session, episodes: list[int], rng: np.random.Generator, options: dict) -> list[dict]:
        records = []
        for e in episodes:
            ep, record = compute(s.episode(e), s.layout, rng, **options)
            s.put(e, ep)
            records.append({"episode": e, **record})
        return records

    return plant


def _plant_near_duplicate(s: Session, episodes: list[int], rng: np.random.Generator, options: dict) -> list[dict]:
    """Each of ``episodes`` replaced by ``source``, else by an episode outside them, one of the closest length."""
    options, records = dict(options), []
    source = options.pop("source", None)
    for e in episodes:
        fits = sorted((abs(len(r) - len(s.rows[e])), c) for c, r in s.rows.items() if c not in episodes)
        if source is None and not fits:
            raise FaultError(f"no episode outside {episodes} to copy")
        src = int(source) if source is not None else int(rng.choice([c for d, c in fits if d == fits[0][0]]))
        ep, record = compute_near_duplicate(s.episode(e), s.episode(src), s.layout, rng, **options)
        s.put(e, ep)
        records.append({"episode": e, "source": src, **record})
    return records


def _plant_drift(s: Session, episodes: list[int], rng: np.random.Generator, options: dict) -> list[dict]:
    """An offset growing from 0 on the first of ``episodes`` (episode order) to ``fraction`` (0.25) of the
    range on the last, on ``joint`` (else the joint with most room), up or down, as far as every episode's
    values stay in range."""
    lay, eps = s.layout, sorted(episodes)
    share = np.arange(len(eps)) / max(len(eps) - 1, 1)
    both = [np.concatenate([s.action[s.rows[e]][:, lay.a_cols], s.state[s.rows[e]][:, lay.s_cols]]) for e in eps]
    up = np.array([lay.high - v.max(axis=0) for v in both])[1:] / share[1:, None]  # the largest offset each allows
    down = np.array([v.min(axis=0) - lay.low for v in both])[1:] / share[1:, None]
    room = np.maximum(up.min(axis=0, initial=np.inf), down.min(axis=0, initial=np.inf))
    j = lay.joints.index(options["joint"]) if options.get("joint") else int(np.argmax(room / lay.width))
    sign = 1.0 if up[:, j].min(initial=np.inf) >= down[:, j].min(initial=np.inf) else -1.0
    total = sign * min(options.get("fraction", 0.25) * lay.width[j], 0.95 * room[j])
    records = []
    for e, k in zip(eps, share, strict=True):
        ep = s.episode(e)
        for key in ("action", "state"):
            _column(ep, lay, key, j)[:] += total * k
        s.put(e, ep)
        records.append({"episode": e, **_record(lay, j, [0, len(ep.action) - 1], offset=round(float(total * k), 4))})
    return records


PLANTERS: dict[str, Planter] = {
    "frozen_state": _per_episode(compute_frozen_state),
    "dead_joint": _per_episode(compute_dead_joint),
    "state_not_following": _per_episode(compute_state_not_following),
    "saturation": _per_episode(compute_saturation),
    "saturation_action": lambda s, episodes, rng, options: _per_episode(compute_saturation)(
        s, episodes, rng, {"maximum": s.action[:, s.layout.a_cols].max(axis=0), **options}),
    "glitch": _per_episode(compute_glitch),
    "wraparound": _per_episode(compute_wraparound),
    "idle_ends": _per_episode(compute_idle_ends),
    "action_is_state": _per_episode(functools.partial(compute_action_lag, frames=0)),
    "action_lag": _per_episode(compute_action_lag),
    "scale_mismatch": _per_episode(compute_scale_mismatch),
    "near_duplicate": _plant_near_duplicate,
    "drift": _plant_drift,
}
FAULT_KINDS = tuple(PLANTERS)


def plant_fault(root: Path, kind: str, episodes: Sequence[int], contract: Contract, rng: np.random.Generator,
                **options) -> dict:
    """Plant ``kind`` into ``episodes`` of the dataset at ``root`` (a copy: its data files are rewritten in
    place) and return what was planted where: ``{"kind", "episodes", "planted": [{"episode", "joints",
    "frames", ...}]}`` (``frames``: first and last frame of each planted stretch, or the glitch frames)."""
    if kind not in PLANTERS:
        raise FaultError(f"unknown fault {kind!r}; the faults are {list(FAULT_KINDS)}")
    s = load_session(root, contract)
    episodes = sorted({int(e) for e in episodes})
    unknown = [e for e in episodes if e not in s.rows]
    if not episodes or unknown:
        raise FaultError(f"episodes {unknown or episodes} are not in {root} (it has {len(s.rows)} episodes)")
    records = PLANTERS[kind](s, episodes, rng, options)
    save_session(s)
    return {"kind": kind, "episodes": episodes, "planted": records}

