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
from vla_pipeline.contract import compute_contract_hash, load_contract
from vla_pipeline.data import column_array, compute_dataset_fingerprint, feature_names, load_frames, load_info
from vla_pipeline.errors import ConfigError
from vla_pipeline.params import param
from vla_pipeline.validate import load_report

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STATS_FILE = "stats.json"
SPLIT_FILE = "split.json"
CONSTANT_TOL = 1e-6


@dataclass(frozen=True)
class NormsConfig:
    dataset_root: Path
    contract_path: Path
    out_dir: Path
    report_path: Path | None = None  # the validation report; None skips the check (library use)
    exclude_episodes: tuple[int, ...] = ()
    val_fraction: float = 0.2
    seed: int = 0

    @classmethod
    def from_params(cls, p: dict) -> NormsConfig:
        return cls(
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            out_dir=param(p, "norms.out_dir", Path),
            report_path=param(p, "validate.report", Path),
            exclude_episodes=tuple(param(p, "dataset.exclude_episodes", lambda x: [int(e) for e in x or []])),
            val_fraction=param(p, "norms.val_fraction", float),
            seed=param(p, "norms.split_seed", int),
        )


def compute_split(episodes: list[int], val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Deterministic episode-level split; at least one episode on each side."""
    if len(episodes) < 2:
        raise ConfigError(f"need at least 2 episodes to split into train and validation, got {len(episodes)}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"norms.val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(sorted(episodes))
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return {"train": sorted(int(e) for e in order[n_val:]), "val": sorted(int(e) for e in order[:n_val])}


def compute_split_hash(split: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()


def compute_feature_stats(values: np.ndarray, names: list[str]) -> dict[str, list[float]]:
    """Per-dimension count, mean, std, min, max and exact quantiles of ``values`` (n, dim)."""
    stats = {
        "count": [int(values.shape[0])] * values.shape[1],
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }
    for key, q in QUANTILES.items():
        stats[key] = np.quantile(values, q, axis=0).tolist()
    for i, name in enumerate(names):
        if stats["std"][i] < CONSTANT_TOL or stats["q99"][i] - stats["q01"][i] < CONSTANT_TOL:
            warnings.warn(
                f"joint '{name}' is (near-)constant in the train split (std={stats['std'][i]:.3g}); "
                f"its normalized value will be 0-centred by LeRobot's epsilon guard, not scaled",
                stacklevel=2,
            )
    return stats


def compute_norm_stats(cfg: NormsConfig) -> tuple[dict, dict]:
    """Split the episodes and compute the frozen stats; returns (stats document, split)."""
    if cfg.report_path is not None:
        load_report(cfg.report_path, cfg.dataset_root)
    contract = load_contract(cfg.contract_path)
    info = load_info(cfg.dataset_root)
    frames = load_frames(cfg.dataset_root, ["index", "episode_index", contract.action_key, contract.state_key])
    episodes = sorted(set(frames["episode_index"].unique().tolist()) - set(cfg.exclude_episodes))
    split = compute_split(episodes, cfg.val_fraction, cfg.seed)
    train = frames[frames["episode_index"].isin(split["train"])]
    features = {}
    for role, key in ((ACTION, contract.action_key), (OBS_STATE, contract.state_key)):
        idx = contract.select_indices(feature_names(info, key), key)
        features[role] = compute_feature_stats(column_array(train, key)[:, idx], list(contract.joints))
    doc = {
        "features": features,
        "joints": list(contract.joints),
        "dataset_fingerprint": compute_dataset_fingerprint(cfg.dataset_root),
        "split_hash": compute_split_hash(split),
        "contract_hash": compute_contract_hash(cfg.contract_path),
        "exclude_episodes": sorted(cfg.exclude_episodes),
        "code_version": __version__,
        "n_train_frames": int(len(train)),
    }
    return doc, split


def save_norm_stats(cfg: NormsConfig) -> Path:
    doc, split = compute_norm_stats(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPLIT_FILE).write_text(json.dumps({**split, "hash": compute_split_hash(split)}, indent=2))
    (out / STATS_FILE).write_text(json.dumps(doc, indent=2))
    return out / STATS_FILE


def load_split(out_dir: Path) -> dict[str, list[int]]:
    path = Path(out_dir) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"episode split {path} not found; run `dvc repro norms` first")
    split = json.loads(path.read_text())
    return {"train": split["train"], "val": split["val"]}


def load_norm_stats(out_dir: Path) -> tuple[dict, dict[str, list[int]]]:
    out = Path(out_dir)
    if not (out / STATS_FILE).is_file():
        raise FileNotFoundError(f"frozen stats {out / STATS_FILE} not found; run `dvc repro norms` first")
    return json.loads((out / STATS_FILE).read_text()), load_split(out)


def make_processor_stats(doc: dict) -> dict[str, dict[str, torch.Tensor]]:
    """The frozen stats in the form LeRobot's normalizer/unnormalizer steps take."""
    return {
        feature: {k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()}
        for feature, stats in doc["features"].items()
    }
