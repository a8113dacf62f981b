"""A LeRobot v2.1 source read whole before anything is converted (``vla convert``).

Recordings made by their owners' own recorders differ from what LeRobot's converter expects in ways
that are not errors (issue 27): stray files beside the data (``.DS_Store``, a json, a Mac's ``._``
copies, an empty chunk directory), no ``meta/episodes_stats.jsonl``, no ``index``/``task_index``
columns, timestamps from a wall clock. :func:`read_source` reads everything once and sorts what it
finds into problems the conversion fixes (announced as warnings: ``Source.warnings``) and problems
it cannot fix (``Source.errors``, every one with its cause), so the user hears all of them at once.

The episode files the dataset is made of are named ``episode_NNNNNN.parquet`` under ``data/<chunk>/``
and ``episode_NNNNNN.mp4`` under ``videos/<chunk>/<camera>/``, one per episode ``0..total_episodes-1``;
everything else under ``data/`` and ``videos/`` is not part of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vla_pipeline.data.convert import (
    LEGACY_FILES,
    SUPPORTED_CODEBASE,
    V21,
    V21_INFO_KEYS,
    ConversionError,
    format_conversion_hint,
)
from vla_pipeline.data.convert_tasks import resolve_tasks
from vla_pipeline.data.features import video_keys

EPISODES_JSONL, TASKS_JSONL, STATS_JSONL = LEGACY_FILES
EPISODE_FILE = re.compile(r"episode_(\d+)\.(parquet|mp4)")
ADDABLE_COLUMNS = ("index", "task_index")  # added when missing (LeRobot's DEFAULT_FEATURES)
TASK_COLUMN = "task"  # task strings per row, as some recorders write them: read, then left out
LEROBOT_TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s


@dataclass
class Episode:
    """One episode's files and what was read from its data file."""

    index: int
    data: Path
    rows: int = 0
    columns: tuple[str, ...] = ()
    videos: dict[str, Path] = field(default_factory=dict)
    task_strings: list[str] | None = None  # the ``task`` column's values in order of appearance
    task_indices: list[int] | None = None  # the ``task_index`` column's values in order of appearance
    pairs: set[tuple[int, str]] = field(default_factory=set)  # (task_index, task) rows, both columns present
    clock_offset_s: float = 0.0  # the largest |timestamp - frame_index/fps|
    tasks: list[str] | None = None  # the episode's tasks (meta/episodes.jsonl, or rebuilt from the data)


@dataclass
class Source:
    """What the conversion reads and what it must fix (``warnings``) or cannot (``errors``)."""

    root: Path
    info: dict
    episodes: list[Episode] = field(default_factory=list)
    tasks: dict[int, str] = field(default_factory=dict)
    stats: dict[int, dict] = field(default_factory=dict)  # meta/episodes_stats.jsonl rows present
    rebuilt: set[str] = field(default_factory=set)  # legacy meta files rebuilt from the data
    added_columns: set[str] = field(default_factory=set)
    stray: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def video_keys(self) -> list[str]:
        return video_keys(self.info, self.info["features"])

    @property
    def total_frames(self) -> int:
        return sum(e.rows for e in self.episodes)

    def rewrites_data(self) -> bool:
        return bool(self.added_columns) or any(TASK_COLUMN in e.columns for e in self.episodes)


def _read_info(src: Path) -> dict:
    """``meta/info.json`` of a v2.1 dataset; anything else ends the reading with its one message."""
    if not src.is_dir():
        raise ConversionError(f"{src}: no such directory; pass the root of a LeRobot {V21} dataset "
                              f"(the folder with meta/, data/, videos/)")
    info_path = src / "meta" / "info.json"
    if not info_path.is_file():
        raise ConversionError(f"{src} is not a LeRobot dataset: {info_path} not found; pass the dataset's root "
                              f"(the folder with meta/, data/, videos/)")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise ConversionError(f"{info_path} is not valid JSON ({e}); restore it from the dataset's origin") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version == SUPPORTED_CODEBASE:
        raise ConversionError(f"{src} is already a LeRobot {SUPPORTED_CODEBASE} dataset (meta/info.json); nothing to "
                              f"convert: point dataset.root at it as it is")
    if version != V21:
        raise ConversionError(format_conversion_hint(src))
    missing = [k for k in V21_INFO_KEYS if k not in info]
    if missing:
        raise ConversionError(f"{info_path}: no {', '.join(missing)}, which every {V21} info.json has; restore the "
                              f"file from the recorder's output")
    features = info["features"]
    if not (isinstance(features, dict) and all(isinstance(f, dict) and "dtype" in f for f in features.values())
            and isinstance(info["total_episodes"], int) and isinstance(info["fps"], int | float) and info["fps"] > 0):
        raise ConversionError(f"{info_path}: features must map each key to a dict with a dtype, total_episodes must "
                              f"be a whole number and fps a positive number (found total_episodes "
                              f"{info['total_episodes']!r}, fps {info['fps']!r}); repair the file")
    return info


def _read_jsonl(path: Path, errors: list[str], fields: dict[str, type]) -> list[dict] | None:
    """The rows of a JSON-lines file, each an object with ``fields`` of their types; None when the file is
    missing or a line is not such an object (then the cause, with the line, is in ``errors``)."""
    if not path.is_file():
        return None
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError as e:
            row = e
        wrong = [k for k, t in fields.items() if not isinstance(row, dict) or not isinstance(row.get(k), t)
                 or isinstance(row.get(k), bool)]
        if row is not None and wrong:
            what = f"not valid JSON ({row})" if isinstance(row, Exception) else f"no {' or '.join(wrong)} of type " \
                   f"{' or '.join(fields[k].__name__ for k in wrong)}"
            errors.append(f"{path}, line {n}: {what}; repair the line, or remove the file if the conversion can "
                          f"rebuild it from the data")
            return None
        rows += [row] if row is not None else []
    return rows


# ----------------------------------------------------------------------------- files
def _episode_files(src: Path, top: str, pattern: str, suffix: str, num: int, source: Source) -> dict[int, Path]:
    """The episode files ``top/<pattern>`` named ``episode_NNNNNN.<suffix>``; the rest is stray or an error."""
    found: dict[int, list[Path]] = {}
    for path in sorted(src.glob(f"{top}/{pattern}")):
        match = EPISODE_FILE.fullmatch(path.name)
        if path.is_file() and match and match[2] == suffix and int(match[1]) < num:
            found.setdefault(int(match[1]), []).append(path)
    for ep, paths in found.items():
        if len(paths) > 1:
            source.errors.append(f"episode {ep} has {len(paths)} files: {', '.join(str(p.relative_to(src)) for p in paths)}"
                                 f"; a {V21} dataset has one per episode: move the copies out of {src / top}")
    return {ep: paths[0] for ep, paths in found.items()}


def _stray(src: Path, kept: set[Path]) -> list[str]:
    """Files under data/ and videos/ that are not episode files, and directories without any (named once)."""
    stray: list[str] = []
    for top in ("data", "videos"):
        for path in sorted((src / top).rglob("*")):
            rel = path.relative_to(src).as_posix()
            if any(s.endswith("/") and rel.startswith(s) for s in stray):
                continue
            if path.is_dir() and not any(p in kept for p in path.rglob("*")):
                stray.append(rel + "/")
            elif not path.is_dir() and path not in kept:
                stray.append(rel)
    return stray


def _find_files(source: Source) -> None:
    src, num = source.root, int(source.info["total_episodes"])
    data = _episode_files(src, "data", "*/*", "parquet", num, source)
    videos = {k: _episode_files(src, "videos", f"*/{k}/*", "mp4", num, source) for k in source.video_keys}
    for what, files in [("data", data), *((f"{k} video", f) for k, f in videos.items())]:
        lacking = [ep for ep in range(num) if ep not in files]
        if lacking:
            source.errors.append(f"{src}: no {what} file for episode{'s' * (len(lacking) > 1)} "
                                 f"{_few(lacking)} of {num} (total_episodes in meta/info.json); a {V21} dataset has "
                                 f"one per episode, named as in {source.info.get('data_path' if what == 'data' else 'video_path')}: "
                                 f"restore the missing files from the recording")
    source.episodes = [Episode(ep, data[ep], videos={k: f[ep] for k, f in videos.items() if ep in f})
                       for ep in range(num) if ep in data]
    kept = {*data.values(), *(p for f in videos.values() for p in f.values())}
    source.stray = _stray(src, kept)
    if source.stray:
        source.warnings.append(f"{len(source.stray)} entries under data/ and videos/ are not part of the dataset and "
                               f"are left out (LeRobot's converter would read any *.parquet or *.mp4 among them as an "
                               f"episode): {', '.join(source.stray)}")


def _few(items: list, n: int = 8) -> str:
    return ", ".join(map(str, items[:n])) + (f" (and {len(items) - n} more)" if len(items) > n else "")


# ----------------------------------------------------------------------------- data files
def _scan_episode(episode: Episode, fps: int, errors: list[str]) -> None:
    """Rows, columns, the task columns' values and the timestamps' distance from frame_index/fps."""
    try:
        schema = pq.read_schema(episode.data)
        episode.rows = pq.ParquetFile(episode.data).metadata.num_rows
        wanted = [c for c in ("timestamp", "frame_index", "task_index", TASK_COLUMN) if c in schema.names]
        table = pq.read_table(episode.data, columns=wanted)
    except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds for a damaged file)
        errors.append(f"{episode.data}: not a readable parquet file ({type(e).__name__}: {e}); restore it from the "
                      f"recording")
        return
    episode.columns = tuple(n for n in schema.names if not n.startswith("__index_level_"))
    column = {c: table[c].to_pylist() for c in wanted}
    if TASK_COLUMN in column:
        episode.task_strings = list(dict.fromkeys(map(str, column[TASK_COLUMN])))
    if "task_index" in column:
        episode.task_indices = list(dict.fromkeys(map(int, column["task_index"])))
    if TASK_COLUMN in column and "task_index" in column:
        episode.pairs = set(zip(map(int, column["task_index"]), map(str, column[TASK_COLUMN]), strict=True))
    if "timestamp" in column and "frame_index" in column and episode.rows:
        offset = np.asarray(column["timestamp"], float) - np.asarray(column["frame_index"], float) / fps
        episode.clock_offset_s = float(np.abs(offset).max())


def _check_columns(source: Source) -> None:
    """Declared columns that are missing (``index``/``task_index`` are added) and undeclared ones."""
    videos = set(source.video_keys)
    declared = [k for k in source.info["features"] if k not in videos]
    missing: dict[str, list[int]] = {}
    undeclared: dict[str, list[int]] = {}
    for e in source.episodes:
        for name in dict.fromkeys(c for c in (*declared, *ADDABLE_COLUMNS) if c not in e.columns):
            missing.setdefault(name, []).append(e.index)
        for name in (c for c in e.columns if c not in declared and c not in (*ADDABLE_COLUMNS, TASK_COLUMN)):
            undeclared.setdefault(name, []).append(e.index)
    source.added_columns = {c for c in missing if c in ADDABLE_COLUMNS}
    for name in source.added_columns:
        how = ("the running frame number across episodes in episode order, 0..total_frames-1" if name == "index"
               else "each frame's task, from the task column or the episode's one task in meta/episodes.jsonl")
        source.warnings.append(f"the data files of {len(missing[name])} of {len(source.episodes)} episodes have no "
                               f"'{name}' column; it is added in the converted dataset ({how})")
    for name, eps in missing.items():
        if name not in ADDABLE_COLUMNS:
            source.errors.append(f"the data files of episodes {_few(eps)} have no '{name}' column, which meta/info.json "
                                 f"declares; it cannot be rebuilt: restore the files from the recording")
    for name, eps in undeclared.items():
        source.errors.append(f"the data files of episodes {_few(eps)} have a column '{name}' that meta/info.json does "
                             f"not declare (LeRobot refuses to load such files); declare it in info.json's features "
                             f"(dtype, shape, names) or remove the column")
    for name in (c for c in ADDABLE_COLUMNS if c not in declared):
        source.warnings.append(f"meta/info.json does not declare '{name}'; the converted info.json does (int64, as "
                               f"LeRobot's DEFAULT_FEATURES)")
    if any(TASK_COLUMN in e.columns for e in source.episodes) and TASK_COLUMN not in declared:
        source.warnings.append(f"the data files have a '{TASK_COLUMN}' column of task strings: read for the tasks, then "
                               f"left out (LeRobot keeps tasks in meta/tasks and task_index)")


def _check_lengths(source: Source, listed: dict[int, dict] | None) -> None:
    for e in source.episodes:
        length = (listed or {}).get(e.index, {}).get("length")
        if length is not None and int(length) != e.rows:
            source.errors.append(f"episode {e.index}: meta/episodes.jsonl says {length} frames, its data file "
                                 f"{e.data.relative_to(source.root)} has {e.rows} rows; the recording is incomplete "
                                 f"or the file belongs to another episode")
    declared = source.info.get("total_frames")
    if not source.errors and declared != source.total_frames:
        source.warnings.append(f"meta/info.json says total_frames {declared}, the episodes' data files hold "
                               f"{source.total_frames} rows: the converted info.json says {source.total_frames}")


def _check_videos(source: Source) -> None:
    """Each episode's video holds one frame per data row (what LeRobot's reader and this pipeline assume)."""
    import av

    for e in source.episodes:
        for path in e.videos.values():
            try:
                with av.open(str(path)) as container:
                    frames = container.streams.video[0].frames
            except (av.FFmpegError, IndexError) as err:
                source.errors.append(f"{path}: not a readable video ({err}); restore it from the recording")
                continue
            if frames and frames != e.rows:
                source.errors.append(f"episode {e.index}: {path.relative_to(source.root)} holds {frames} frames, its "
                                     f"data file {e.rows} rows; LeRobot reads one video frame per row: restore the "
                                     f"video or the data file from the recording")


def _check_timestamps(source: Source) -> None:
    """Wall-clock timestamps are kept, with the warning validate gives, instead of failing LeRobot's check."""
    off = [e for e in source.episodes if e.clock_offset_s > LEROBOT_TOLERANCE_S]
    if off:
        worst = max(e.clock_offset_s for e in off)
        source.warnings.append(
            f"timestamps are not frame_index/fps in {len(off)} of {len(source.episodes)} episodes (up to {worst:.4f}s "
            f"off: a wall clock); kept as they are. LeRobot's own loader looks video frames up by these timestamps and "
            f"fails beyond its tolerance_s ({LEROBOT_TOLERANCE_S}s); this pipeline reads frame i of an episode at "
            f"i/fps, and `vla validate` reports them as a warning: check that the videos hold one frame per row")


# ----------------------------------------------------------------------------- meta files
def _read_episodes(source: Source) -> dict[int, dict] | None:
    rows = _read_jsonl(source.root / EPISODES_JSONL, source.errors, {"episode_index": int, "length": int, "tasks": list})
    if rows is None:
        return None
    listed = {r["episode_index"]: r for r in rows}
    num = int(source.info["total_episodes"])
    if sorted(listed) != list(range(num)) or len(listed) != len(rows):
        source.errors.append(
            f"{source.root / EPISODES_JSONL}: episode indices must be 0..{num - 1} once each (total_episodes {num}), "
            f"found {len(rows)} rows with indices {_few(sorted(listed))}; LeRobot's converter numbers episodes by "
            f"file order, so a dataset with gaps would be mislabelled")
    return listed


def _read_stats(source: Source) -> None:
    rows = _read_jsonl(source.root / STATS_JSONL, source.errors, {"episode_index": int, "stats": dict})
    source.stats = {r["episode_index"]: r["stats"] for r in rows or []}
    missing = [e.index for e in source.episodes if e.index not in source.stats]
    if rows is None and not (source.root / STATS_JSONL).is_file():
        source.warnings.append(f"{STATS_JSONL} is missing: each episode's statistics are computed from its data and "
                               f"videos with LeRobot's compute_stats (as its recorder does), frames sampled as "
                               f"LeRobot samples them")
    elif rows is not None and missing:
        source.warnings.append(f"{STATS_JSONL} has no statistics for episodes {_few(missing)}: computed from their data "
                               f"and videos with LeRobot's compute_stats")


def read_source(src: Path) -> Source:
    """Read the v2.1 dataset at ``src`` whole; raise at once only when there is nothing to read."""
    source = Source(Path(src), _read_info(Path(src)))
    _find_files(source)
    for e in source.episodes:
        _scan_episode(e, source.fps, source.errors)
    _check_columns(source)
    listed = _read_episodes(source)
    _check_lengths(source, listed)
    _check_videos(source)
    _check_timestamps(source)
    tasks_rows = _read_jsonl(source.root / TASKS_JSONL, source.errors, {"task_index": int, "task": str})
    tasks = None if tasks_rows is None else {r["task_index"]: r["task"] for r in tasks_rows}
    plan = resolve_tasks(source.episodes, tasks, listed)
    source.tasks, source.errors, source.warnings = plan.tasks, source.errors + plan.errors, source.warnings + plan.notes
    for e in source.episodes:
        e.tasks = plan.episode_tasks.get(e.index)
    source.rebuilt = {name for name, rows in ((TASKS_JSONL, tasks), (EPISODES_JSONL, listed)) if rows is None
                      and not (source.root / name).is_file()}
    _read_stats(source)
    return source
