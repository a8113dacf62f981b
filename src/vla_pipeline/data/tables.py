"""The dataset's tables read straight from its files, never through the hub: ``meta/info.json``,
the data parquet columns as numpy arrays (vector features as ``(n, dim)`` float arrays; malformed
rows kept and marked, never dropped, so checks can name them), ``meta/episodes`` and ``meta/tasks``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vla_pipeline.errors import ValidationError

SUPPORTED_CODEBASE = "v3.0"  # the LeRobot dataset format every reader here reads
SCALARS = ("index", "episode_index", "frame_index", "timestamp", "task_index")


def load_info(root: Path) -> dict:
    return json.loads((Path(root) / "meta" / "info.json").read_text())


CAMERA_DTYPES = ("video", "image")  # a camera is any feature LeRobot stores as a video or as images


def camera_keys(info: dict) -> list[str]:
    """The keys of the dataset's camera features (dtype video or image), in info.json order."""
    features = info.get("features") if isinstance(info, dict) else None
    return [k for k, f in (features or {}).items() if isinstance(f, dict) and f.get("dtype") in CAMERA_DTYPES]


def format_no_camera(root: Path) -> str:
    """The one message every entry point gives for a dataset without a camera (validate, contract init,
    norms, train, preflight): nothing else is wrong enough to mention, and nothing fixes it but a recording."""
    return (f"{root}: this dataset has no camera stream; Pi0.5 needs at least one, so it cannot train this policy "
            f"(meta/info.json declares no feature of dtype {' or '.join(CAMERA_DTYPES)}). Record the demonstrations "
            f"with at least one camera")


def require_camera_stream(info: dict, root: Path) -> None:
    """Refuse a dataset without a camera with :func:`format_no_camera`'s message."""
    if not camera_keys(info):
        raise ValidationError(format_no_camera(root))


def feature_names(info: dict, key: str) -> list[str]:
    """The per-dimension names of a vector feature (LeRobot stores a list, or a dict of lists)."""
    names = info["features"][key].get("names")
    if isinstance(names, dict):
        names = [n for group in names.values() for n in group]
    return list(names or [])


@dataclass
class Frames:
    """Every data row, in file order."""

    n: int
    columns: set[str]
    scalars: dict[str, np.ndarray]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # (n, dim) float64; NaN rows if malformed
    lengths: dict[str, np.ndarray] = field(default_factory=dict)  # per-row vector length, -1 for null

    def __getitem__(self, name: str) -> np.ndarray:
        return self.scalars[name]


def _vector(column: pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float64 values and per-row lengths of a list column, without a per-row loop."""
    arr = column.combine_chunks()
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(n, arr.type.list_size, dtype=np.int64)
    else:
        lengths = pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    lengths[nulls] = -1
    out = np.full((n, dim), np.nan)
    ok = lengths == dim
    if not ok.any():
        return out, lengths
    if pa.types.is_fixed_size_list(arr.type):
        flat = pc.list_flatten(arr.fill_null(pa.scalar([0.0] * arr.type.list_size, arr.type)))
        values = flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, -1)
        out[ok] = values[ok]
        return out, lengths
    offsets = arr.offsets.to_numpy()[:-1].astype(np.int64)  # absolute positions in arr.values
    flat = arr.values.to_numpy(zero_copy_only=False).astype(np.float64)
    rows = np.nonzero(ok)[0]
    out[rows] = flat[offsets[rows, None] + np.arange(dim)[None, :]]
    return out, lengths


def load_frames_raw(root: Path, vector_dims: dict[str, int]) -> Frames:
    """All data parquet files under ``root/data`` (sorted), with ``vector_dims`` keys as vectors."""
    files = sorted((Path(root) / "data").glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {Path(root) / 'data'}")
    tables = [pq.read_table(f) for f in files]
    columns = set.intersection(*(set(t.column_names) for t in tables))
    scalars = {
        name: np.concatenate([t[name].to_numpy() for t in tables]) for name in SCALARS if name in columns
    }
    frames = Frames(n=sum(t.num_rows for t in tables), columns=columns, scalars=scalars)
    for key, dim in vector_dims.items():
        if key in columns:
            parts = [_vector(t[key], dim) for t in tables]
            frames.vectors[key] = np.concatenate([p[0] for p in parts])
            frames.lengths[key] = np.concatenate([p[1] for p in parts])
    return frames


def load_episodes_meta(root: Path) -> dict[str, np.ndarray]:
    """``meta/episodes`` without the per-episode stats columns, as numpy arrays."""
    files = sorted((Path(root) / "meta" / "episodes").glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {Path(root) / 'meta' / 'episodes'}")
    tables = [pq.read_table(f) for f in files]
    names = [c for c in tables[0].column_names if not c.startswith("stats/") and c != "tasks"]
    return {c: np.concatenate([t[c].to_numpy() for t in tables]) for c in names if all(c in t.column_names for t in tables)}


BARE_INDEX_COLUMN = "__index_level_0__"  # where pandas keeps an index when the pandas metadata is lost


def load_tasks_table(root: Path) -> pd.DataFrame:
    """``meta/tasks.parquet`` as LeRobot reads it: indexed by the task string, with a ``task_index`` column.

    A file written without pandas metadata (by a pyarrow-only tool) keeps the task strings in a plain
    ``__index_level_0__`` column and pandas reads a 0..n-1 index, so LeRobot would prompt the policy
    with "0", "1", ...; the strings are taken from that column instead (validation warns about it)."""
    df = pd.read_parquet(Path(root) / "meta" / "tasks.parquet")
    if has_bare_task_column(df):
        df = df.set_index(BARE_INDEX_COLUMN)
        df.index.name = None
    return df


def has_bare_task_column(tasks: pd.DataFrame) -> bool:
    """Whether a tasks table read by pandas keeps its strings in a bare ``__index_level_0__`` column."""
    return BARE_INDEX_COLUMN in tasks.columns and not all(isinstance(i, str) for i in tasks.index)


def load_task_indices(root: Path) -> dict[int, str]:
    """task_index -> task string from ``meta/tasks.parquet``."""
    df = load_tasks_table(root)
    return {int(i): str(name) for name, i in zip(df.index, df["task_index"], strict=True)}


def load_rows_by_index(root: Path, vector_dims: dict[str, int]) -> dict[str, np.ndarray]:
    """Every data row's scalar columns and ``vector_dims`` vectors, ordered by the global ``index``
    (row i is frame i: validation checked the index is contiguous), the order the cache files use."""
    frames = load_frames_raw(root, vector_dims)
    order = np.argsort(frames["index"], kind="stable")
    return {k: v[order] for k, v in {**frames.scalars, **frames.vectors}.items()}


def load_image_bytes(root: Path, key: str, lo: int, hi: int) -> list[bytes]:
    """The encoded frames (PNG/JPEG bytes) of the image feature ``key`` for global indices ``lo``..``hi - 1``,
    in index order, read from the data files whose ``index`` range meets it (LeRobot stores an image
    feature as a ``{bytes, path}`` struct column)."""
    found: dict[int, bytes] = {}
    for path in sorted((Path(root) / "data").glob("**/*.parquet")):
        table = pq.read_table(path, columns=["index", key], filters=[("index", ">=", lo), ("index", "<", hi)])
        images = table[key].combine_chunks()
        data = images.field("bytes") if pa.types.is_struct(images.type) else images
        found.update(zip(table["index"].to_pylist(), data.to_pylist(), strict=True))
    missing = [i for i in range(lo, hi) if found.get(i) is None]
    if missing:
        raise FileNotFoundError(f"{root}/data: no '{key}' image for rows {missing[:5]}")
    return [found[i] for i in range(lo, hi)]
