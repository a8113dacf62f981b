"""Starter contracts from a dataset (``vla contract init``), and the helpers that describe a
dataset's features by role (action/state candidates, cameras, other), which the validator also
uses to say what a dataset holds when a contract's keys are missing from it.

Everything a starter contract says is read from ``meta/info.json`` and the data parquet files;
what is a guess (units, semantics, the key mapping) is marked in the YAML for the user to confirm.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_pipeline.data.tables import feature_names
from vla_pipeline.errors import ConfigError, ContractError

BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
CAMERA_DTYPES = ("video", "image")

# key-name patterns, best first: (test, why). The first vector matching the best test wins.
_ACTION_TESTS = (
    lambda k: k in ("action", "actions"),
    lambda k: k.startswith(("action.", "actions.")),
    lambda k: k.rsplit(".", 1)[-1] in ("action", "actions"),
    lambda k: "action" in k,
)
_STATE_TESTS = (
    lambda k: k == "observation.state",
    lambda k: k in ("state", "states", "observation.states", "observation.state_vector"),
    lambda k: k.rsplit(".", 1)[-1] in ("joint_positions", "joint_position", "qpos", "joints", "joint_pos",
                                       "robot_state", "proprio", "proprioception"),
    lambda k: k.startswith("observation.state"),
    lambda k: "state" in k,
    lambda k: k.startswith("observation.") and any(s in k for s in ("joint", "qpos", "pos", "proprio")),
)


def _entry(info: dict, key: str) -> dict:
    feature = info["features"][key]
    try:
        names = feature_names(info, key)
    except (TypeError, AttributeError):
        names = []
    shape = feature.get("shape")
    return {"key": key, "dtype": str(feature.get("dtype", "")), "shape": list(shape) if shape is not None else None,
            "names": [str(n) for n in names]}


def _is_vector(entry: dict) -> bool:
    shape = entry["shape"]
    return (entry["dtype"].startswith("float") and isinstance(shape, list) and len(shape) == 1
            and isinstance(shape[0], int) and shape[0] >= 1 and not entry["key"].startswith("next."))


def group_features(info: dict) -> dict[str, list[dict]]:
    """The dataset's features by role, in info.json order: ``vectors`` (float 1-D features, the
    action/state candidates; LeRobot's bookkeeping keys and ``next.*`` left out), ``cameras``
    (dtype video or image) and ``other``. Each entry: key, dtype, shape, names (possibly empty)."""
    groups: dict[str, list[dict]] = {"vectors": [], "cameras": [], "other": []}
    for key in info.get("features") or {}:
        if key in BOOKKEEPING:
            continue
        entry = _entry(info, key)
        role = "cameras" if entry["dtype"] in CAMERA_DTYPES else "vectors" if _is_vector(entry) else "other"
        groups[role].append(entry)
    return groups


def _best(keys: list[str], tests) -> str | None:
    for test in tests:
        for key in keys:
            if test(key.lower()):
                return key
    return None


def camera_names(keys: list[str]) -> dict[str, str]:
    """camera name -> key: the key's last segment ("observation.images.front" -> "front"); keys whose
    last segments collide keep their whole key, dots as underscores."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {(seg if last.count(seg) == 1 else k.replace(".", "_")): k for k, seg in zip(keys, last, strict=True)}


def guess_keys(info: dict) -> dict:
    """``{"action": key | None, "state": key | None, "cameras": {name: key}}`` guessed from the key
    names of the float vectors (``action``, ``actions``, ``action.*`` ...; ``observation.state``,
    ``state``, ``observation.joint_positions`` ...) and the camera features."""
    groups = group_features(info)
    vectors = [e["key"] for e in groups["vectors"]]
    action = _best(vectors, _ACTION_TESTS)
    state = _best([k for k in vectors if k != action], _STATE_TESTS)
    return {"action": action, "state": state, "cameras": camera_names([e["key"] for e in groups["cameras"]])}


def _names_preview(names: list[str], max_names: int) -> str:
    if not names:
        return "(no names)"
    shown = ", ".join(names[:max_names])
    more = len(names) - max_names
    return f"({shown}, ... and {more} more)" if more > 0 else f"({shown})"


def _describe(entry: dict, with_names: bool, max_names: int) -> str:
    shape = entry["shape"] if entry["shape"] is not None else "?"
    text = f"'{entry['key']}' {entry['dtype']} {shape}"
    return f"{text} {_names_preview(entry['names'], max_names)}" if with_names else text


def format_feature_roles(info: dict, max_names: int = 4) -> str:
    """A compact listing of the features by role, one line per role, e.g.

    ``  action/state candidates: 'actions' float32 [34] (left.joint_1.pos, ... and 30 more); ...``
    ``  cameras: 'image' video [480, 640, 3]``
    """
    groups = group_features(info)
    lines = [
        "  action/state candidates: "
        + ("; ".join(_describe(e, True, max_names) for e in groups["vectors"]) or "none (no float vector feature)"),
        "  cameras: " + (", ".join(_describe(e, False, max_names) for e in groups["cameras"]) or "none"),
    ]
    if groups["other"]:
        lines.append("  other: " + ", ".join(_describe(e, False, max_names) for e in groups["other"]))
    return "\n".join(lines)


def _vector_keys_hint(info: dict) -> str:
    keys = [e["key"] for e in group_features(info)["vectors"]]
    return ", ".join(keys) if keys else "none"


def format_keys_block(info: dict) -> str:
    """A ready-to-paste ``keys:`` block of a contract, from :func:`guess_keys`, with a comment on
    each entry that is a guess or absent."""
    guess = guess_keys(info)
    lines = ["keys:                          # where this dataset stores each role"]
    for role, canonical in (("action", "action"), ("state", "observation.state")):
        key = guess[role]
        if key is None:
            lines.append(_commented(f"  {role}: null", f"no {role}-like float vector found; candidates: "
                                    f"{_vector_keys_hint(info)}"))
        elif key == canonical:
            lines.append(f"  {role}: {quote(key)}")
        else:
            lines.append(_commented(f"  {role}: {quote(key)}", "guessed from the key name: confirm"))
    if guess["cameras"]:
        lines.append("  cameras:                     # policy camera name -> dataset key")
        lines += [f"    {quote(name)}: {quote(key)}" for name, key in guess["cameras"].items()]
    else:
        lines.append(_commented("  cameras: {}", "no video/image feature found"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- YAML text helpers
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def quote(value: str) -> str:
    """``value`` as a YAML scalar: plain when that reads back as the same string, else double-quoted."""
    s = str(value)
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]*", s) and s.lower() not in _YAML_WORDS
    return s if plain else json.dumps(s)


def _commented(text: str, comment: str, column: int = 30) -> str:
    return f"{text.ljust(column)} # {comment}"


# ----------------------------------------------------------------------------- vla contract init
SUPPORTED_CODEBASE = "v3.0"
MIN_PAD_FRACTION = 0.01  # a range is widened by at least 1% of its values' magnitude ...
MIN_PAD = 0.01  # ... and at least this much (joint units), so a joint that never moved gets a range
_REGEX_ONLY = set("^$+()|\\{}")
_GRIPPER_WORDS = ("gripper", "hand", "finger", "claw", "jaw")


@dataclass(frozen=True)
class InitConfig:
    dataset_root: Path
    out: Path
    joints: tuple[str, ...] = ()  # name patterns (glob; regex with a 're:' prefix); () = every action name
    cameras: tuple[str, ...] = ()  # camera names or dataset keys, in the policy's order; () = every camera
    action_key: str | None = None  # None: guessed (guess_keys)
    state_key: str | None = None
    name: str | None = None  # None: the stem of ``out``
    margin: float = 0.1  # fraction of the observed span added on each side of a range
    jump_quantile: float = 0.99  # max_action_jump = jump_factor x this quantile of per-frame max |Δaction|
    jump_factor: float = 2.0
    timestamp_tolerance_s: float = 1e-3
    force: bool = False  # overwrite an existing ``out``


@dataclass
class Starter:
    """A starter contract: its YAML text and what went into it."""

    text: str
    name: str
    action_key: str
    state_key: str | None
    cameras: dict[str, str]
    joints: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    observed: dict[str, tuple[float, float]]  # joint -> observed (min, max) over action and state
    units: dict[str, str]
    max_action_jump: float | None
    fps: int
    notes: list[str] = field(default_factory=list)  # what the user must look at (the CLI prints them)


def read_info(root: Path) -> dict:
    """``root/meta/info.json`` of a LeRobotDataset v3.0; a missing root, a missing or malformed
    info.json and another codebase version are :class:`ConfigError`s."""
    root = Path(root)
    path = root / "meta" / "info.json"
    if not root.is_dir():
        raise ConfigError(f"dataset root {root} not found; pass the LeRobotDataset v3.0 directory that holds "
                          f"meta/info.json")
    if not path.is_file():
        raise ConfigError(f"{path} not found; is {root} a LeRobotDataset root? Pass the directory that holds "
                          f"meta/info.json")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {e}); re-export the dataset") from e
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise ConfigError(f"{path} has no 'features' mapping; is it a LeRobotDataset info.json?")
    version = info.get("codebase_version")
    if version != SUPPORTED_CODEBASE:
        raise ConfigError(f"{path}: codebase_version {version!r}, supported is {SUPPORTED_CODEBASE}; convert the "
                          f"dataset first (`vla convert {root} --out NEW_DIR`), then run this on NEW_DIR")
    return info


def match_joint(pattern: str, name: str) -> bool:
    """A glob (``right.joint_*``: ``.`` is literal, ``*`` any run), or a regex matched against the
    whole name when ``pattern`` starts with ``re:`` or uses characters only a regex has (``^$+()|\\{}``)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    if _REGEX_ONLY & set(pattern):
        return re.fullmatch(pattern, name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _check_pattern(pattern: str) -> None:
    if pattern.startswith("re:") or _REGEX_ONLY & set(pattern):
        try:
            re.compile(pattern.removeprefix("re:"))
        except re.error as e:
            raise ConfigError(f"--joints {pattern!r} is not a valid regex ({e}); use a glob such as 'right.*' "
                              f"or fix the regex") from e


def select_joints(names: list[str], patterns: tuple[str, ...] | list[str], key: str = "action") -> list[str]:
    """The names matching any of ``patterns``, in the vector's order; all of them without patterns.
    A pattern that selects nothing is a :class:`ContractError` naming the vector's names."""
    if not patterns:
        return list(names)
    for p in patterns:
        _check_pattern(p)
    empty = [p for p in patterns if not any(match_joint(p, n) for n in names)]
    if empty:
        raise ContractError(f"--joints {', '.join(repr(p) for p in empty)} selects no joint of '{key}' (its names: "
                            f"{names}); patterns are globs ('right.*') or regexes ('re:right\\.joint_[1-7].*') "
                            f"matched against whole names")
    return [n for n in names if any(match_joint(p, n) for p in patterns)]


def guess_unit(name: str, lo: float, hi: float) -> tuple[str, str]:
    """(unit, why) for a joint from its name and observed values: a gripper/hand in 0..1 is a
    ``fraction``, in 0..100 ``percent``; a velocity ``m/s`` (x/y) or deg/s, rad/s; an angle beyond
    ±2π is in ``deg``, within ±2π ``rad``. Always a guess."""
    n = name.lower()
    last = n.rsplit(".", 1)[-1]
    amax = max(abs(lo), abs(hi)) if math.isfinite(lo) and math.isfinite(hi) else float("nan")
    if not math.isfinite(amax):
        return "unknown", "no finite values"
    if any(w in n for w in _GRIPPER_WORDS) and lo >= -0.01:
        if hi <= 1.01:
            return "fraction", "gripper-like name, values within 0..1"
        if hi <= 101:
            return "percent", "gripper-like name, values within 0..100"
    if last in ("vel", "velocity") or n.endswith("_vel"):
        if n.split(".", 1)[0] in ("x", "y", "z"):
            return "m/s", "linear velocity name"
        return ("deg/s", "velocity beyond ±2π") if amax > 2 * math.pi else ("rad/s", "velocity within ±2π")
    if amax > 2 * math.pi + 1e-6:
        return "deg", "values beyond ±2π"
    if amax <= math.pi + 1e-6:
        return "rad", "values within ±π"
    return "rad", "values within ±2π (small moves in deg look the same)"


def widen(lo: float, hi: float, margin: float) -> tuple[float, float]:
    """``[lo, hi]`` widened by ``margin`` x its span on each side (at least MIN_PAD_FRACTION of the
    values' magnitude and MIN_PAD), rounded outward to a readable resolution."""
    pad = max(margin * (hi - lo), MIN_PAD_FRACTION * max(abs(lo), abs(hi)), MIN_PAD)
    exponent = math.floor(math.log10(pad)) - 1
    res = 10.0 ** exponent
    digits = max(0, -exponent)
    return round(math.floor((lo - pad) / res) * res, digits), round(math.ceil((hi + pad) / res) * res, digits)


def _round_up(value: float, significant: int = 3) -> float:
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value)) - significant + 1
    res = 10.0 ** exponent
    return round(math.ceil(value / res) * res, max(0, -exponent))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _vector_entry(info: dict, key: str, role: str, root: Path, flag: str, need_names: bool = True) -> dict:
    groups = group_features(info)
    entry = next((e for e in groups["vectors"] if e["key"] == key), None)
    if entry is None:
        what = "is not a feature" if key not in info["features"] else "is not a float vector feature"
        raise ContractError(f"{flag} '{key}' {what} of {root}/meta/info.json; its features:\n"
                            f"{format_feature_roles(info)}\npass {flag} with one of the action/state candidates")
    if not entry["names"] and not need_names:
        return entry  # a state without names: a note, not a refusal (init can still write the contract)
    if not entry["names"]:
        raise ContractError(f"{root}/meta/info.json: the {role} vector '{key}' has no per-dimension names "
                            f"(features.{key}.names); contracts select joints by name: add the names "
                            f"(one per dimension) to info.json")
    if len(entry["names"]) != entry["shape"][0]:
        raise ContractError(f"{root}/meta/info.json: the {role} vector '{key}' has shape {entry['shape']} but "
                            f"{len(entry['names'])} names; fix features.{key}.names in info.json")
    return entry


def _resolve_keys(cfg: InitConfig, info: dict, root: Path) -> tuple[dict, dict | None]:
    guess = guess_keys(info)
    action_key = cfg.action_key or guess["action"]
    if action_key is None:
        raise ContractError(f"{root}/meta/info.json has no float action vector (a key such as 'action' or "
                            f"'actions'); its features:\n{format_feature_roles(info)}\nif the action is stored "
                            f"under another name pass --action KEY; a dataset without actions cannot be trained on")
    action = _vector_entry(info, action_key, "action", root, "--action")
    state_key = cfg.state_key or guess["state"]
    if state_key == action_key:
        state_key = None
    state = _vector_entry(info, state_key, "state", root, "--state", need_names=False) if state_key else None
    return action, state


def _pick_cameras(cfg: InitConfig, info: dict, root: Path) -> dict[str, str]:
    available = guess_keys(info)["cameras"]
    if not cfg.cameras:
        return available
    by_key = {key: name for name, key in available.items()}
    chosen: dict[str, str] = {}
    for c in cfg.cameras:
        if c in available:
            chosen[c] = available[c]
        elif c in by_key:
            chosen[by_key[c]] = c
        else:
            raise ConfigError(f"--cameras {c!r} is not a camera of {root}: its cameras are "
                              f"{available or 'none'} (name: key); pass names or keys")
    return chosen


def _finite_min_max(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min/max over finite values (NaN where a column has none)."""
    finite = np.isfinite(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(np.where(finite, values, np.nan), axis=0) if len(values) else np.full(values.shape[1], np.nan)
        hi = np.nanmax(np.where(finite, values, np.nan), axis=0) if len(values) else np.full(values.shape[1], np.nan)
    return lo, hi


def _load(root: Path, dims: dict[str, int]):
    from vla_pipeline.data.tables import load_frames_raw

    try:
        frames = load_frames_raw(root, dims)
    except FileNotFoundError as e:
        raise ConfigError(f"{e}; contract init reads the observed ranges from the data files: is the dataset "
                          f"complete?") from e
    except Exception as e:  # noqa: BLE001  (pyarrow's errors on a malformed file: a message, not a traceback)
        raise ConfigError(f"the data parquet files under {root / 'data'} cannot be read ({type(e).__name__}: {e}); "
                          f"re-export the dataset") from e
    for key in dims:
        if key not in frames.vectors:
            raise ContractError(f"'{key}' is declared in {root}/meta/info.json but no data parquet file has that "
                                f"column; rewrite the data files or fix info.json")
    return frames


def _episode_order(frames) -> tuple[np.ndarray, np.ndarray]:
    """Row order (by global index when present) and the episode of each row in that order."""
    n = frames.n
    order = np.argsort(frames["index"], kind="stable") if "index" in frames.scalars else np.arange(n)
    episodes = frames["episode_index"][order] if "episode_index" in frames.scalars else np.zeros(n, dtype=np.int64)
    return order, episodes


def _jumps(actions: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Per-frame max over joints of |Δaction| within episodes (finite pairs only)."""
    if len(actions) < 2:
        return np.zeros(0)
    delta = np.abs(np.diff(actions, axis=0))
    ok = (episodes[1:] == episodes[:-1]) & np.isfinite(delta).all(axis=1)
    return delta[ok].max(axis=1) if delta.shape[1] else np.zeros(0)


def _timestamp_deviation(frames, order: np.ndarray, episodes: np.ndarray, fps: float) -> float | None:
    if "timestamp" not in frames.scalars or frames.n < 2:
        return None
    ts = frames["timestamp"][order].astype(np.float64)
    same = episodes[1:] == episodes[:-1]
    if not same.any():
        return None
    return float(np.abs(np.diff(ts) - 1.0 / fps)[same].max())


def _name_of(cfg: InitConfig) -> str:
    if cfg.name:
        return cfg.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.out).stem).strip("_")
    return stem or "starter"


def build_starter(cfg: InitConfig) -> Starter:
    """The starter contract of ``cfg.dataset_root`` (nothing is written)."""
    root = Path(cfg.dataset_root)
    if not (cfg.margin >= 0 and math.isfinite(cfg.margin)):
        raise ConfigError(f"--margin {cfg.margin} must be a finite fraction >= 0 (0.1: 10% of the span)")
    if not 0 < cfg.jump_quantile <= 1 or not cfg.jump_factor > 0:
        raise ConfigError(f"jump quantile {cfg.jump_quantile} must be in (0, 1] and factor {cfg.jump_factor} > 0")
    info = read_info(root)
    try:
        fps = int(info["fps"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{root}/meta/info.json has no integer 'fps' ({info.get('fps')!r}); fix info.json") from e
    action, state = _resolve_keys(cfg, info, root)
    joints = select_joints(action["names"], cfg.joints, action["key"])
    cameras = _pick_cameras(cfg, info, root)
    notes: list[str] = []

    dims = {action["key"]: action["shape"][0]}
    if state is not None:
        dims[state["key"]] = state["shape"][0]
    frames = _load(root, dims)
    order, episodes = _episode_order(frames)
    a_idx = [action["names"].index(j) for j in joints]
    actions = frames.vectors[action["key"]][order][:, a_idx]
    lo, hi = _finite_min_max(actions)
    state_lacks: list[str] = []
    states = None
    if state is not None:
        state_lacks = [j for j in joints if j not in state["names"]]
        shared = [j for j in joints if j in state["names"]]
        if shared:
            s_all = frames.vectors[state["key"]][order][:, [state["names"].index(j) for j in shared]]
            s_lo, s_hi = _finite_min_max(s_all)
            for k, j in enumerate(shared):
                i = joints.index(j)
                lo[i], hi[i] = np.fmin(lo[i], s_lo[k]), np.fmax(hi[i], s_hi[k])
            if not state_lacks:
                states = s_all
        if state_lacks:
            unnamed = " (it has no per-dimension names in info.json)" if not state["names"] else ""
            notes.append(f"state '{state['key']}' lacks joints {state_lacks}{unnamed}: validation (feature_names) "
                         f"will fail; map the state vector that holds them (--state KEY) or drop those joints")

    observed, ranges, units, unit_why = {}, {}, {}, {}
    for i, j in enumerate(joints):
        if not (math.isfinite(lo[i]) and math.isfinite(hi[i])):
            notes.append(f"joint '{j}' has no finite value in the data: no range written; check the recording")
            units[j], unit_why[j] = "unknown", "no finite values"
            continue
        observed[j] = (float(lo[i]), float(hi[i]))
        ranges[j] = widen(float(lo[i]), float(hi[i]), cfg.margin)
        units[j], unit_why[j] = guess_unit(j, float(lo[i]), float(hi[i]))

    jumps = _jumps(actions, episodes)
    max_jump = None
    jump_q = jump_max = 0.0
    if len(jumps):
        jump_q, jump_max = float(np.quantile(jumps, cfg.jump_quantile)), float(jumps.max())
        base = jump_q if jump_q > 0 else jump_max
        max_jump = _round_up(base * cfg.jump_factor) if base > 0 else None
    deviation = _timestamp_deviation(frames, order, episodes, fps)
    if deviation is not None and deviation > cfg.timestamp_tolerance_s:
        notes.append(f"timestamp spacing deviates from 1/fps by up to {deviation:.4g}s, more than the tolerance "
                     f"{cfg.timestamp_tolerance_s}s: validation (timestamps) will report it")
    semantics_hint = _semantics_hint(actions, states, lo, hi)
    image_cams = [n for n, k in cameras.items() if info["features"][k].get("dtype") == "image"]
    if image_cams:
        notes.append(f"cameras {image_cams} are stored as images in the parquet, not as video: the validator's "
                     f"videos check expects video files and will report them; convert them to video or leave "
                     f"them out with --cameras")
    if not cameras:
        notes.append("no camera selected: Pi0.5 needs at least one camera")
    if state is None:
        notes.append("no state vector found: state_required is false; Pi0.5 tokenizes the state into its prompt, "
                     "so map one (--state KEY) before training")
    n_episodes = len(np.unique(episodes)) if len(episodes) else 0

    starter = Starter(
        text="", name=_name_of(cfg), action_key=action["key"], state_key=state["key"] if state else None,
        cameras=cameras, joints=tuple(joints), ranges=ranges, observed=observed, units=units,
        max_action_jump=max_jump, fps=fps, notes=notes,
    )
    starter.text = _render(
        starter, cfg, info, action=action, state=state, state_lacks=state_lacks, unit_why=unit_why,
        jump=(jump_q, jump_max, len(jumps)), deviation=deviation, semantics_hint=semantics_hint,
        image_cams=image_cams, counts=(n_episodes, frames.n),
    )
    return starter


def _semantics_hint(actions: np.ndarray, states: np.ndarray | None, lo: np.ndarray, hi: np.ndarray) -> str:
    """Evidence for absolute targets: how far the action is from the state, relative to the span."""
    if states is None or not len(actions):
        return "no state to compare with"
    span = np.where(hi - lo > 0, hi - lo, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = float(np.nanmedian(np.nanmedian(np.abs(actions - states), axis=0) / span))
    if not math.isfinite(ratio):
        return "no moving joint to compare"
    verdict = "the action tracks the state" if ratio < 0.25 else "the action is far from the state: deltas?"
    return f"{verdict} (median |action - state| = {ratio:.1%} of the span)"


def _wrap(text: str, width: int = 100) -> list[str]:
    """``text`` as ``# `` comment lines of at most ``width`` characters."""
    import textwrap

    return textwrap.wrap(text, width=width - 2, initial_indent="# ", subsequent_indent="# ",
                         break_long_words=False, break_on_hyphens=False)


def _aligned(rows: list[tuple[str, str | None]]) -> list[str]:
    """``text  # comment`` rows with their comments in one column (at least the shipped files' 31)."""
    column = max([30, *(len(t) for t, c in rows if c)])
    return [_commented(t, c, column) if c else t for t, c in rows]


def _render(s: Starter, cfg: InitConfig, info: dict, *, action: dict, state: dict | None, state_lacks: list[str],
            unit_why: dict, jump: tuple, deviation: float | None, semantics_hint: str, image_cams: list[str],
            counts: tuple[int, int]) -> str:
    root = Path(cfg.dataset_root)
    robot = str(info.get("robot_type") or "")
    lines = _wrap(f"Starter contract written by `vla contract init` from {root} ({counts[0]} episodes, "
                  f"{counts[1]} frames). Values come from meta/info.json and the data; lines marked 'guessed: "
                  f"confirm' or 'confirm' need a look before training. Check the result with:")
    lines.append(f"#   vla validate {root} --contract {cfg.out}")
    lines += _aligned([
        (f"name: {quote(s.name)}", "the contract's name, in messages and checkpoints"),
        (f"robot: {quote(robot)}", "meta/info.json robot_type" if robot else "meta/info.json has no robot_type: fill in"),
    ])

    def key_note(role: str, key: str, canonical: str, given: str | None) -> str | None:
        if given:
            return f"from --{role}"
        return None if key == canonical else f"guessed from the key name: confirm (not {canonical!r})"

    if s.cameras:
        how = ("chosen with --cameras" if cfg.cameras
               else "every camera of the dataset; drop those the policy should not see")
        lines += _wrap(f"keys: where this dataset stores each role; cameras: policy camera name -> dataset key ({how})")
    else:
        lines += _wrap("keys: where this dataset stores each role")
    rows: list[tuple[str, str | None]] = [("keys:", None)]
    rows.append((f"  action: {quote(action['key'])}", key_note("action", action["key"], "action", cfg.action_key)))
    if state is None:
        rows.append(("  state: observation.state", "NOT in this dataset: map the state vector (--state KEY)"))
    else:
        note = key_note("state", state["key"], "observation.state", cfg.state_key)
        if state_lacks:
            note = f"lacks joints {state_lacks}: map the state that holds them"
        rows.append((f"  state: {quote(state['key'])}", note))
    if s.cameras:
        rows.append(("  cameras:", None))
        rows += [(f"    {quote(n)}: {quote(k)}", None) for n, k in s.cameras.items()]
    else:
        rows.append(("  cameras: {}", "no camera: Pi0.5 needs at least one"))
    required = list(s.cameras)  # the policy reads every camera under keys.cameras
    rows.append((f"required_cameras: [{', '.join(quote(n) for n in required)}]",
                 "cameras every episode must have, as video files"
                 + (f"; {image_cams} are stored as images: the validator will report them" if image_cams else "")))
    rows.append((f"state_required: {'true' if state is not None else 'false'}",
                 "Pi0.5 tokenizes the state into its prompt" if state is not None
                 else "no state vector found: set true once keys.state is mapped"))
    lines += _aligned(rows)

    if cfg.joints:
        how = (f"the {len(s.joints)} names of '{action['key']}' matching --joints "
               f"{' '.join(repr(p) for p in cfg.joints)}, in dataset order")
    else:
        how = (f"all {len(s.joints)} names of '{action['key']}' (no --joints given): keep only the joints the "
               f"policy controls (drop base velocities, the other arm)")
    lines += _wrap(f"joints: the joints the policy controls, selected by name, in this order; {how}")
    lines.append("joints:")
    lines += [f"  - {quote(j)}" for j in s.joints]
    lines += _wrap(f"semantics: absolute joint-position targets or delta; confirm: {semantics_hint}")
    lines += _aligned([("semantics: absolute", "guessed: confirm")])

    lines += _wrap("units: per joint, guessed from the names and the observed values (deg beyond ±2π, rad "
                   "within; a gripper in 0..1 fraction, in 0..100 percent); confirm each against the robot's driver")
    rows = [("units:", None)]
    for j in s.joints:
        obs = s.observed.get(j)
        seen = f"observed {_fmt(obs[0])} .. {_fmt(obs[1])}" if obs else "no finite values"
        rows.append((f"  {quote(j)}: {quote(s.units[j])}", f"guessed: confirm ({unit_why[j]}; {seen})"))
    lines += _aligned(rows)

    sources = f"'{action['key']}'" + (f" and '{state['key']}'" if state is not None and not state_lacks else "")
    lines += _wrap(f"ranges: per joint [low, high]; actions outside are validation errors. The observed min/max of "
                   f"{sources}, widened by {cfg.margin:g} x the span on each side (at least {MIN_PAD_FRACTION:g} x "
                   f"the magnitude); replace them with the joints' physical limits when known")
    rows = [("ranges:", None)]
    for j in s.joints:
        if j in s.ranges:
            (lo, hi), obs = s.ranges[j], s.observed[j]
            rows.append((f"  {quote(j)}: [{_number(lo)}, {_number(hi)}]", f"observed {_fmt(obs[0])} .. {_fmt(obs[1])}"))
    lines += _aligned(rows)

    q, mx, n_jumps = jump
    if s.max_action_jump is None:
        why = "no consecutive frames to measure" if not n_jumps else "the actions never change"
        lines += _wrap(f"max_action_jump: |action[t+1] - action[t]| of any joint above this is a validation "
                       f"warning; {why}, so none is set: set one (joint units)")
        lines.append("max_action_jump: null")
    else:
        lines += _wrap(f"max_action_jump: |action[t+1] - action[t]| of any joint above this (joint units, shared "
                       f"by all joints) is a validation warning; {cfg.jump_factor:g} x the {cfg.jump_quantile:g} "
                       f"quantile ({_fmt(q)}) of the observed per-frame max over the joints (observed max {_fmt(mx)})")
        lines.append(f"max_action_jump: {_number(s.max_action_jump)}")
    dev = "no consecutive frames" if deviation is None else f"observed worst {deviation:.2g} s"
    lines += _aligned([
        (f"fps: {s.fps}", "meta/info.json fps: the rate the data must have"),
        (f"timestamp_tolerance_s: {_number(cfg.timestamp_tolerance_s)}",
         f"allowed deviation of timestamp spacing from 1/fps ({dev})"),
    ])
    return "\n".join(lines) + "\n"


def init_contract(cfg: InitConfig) -> Starter:
    """Write the starter contract of ``cfg.dataset_root`` to ``cfg.out`` (refused when it exists,
    unless ``cfg.force``); the file is checked with :func:`load_contract` before it replaces anything."""
    from vla_pipeline.data.contract import load_contract

    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; pass a file path such as contracts/NAME.yaml")
    if out.exists() and not cfg.force:
        raise ConfigError(f"{out} already exists; pass --force to overwrite it, or choose another --out")
    starter = build_starter(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(starter.text)
    try:
        load_contract(tmp)
    except ContractError as e:
        tmp.unlink(missing_ok=True)
        raise ContractError(f"the starter contract does not load ({e}); this is a bug of `vla contract init`") from e
    os.replace(tmp, out)
    return starter
