"""A LeRobotDataset v3.0 root without cameras, written in milliseconds with pyarrow: meta/info.json,
one data parquet file, meta/episodes and meta/tasks.parquet, with the action and state vectors
given. What the tabular steps read (norms, the tabular validation checks, the fingerprint), for
unit tests that must not encode videos (the mutation run runs them once per mutant)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

NAMES = ("x.vel", "elbow", "wrist", "gripper")  # the arm joints sit among other dimensions
ARM = ("gripper", "elbow")  # a contract's joints: a subset, in another order than the dataset's


def write_tabular(root: Path, actions: list[np.ndarray], states: list[np.ndarray] | None = None,
                  names: tuple[str, ...] = NAMES, fps: int = 30, tasks: tuple[str, ...] = ("reach",),
                  meta_stats: dict | None = None) -> Path:
    """Episode e has ``len(actions[e])`` frames; its state defaults to its action; its task is
    ``tasks[e % len(tasks)]``. ``meta_stats`` is written as meta/stats.json when given."""
    root = Path(root)
    states = states if states is not None else actions
    lengths = [len(a) for a in actions]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    episode = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    frame = np.concatenate([np.arange(n) for n in lengths])
    vector = pa.list_(pa.float32())
    table = pa.table({
        "index": pa.array(np.arange(len(episode)), pa.int64()),
        "episode_index": pa.array(episode, pa.int64()),
        "frame_index": pa.array(frame, pa.int64()),
        "timestamp": pa.array((frame / fps).astype(np.float32)),
        "task_index": pa.array([e % len(tasks) for e in episode], pa.int64()),
        "action": pa.array([list(map(float, row)) for a in actions for row in a], vector),
        "observation.state": pa.array([list(map(float, row)) for s in states for row in s], vector),
    })
    (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "episode_index": pa.array(np.arange(len(lengths)), pa.int64()),
        "dataset_from_index": pa.array(starts, pa.int64()),
        "dataset_to_index": pa.array(starts + np.array(lengths), pa.int64()),
        "length": pa.array(lengths, pa.int64()),
    }), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pd.DataFrame({"task_index": range(len(tasks))}, index=list(tasks)).to_parquet(root / "meta" / "tasks.parquet")
    vector_feature = {"dtype": "float32", "shape": [len(names)], "names": list(names)}
    info = {"codebase_version": "v3.0", "fps": fps, "features": {
        "action": dict(vector_feature), "observation.state": dict(vector_feature),
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("index", "episode_index", "frame_index",
                                                                        "task_index")},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    if meta_stats is not None:
        (root / "meta" / "stats.json").write_text(json.dumps(meta_stats))
    return root


def write_arm_contract(path: Path, joints: tuple[str, ...] = ARM, fps: int = 30, **changes) -> Path:
    """A contract over the tabular dataset's keys, without cameras."""
    raw = {"name": "tabular", "keys": {"action": "action", "state": "observation.state", "cameras": {}},
           "joints": list(joints), "fps": fps, **changes}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load_frames(root: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All rows of the data parquet files, ordered by global ``index``, read with pandas: an
    independent reader, the oracle the package's pyarrow reader (``data.tables``) is checked against."""
    files = sorted((Path(root) / "data").glob("**/*.parquet"))
    frames = pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    return frames.sort_values("index", kind="stable").reset_index(drop=True) if "index" in frames else frames


def column_array(frames: pd.DataFrame, key: str) -> np.ndarray:
    """A vector column as a float64 ``(n_frames, dim)`` array."""
    return np.stack([np.asarray(v, dtype=np.float64) for v in frames[key].to_numpy()])

