"""`vla contract init`: a starter contract read from ``meta/info.json`` and the data parquet files
(keys, joints, cameras, observed ranges, guessed units, the action-jump threshold), written only
after it loads as a contract."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from vla_pipeline.data.contract_init.config import MIN_PAD, MIN_PAD_FRACTION, InitConfig, Starter
from vla_pipeline.data.contract_init.render import render_starter
from vla_pipeline.data.contract_init.roles import format_feature_roles, group_features, guess_keys
from vla_pipeline.data.contract_init.units import format_ticks_note, guess_unit, is_integer_valued
from vla_pipeline.data.tables import SUPPORTED_CODEBASE, require_camera_stream
from vla_pipeline.errors import ConfigError, ContractError

# ----------------------------------------------------------------------------- vla contract init
_REGEX_ONLY = set("^$+()|\\{}")


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


def _vector_entry(info: dict, key: str, role: str, root: Path, flag: str, need_names: bool = True) -> dict:
    groups = group_features(info)
    entry = next((e for e in groups["vectors"] if e["key"] == key), None)
    if entry is None:
        what = "is not a feature" if key not in info["features"] else "is not a numeric vector feature"
        raise ContractError(f"{flag} '{key}' {what} of {root}/meta/info.json; its features:\n"
                            f"{format_feature_roles(info)}\npass {flag} with one of the action/state candidates")
    if not entry["names"] and not need_names:
        return entry  # a state without names: a note, not a refusal (init can still write the contract)
    if not entry["names"]:
        raise ContractError(f"{root}/meta/info.json: the {role} vector '{key}' has no per-dimension names "
                            f"(features.{key}.names); contracts select joints by name: add the names "
                            f"(one per dimension) to info.json")
    if len(entry["names"]) != entry["dim"]:
        raise ContractError(f"{root}/meta/info.json: the {role} vector '{key}' has shape {entry['declared']} but "
                            f"{len(entry['names'])} names; fix features.{key}.names in info.json")
    return entry


def _resolve_keys(cfg: InitConfig, info: dict, root: Path) -> tuple[dict, dict | None]:
    guess = guess_keys(info)
    action_key = cfg.action_key or guess["action"]
    if action_key is None:
        raise ContractError(f"{root}/meta/info.json has no numeric action vector (a key such as 'action' or "
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
    _check_options(cfg)
    info = read_info(root)
    require_camera_stream(info, root)  # no contract can make it trainable: say so, write nothing
    try:
        fps = int(info["fps"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{root}/meta/info.json has no integer 'fps' ({info.get('fps')!r}); fix info.json") from e
    action, state = _resolve_keys(cfg, info, root)
    joints = select_joints(action["names"], cfg.joints, action["key"])
    cameras = _pick_cameras(cfg, info, root)
    notes: list[str] = []
    frames = _load(root, {v["key"]: v["dim"] for v in (action, state) if v is not None})
    order, episodes = _episode_order(frames)
    actions = frames.vectors[action["key"]][order][:, [action["names"].index(j) for j in joints]]
    lo, hi = _finite_min_max(actions)
    states, state_lacks = _widen_with_state(frames, order, state, joints, (lo, hi), notes)
    integer = _integer_joints(action, actions, state, states)
    observed, ranges, units, unit_why = _ranges_and_units(joints, (lo, hi), integer, cfg.margin, notes)
    jumps = _jumps(actions, episodes)
    max_jump, jump_q, jump_max = _jump_threshold(jumps, cfg)
    deviation = _timestamp_deviation(frames, order, episodes, fps)
    notes += _setup_notes(cfg, deviation, state)
    starter = Starter(
        text="", name=_name_of(cfg), action_key=action["key"], state_key=state["key"] if state else None,
        cameras=cameras, joints=tuple(joints), ranges=ranges, observed=observed, units=units,
        max_action_jump=max_jump, fps=fps, notes=notes,
    )
    starter.text = render_starter(
        starter, cfg, info, action=action, state=state, state_lacks=state_lacks, unit_why=unit_why,
        jump=(jump_q, jump_max, len(jumps)), deviation=deviation, semantics_hint=_semantics_hint(actions, states, lo, hi),
        counts=(len(np.unique(episodes)) if len(episodes) else 0, frames.n),
    )
    return starter


def _integer_joints(action: dict, actions: np.ndarray, state: dict | None, states: np.ndarray | None) -> np.ndarray:
    """Per joint: stored as integers (an integer dtype) or holding only whole numbers in the action (and
    in the state, when it has every joint): raw encoder ticks rather than calibrated angles."""
    if action["dtype"].startswith(("int", "uint")):
        return np.ones(actions.shape[1], dtype=bool)
    integer = is_integer_valued(actions)
    return integer & is_integer_valued(states) if states is not None else integer


def _check_options(cfg: InitConfig) -> None:
    if not (cfg.margin >= 0 and math.isfinite(cfg.margin)):
        raise ConfigError(f"--margin {cfg.margin} must be a finite fraction >= 0 (0.1: 10% of the span)")
    if not 0 < cfg.jump_quantile <= 1 or not cfg.jump_factor > 0:
        raise ConfigError(f"jump quantile {cfg.jump_quantile} must be in (0, 1] and factor {cfg.jump_factor} > 0")


def _widen_with_state(frames, order: np.ndarray, state: dict | None, joints: list[str], bounds: tuple,
                      notes: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """Widen the observed action bounds (in place) with the state's values of the same joints; the
    state columns in joint order (None unless it has every joint) and the joints it lacks."""
    if state is None:
        return None, []
    lo, hi = bounds
    state_lacks = [j for j in joints if j not in state["names"]]
    shared = [j for j in joints if j in state["names"]]
    states = None
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
    return states, state_lacks


def _ranges_and_units(joints: list[str], bounds: tuple[np.ndarray, np.ndarray], integer: np.ndarray, margin: float,
                      notes: list[str]):
    """Per joint: the observed (min, max), the widened range and the guessed unit with its reason."""
    (lo, hi), (observed, ranges, units, unit_why) = bounds, ({}, {}, {}, {})
    for i, j in enumerate(joints):
        if not (math.isfinite(lo[i]) and math.isfinite(hi[i])):
            notes.append(f"joint '{j}' has no finite value in the data: no range written; check the recording")
            units[j], unit_why[j] = "unknown", "no finite values"
            continue
        observed[j] = (float(lo[i]), float(hi[i]))
        ranges[j] = widen(float(lo[i]), float(hi[i]), margin)
        units[j], unit_why[j] = guess_unit(j, float(lo[i]), float(hi[i]), bool(integer[i]))
    notes += format_ticks_note(units)
    return observed, ranges, units, unit_why


def _jump_threshold(jumps: np.ndarray, cfg: InitConfig) -> tuple[float | None, float, float]:
    """max_action_jump (None when nothing moves), the jump quantile and the largest jump observed."""
    if not len(jumps):
        return None, 0.0, 0.0
    jump_q, jump_max = float(np.quantile(jumps, cfg.jump_quantile)), float(jumps.max())
    base = jump_q if jump_q > 0 else jump_max
    return (_round_up(base * cfg.jump_factor) if base > 0 else None), jump_q, jump_max


def _setup_notes(cfg: InitConfig, deviation: float | None, state: dict | None) -> list[str]:
    notes = []
    if deviation is not None and deviation > cfg.timestamp_tolerance_s:
        notes.append(f"timestamp spacing deviates from 1/fps by up to {deviation:.4g}s, more than the tolerance "
                     f"{cfg.timestamp_tolerance_s}s: validation (timestamps) will report it")
    if state is None:
        notes.append("no state vector found: state_required is false; Pi0.5 tokenizes the state into its prompt, "
                     "so map one (--state KEY) before training")
    return notes


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
