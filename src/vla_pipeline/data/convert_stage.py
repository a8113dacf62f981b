"""The view of a v2.1 source that LeRobot's converter reads (``vla convert``).

LeRobot 0.4.2's converter globs ``data/*/*.parquet`` and ``videos/*/<camera>/*.mp4`` and numbers the
episodes by file order, reads ``meta/episodes_stats.jsonl`` unconditionally and copies the data
files' columns as they are. :func:`write_view` writes, in a new directory, exactly the dataset the
source declares: symbolic links to the source's episode files (nothing else: stray files are never
seen), data files rewritten only where columns are added, the meta files, missing ones rebuilt, and
each episode's statistics, computed with LeRobot's own ``compute_stats`` functions where the source
has none. The source is only read: every write goes into the view, and the links are only read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vla_pipeline.data.convert import ConversionError
from vla_pipeline.data.convert_source import (
    ADDABLE_COLUMNS,
    EPISODES_JSONL,
    STATS_JSONL,
    TASK_COLUMN,
    TASKS_JSONL,
    Episode,
    Source,
)
from vla_pipeline.data.tables import CAMERA_DTYPES

INDEX_FEATURE = {"dtype": "int64", "shape": [1], "names": None}  # LeRobot's DEFAULT_FEATURES entry
V21_DATA = "data/chunk-{chunk:03d}/episode_{episode:06d}.parquet"
V21_VIDEO = "videos/chunk-{chunk:03d}/{key}/episode_{episode:06d}.mp4"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def _chunk(source: Source, episode: int) -> int:
    return episode // int(source.info.get("chunks_size") or 1000)


def _write_info(source: Source, view: Path) -> dict:
    info = json.loads(json.dumps(source.info))
    for name in ADDABLE_COLUMNS:  # LeRobot v3.0 needs both declared
        info["features"].setdefault(name, dict(INDEX_FEATURE))
    info.update(total_frames=source.total_frames, total_tasks=len(source.tasks))
    (view / "meta").mkdir(parents=True)
    (view / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return info


def _with_columns(source: Source, e: Episode, offset: int, declared: list[str]) -> pa.Table:
    """The episode's data with ``index`` and ``task_index`` added where missing, columns in info.json's order."""
    table = pq.read_table(e.data)
    if "index" not in table.column_names:
        table = table.append_column("index", pa.array(np.arange(offset, offset + e.rows, dtype=np.int64)))
    if "task_index" not in table.column_names:
        number = {t: i for i, t in sorted(source.tasks.items(), reverse=True)}  # the first number of a task
        per_row = table[TASK_COLUMN].to_pylist() if TASK_COLUMN in table.column_names else [e.tasks[0]] * e.rows
        table = table.append_column("task_index", pa.array([number[str(t)] for t in per_row], pa.int64()))
    return table.select([c for c in declared if c in table.column_names])


def _write_data(source: Source, view: Path, info: dict) -> None:
    declared = [k for k, f in info["features"].items() if f.get("dtype") != "video"]
    offset = 0
    for e in source.episodes:
        path = view / V21_DATA.format(chunk=_chunk(source, e.index), episode=e.index)
        if not source.rewrites_data():
            _link(e.data, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(_with_columns(source, e, offset, declared), path)
        offset += e.rows


def _write_meta(source: Source, view: Path) -> None:
    for key in source.video_keys:
        for e in source.episodes:
            _link(e.videos[key], view / V21_VIDEO.format(chunk=_chunk(source, e.index), key=key, episode=e.index))
    if TASKS_JSONL in source.rebuilt:
        _jsonl(view / TASKS_JSONL, [{"task_index": i, "task": t} for i, t in sorted(source.tasks.items())])
    else:
        _link(source.root / TASKS_JSONL, view / TASKS_JSONL)
    if EPISODES_JSONL in source.rebuilt:
        _jsonl(view / EPISODES_JSONL, [{"episode_index": e.index, "tasks": e.tasks, "length": e.rows}
                                       for e in source.episodes])
    else:
        _link(source.root / EPISODES_JSONL, view / EPISODES_JSONL)


# ----------------------------------------------------------------------------- statistics
def _column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A data column as (rows, *dims) (vectors: dims from the nested lists themselves) or (rows,) (scalars)."""
    array, dims = column.combine_chunks(), []
    while pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type):
        outer, array = len(array), array.flatten()
        dims.append(len(array) // max(outer, 1))
    return array.to_numpy(zero_copy_only=False).reshape(len(column), *dims)


def _decoded_sample(e: Episode, key: str, dtype: str, table: pa.Table) -> np.ndarray:
    """The frames LeRobot's compute_stats samples from an episode (``sample_indices``), as (n, 3, H, W) uint8."""
    from lerobot.datasets.compute_stats import auto_downsample_height_width, sample_indices

    wanted = sample_indices(e.rows)
    frames: dict[int, np.ndarray] = {}
    if dtype == "video":
        import av

        with av.open(str(e.videos[key])) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i > wanted[-1]:
                    break
                frames[i] = frame.to_ndarray(format="rgb24") if i in wanted else None
    else:
        import io

        from PIL import Image

        cells = table[key].to_pylist()
        frames = {i: np.asarray(Image.open(io.BytesIO(cells[i]["bytes"])).convert("RGB")) for i in wanted}
    if any(frames.get(i) is None for i in wanted):
        raise ConversionError(f"episode {e.index}: {key} holds {len(frames)} frames, its data file {e.rows} rows; "
                              f"LeRobot reads one frame per row: restore the video from the recording")
    return np.stack([auto_downsample_height_width(frames[i].transpose(2, 0, 1)) for i in wanted])


def episode_stats(e: Episode, table: pa.Table, features: dict, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot 0.4.2's per-episode statistics of ``keys``, as its writer computes them (``compute_episode_stats``;
    camera frames sampled and reduced per channel to (3, 1, 1) in [0, 1], as it does for image paths)."""
    from lerobot.datasets.compute_stats import compute_episode_stats, get_feature_stats

    vectors = {k: _column_array(table[k]) for k in keys if features[k]["dtype"] not in CAMERA_DTYPES}
    stats = compute_episode_stats(vectors, features)
    for key in (k for k in keys if features[k]["dtype"] in CAMERA_DTYPES):
        sample = get_feature_stats(_decoded_sample(e, key, features[key]["dtype"], table), axis=(0, 2, 3), keepdims=True)
        stats[key] = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in sample.items()}
    return stats


def _plain(stats: dict[str, dict[str, np.ndarray]], names: set[str] | None) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items() if names is None or s in names} for k, d in stats.items()}


def _write_stats(source: Source, view: Path, info: dict) -> None:
    """meta/episodes_stats.jsonl: the source's rows, with the statistics it lacks computed. Computed ones keep
    the statistic names the source's rows use, so every episode has the same columns in meta/episodes."""
    features = info["features"]
    keys = [k for k, f in features.items() if f.get("dtype") != "string"]
    present = [s for ep in source.stats.values() for s in ep.values() if isinstance(s, dict)]
    names = set(present[0]) if present else None
    from tqdm import tqdm

    rows = []
    complete = all(k in source.stats.get(e.index, {}) for e in source.episodes for k in keys)
    for e in tqdm(source.episodes, desc="statistics (LeRobot's compute_stats)", unit="ep", disable=complete):
        have = {k: v for k, v in source.stats.get(e.index, {}).items() if k in keys}
        lacking = [k for k in keys if k not in have]
        if lacking:
            table = pq.read_table(view / V21_DATA.format(chunk=_chunk(source, e.index), episode=e.index))
            have.update(_plain(episode_stats(e, table, features, lacking), names))
        rows.append({"episode_index": e.index, "stats": {k: have[k] for k in keys}})
    _jsonl(view / STATS_JSONL, rows)


def write_view(source: Source, view: Path) -> None:
    """Write the v2.1 dataset LeRobot's converter reads for ``source`` into the new directory ``view``."""
    info = _write_info(source, view)
    _write_data(source, view, info)
    _write_meta(source, view)
    _write_stats(source, view, info)
