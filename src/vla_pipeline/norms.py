"""Episode-level train/validation split and frozen normalization statistics of the arm-only
action and state, computed exactly over the train split only (never ``meta/stats.json``)."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline import __version__
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.features import vector_dims
from vla_pipeline.data.tables import feature_names, load_info, load_rows_by_index
from vla_pipeline.data.validation_report import load_report
from vla_pipeline.errors import ConfigError, read_json_artifact
from vla_pipeline.params import int_list, param
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint, compute_split_hash

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
PROCESSOR_KEYS = ("mean", "std", "min", "max", *QUANTILES)  # what LeRobot's (un)normalizer reads
NORMS_STATS_FILE = "stats.json"
NORMS_SPLIT_FILE = "split.json"
STATS_KEYS = ("features", "dataset_fingerprint")  # what train and evaluate read
CONSTANT_TOL = 1e-6


@dataclass(frozen=True)
class NormsConfig:
    dataset_root: Path
    contract_path: Path
    out_dir: Path
    report_path: Path | None = None  # the validation report; None skips the check (library use)
    exclude_episodes: tuple[int, ...] | None = ()  # None: as the validation report recorded them
    val_fraction: float = 0.2
    seed: int = 0
    val_episodes: tuple[int, ...] = ()  # explicit validation episodes; empty: seeded split by val_fraction

    @classmethod
    def from_params(cls, p: dict) -> NormsConfig:
        return cls(
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            out_dir=param(p, "norms.out_dir", Path),
            report_path=param(p, "validate.report", Path),
            exclude_episodes=None,  # dataset.exclude_episodes is read by validate only, carried by its report
            val_fraction=param(p, "norms.val_fraction", float),
            seed=param(p, "norms.split_seed", int),
            val_episodes=tuple(param(p, "norms.val_episodes", int_list)),
        )


def compute_split(
    episodes: list[int], val_fraction: float, seed: int, val_episodes: list[int] | None = None
) -> dict[str, list[int]]:
    """Deterministic episode-level split (an explicit ``val_episodes`` list wins); one episode at least per side.

    Stable: each episode's side depends only on (seed, its index), drawn by ``compute_episode_draw``; an
    episode is held out when its draw is below ``val_fraction``. Excluding or adding an episode never moves
    another between train and validation, so experiments that differ in their exclusions are still
    evaluated on the same held-out episodes (``split_id`` shows it). The number held out is therefore close
    to, not exactly, ``val_fraction`` of the episodes. Only when every episode falls on one side is the
    episode with the lowest (or highest) draw moved, so that both sides have one."""
    if len(episodes) < 2:
        raise ConfigError(f"need at least 2 episodes to split into train and validation, got {len(episodes)}")
    if val_episodes:
        unknown = sorted(set(val_episodes) - set(episodes))
        if unknown:
            raise ConfigError(f"norms.val_episodes {unknown} are not in the dataset (or are excluded)")
        val = sorted(set(val_episodes))
        if len(val) == len(episodes):
            raise ConfigError("norms.val_episodes leaves no episode to train on")
        return {"train": sorted(set(episodes) - set(val)), "val": val}
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"norms.val_fraction must be in (0, 1), got {val_fraction}")
    draws = {int(e): compute_episode_draw(seed, int(e)) for e in set(episodes)}
    val = {e for e, u in draws.items() if u < val_fraction}
    if not val:
        val = {min(draws, key=draws.get)}
    elif len(val) == len(draws):
        val.discard(max(draws, key=draws.get))
    return {"train": sorted(set(draws) - val), "val": sorted(val)}


def compute_episode_draw(seed: int, episode: int) -> float:
    """A uniform number in [0, 1) fixed by (split seed, episode index) alone: sha256, not an RNG stream."""
    digest = hashlib.sha256(f"vla-split:{int(seed)}:{int(episode)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def compute_split_id(split: dict[str, list[int]]) -> int:
    """A number that names the held-out episodes (from the split's hash), for ``dvc exp show`` and
    ``dvc metrics diff``: two runs with the same ``split_id`` were validated and evaluated on the same
    episodes. Six hex digits of ``compute_split_hash``: short enough to read, collisions negligible here."""
    return int(compute_split_hash(split)[:6], 16)


def compute_sorted_quantiles(sorted_values: np.ndarray, q: float) -> np.ndarray:
    """numpy's default ('linear') quantile of each column of an already sorted (n, dim) array."""
    pos = q * (sorted_values.shape[0] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, sorted_values.shape[0] - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def compute_feature_stats(values: np.ndarray, names: list[str]) -> dict[str, list[float]]:
    """Per-dimension count, mean, std, min, max and exact quantiles of ``values`` (n, dim).

    One sort per column serves every quantile. A (near-)constant dimension (std or q99 - q01
    below CONSTANT_TOL: a gripper that never moves) gets q01/q99 = q50 -+ 1 and std = 1, so both
    LeRobot normalizations map it to (x - centre) in its own units instead of dividing by ~0;
    a warning names the joint.
    """
    if values.shape[0] == 0:
        raise ConfigError("no train frames to compute statistics from")
    ordered = np.sort(values, axis=0)
    stats = {
        "count": [int(values.shape[0])] * values.shape[1],
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "min": ordered[0],
        "max": ordered[-1],
        **{key: compute_sorted_quantiles(ordered, q) for key, q in QUANTILES.items()},
    }
    constant = (stats["std"] < CONSTANT_TOL) | (stats["q99"] - stats["q01"] < CONSTANT_TOL)
    for i in np.nonzero(constant)[0]:
        warnings.warn(f"joint '{names[i]}' is (near-)constant in the train split (std={stats['std'][i]:.3g}); "
                      f"it is normalized as (x - {stats['q50'][i]:.4g}) in its own units", stacklevel=2)
    stats["q01"] = np.where(constant, stats["q50"] - 1.0, stats["q01"])
    stats["q99"] = np.where(constant, stats["q50"] + 1.0, stats["q99"])
    stats["std"] = np.where(constant, 1.0, stats["std"])
    out = {k: (v if isinstance(v, list) else np.asarray(v, dtype=np.float64).tolist()) for k, v in stats.items()}
    out["constant"] = constant.tolist()
    return out


def compute_stats_comparison(
    exact: dict, meta: dict | None, train_values: np.ndarray, names: list[str], dims: list[int]
) -> dict[str, dict[str, float]]:
    """How the dataset's own meta/stats.json differs from the exact train-split stats, per joint,
    as a share of the joint's [min, max] range, and the share of train frames outside [q01, q99]."""
    q01, q99 = np.asarray(exact["q01"]), np.asarray(exact["q99"])
    outside = ((train_values < q01) | (train_values > q99)).mean(axis=0)
    width = np.maximum(np.asarray(exact["max"]) - np.asarray(exact["min"]), 1e-12)
    result = {}
    for i, name in enumerate(names):
        row = {"share_outside_q01_q99": float(outside[i])}
        for q in ("q01", "q99"):
            if meta is not None and q in meta:
                stored = float(np.asarray(meta[q], dtype=np.float64).reshape(-1)[dims[i]])
                row[f"meta_{q}"] = stored
                row[f"meta_{q}_error_of_range"] = abs(stored - exact[q][i]) / float(width[i])
        result[name] = row
    return result


def _load_meta_stats(root: Path) -> dict | None:
    path = Path(root) / "meta" / "stats.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compute_norm_stats(cfg: NormsConfig) -> tuple[dict, dict]:
    """Split the episodes and compute the frozen stats; returns (stats document, split)."""
    excluded = cfg.exclude_episodes
    if cfg.report_path is not None:
        report = load_report(cfg.report_path, cfg.dataset_root, cfg.contract_path, excluded)
        excluded = tuple(report["excluded_episodes"]) if excluded is None else excluded
    excluded = excluded or ()
    contract = load_contract(cfg.contract_path)
    info = load_info(cfg.dataset_root)
    dims = vector_dims(info, (contract.action_key, contract.state_key))
    rows = load_rows_by_index(cfg.dataset_root, dims)  # float64, in global index order
    episodes = sorted(set(np.unique(rows["episode_index"]).tolist()) - set(excluded))
    split = compute_split(episodes, cfg.val_fraction, cfg.seed, list(cfg.val_episodes) or None)
    train = np.isin(rows["episode_index"], split["train"])
    meta_stats = _load_meta_stats(cfg.dataset_root)
    features, comparison = {}, {}
    for role, key in ((ACTION, contract.action_key), (OBS_STATE, contract.state_key)):
        idx = contract.select_indices(feature_names(info, key), key)
        values = rows[key][train][:, idx]
        features[role] = compute_feature_stats(values, list(contract.joints))
        meta = (meta_stats or {}).get(key)
        comparison[role] = compute_stats_comparison(features[role], meta, values, list(contract.joints), idx)
    doc = {
        "features": features,
        "joints": list(contract.joints),
        "dataset_fingerprint": compute_dataset_fingerprint(cfg.dataset_root),
        "split_hash": compute_split_hash(split),
        "contract_hash": compute_contract_hash(cfg.contract_path),
        "exclude_episodes": sorted(excluded),
        "code_version": __version__,
        "n_train_frames": int(train.sum()),
        "comparison_with_meta_stats": comparison,
    }
    return doc, split


def save_norm_stats(cfg: NormsConfig) -> Path:
    doc, split = compute_norm_stats(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / NORMS_SPLIT_FILE).write_text(json.dumps({**split, "hash": compute_split_hash(split),
                                              "id": compute_split_id(split)}, indent=2))
    (out / NORMS_STATS_FILE).write_text(json.dumps(doc, indent=2))
    return out / NORMS_STATS_FILE


def load_split(out_dir: Path) -> dict[str, list[int]]:
    path = Path(out_dir) / NORMS_SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"episode split {path} not found; run `dvc repro norms` first")
    split = read_json_artifact(path, "norms", ("train", "val"))
    return {"train": split["train"], "val": split["val"]}


def load_norm_stats(out_dir: Path) -> tuple[dict, dict[str, list[int]]]:
    out = Path(out_dir)
    if not (out / NORMS_STATS_FILE).is_file():
        raise FileNotFoundError(f"frozen stats {out / NORMS_STATS_FILE} not found; run `dvc repro norms` first")
    split = load_split(out)  # (a missing split is named before the stats' keys are checked)
    return read_json_artifact(out / NORMS_STATS_FILE, "norms", STATS_KEYS), split


def make_processor_stats(doc: dict) -> dict[str, dict[str, torch.Tensor]]:
    """The frozen stats in the form LeRobot's normalizer/unnormalizer steps take."""
    return {
        feature: {k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items() if k in PROCESSOR_KEYS}
        for feature, stats in doc["features"].items()
    }
