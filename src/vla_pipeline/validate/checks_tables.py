"""Checks of the frame tables' bookkeeping columns: the global index, episode bounds, frame indices,
timestamps and task indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vla_pipeline.data.tables import BARE_INDEX_COLUMN, has_bare_task_column
from vla_pipeline.validate.findings import Findings, View, episode_starts, episodes_of


# ----------------------------------------------------------------------------- indices and episodes
def check_global_index(v: View, out: Findings) -> None:
    idx = v.frames["index"]
    bad = np.nonzero(idx != np.arange(v.frames.n))[0]
    if len(bad):
        row = bad[0]
        out.error("global_index", f"data: global 'index' is not contiguous 0..{v.frames.n - 1}: row {row} has "
                  f"{idx[row]}", episode=v.frames["episode_index"][row], value=idx[row], expected=row)


def check_episode_bounds(v: View, out: Findings) -> None:
    meta, ep = v.episodes, v.frames["episode_index"]
    eps, start, to, length = meta["episode_index"], meta["dataset_from_index"], meta["dataset_to_index"], meta["length"]
    gaps = np.nonzero(eps != np.arange(len(eps)))[0]
    if len(gaps):
        out.error("episode_bounds", f"meta/episodes: episode indices are not 0..{len(eps) - 1} (gap before "
                  f"{eps[gaps[0]]})", episode=eps[gaps[0]], value=eps[gaps[0]], expected=gaps[0])
    for i in np.nonzero(to - start != length)[0]:
        out.error("episode_bounds", f"meta/episodes: episode {eps[i]} has length {length[i]} but spans "
                  f"[{start[i]}, {to[i]})", episode=eps[i], value=int(to[i] - start[i]), expected=length[i])
    for i in np.nonzero(start[1:] != to[:-1])[0]:
        kind = "gap" if start[i + 1] > to[i] else "overlap"
        out.error("episode_bounds", f"meta/episodes: {kind} between episodes {eps[i]} and {eps[i + 1]}",
                  episode=eps[i + 1], value=start[i + 1], expected=to[i])
    data_eps, counts = np.unique(ep, return_counts=True)
    counted = dict(zip(data_eps.tolist(), counts.tolist(), strict=True))
    for e, n in zip(eps.tolist(), length.tolist(), strict=True):
        if counted.get(e, 0) != n:
            out.error("episode_bounds", f"episode {e}: meta/episodes says {n} frames, the data parquet has "
                      f"{counted.get(e, 0)}; the files disagree: re-export the episode or exclude it",
                      episode=e, value=counted.get(e, 0), expected=n)
    for e in sorted(set(counted) - set(eps.tolist())):
        out.error("episode_bounds", f"episode {e} has data rows but no meta/episodes entry", episode=e)


def check_frame_index(v: View, out: Findings) -> None:
    starts, run = episode_starts(v.frames)
    expected = np.arange(v.frames.n) - starts[run]
    bad = np.nonzero(v.frames["frame_index"] != expected)[0]
    for e in episodes_of(v.frames, bad):
        row = bad[v.frames["episode_index"][bad] == e][0]
        out.error("frame_index", f"episode {e}: frame_index does not run 0..n-1 (row {row} has "
                  f"{v.frames['frame_index'][row]}, expected {expected[row]}): a dropped or duplicated frame",
                  episode=e, frame=expected[row], value=v.frames["frame_index"][row], expected=expected[row])


def check_timestamps(v: View, out: Findings) -> None:
    """Timestamps that go backwards are an error. Spacing off 1/fps is a warning: the pipeline reads
    frame i of an episode's video at i / fps, as LeRobot's writer encodes it, not at the timestamp
    (LeRobot's own loader looks frames up by timestamp and fails beyond its tolerance)."""
    ts, ep = v.frames["timestamp"].astype(np.float64), v.frames["episode_index"]
    same = ep[1:] == ep[:-1]
    gaps = np.diff(ts)
    not_increasing = same & (gaps <= 0)
    for e in episodes_of(v.frames, np.nonzero(not_increasing)[0] + 1):
        row = np.nonzero(not_increasing & (ep[1:] == e))[0][0]
        frame = int(v.frames["frame_index"][row + 1])
        out.error("timestamps", f"episode {e}: timestamps not strictly increasing at frame {frame} ({ts[row]:.5f}s "
                  f"then {ts[row + 1]:.5f}s): frames out of order; exclude the episode or fix its timestamps",
                  episode=e, frame=frame, value=float(gaps[row]), expected=v.dt)
    tol = v.contract.timestamp_tolerance_s
    off = same & ~not_increasing & (np.abs(gaps - v.dt) > tol)
    off_episodes = episodes_of(v.frames, np.nonzero(off)[0] + 1)
    if not off_episodes:
        return
    starts, run = episode_starts(v.frames)
    drift = np.abs(ts - ts[starts[run]] - v.frames["frame_index"] * v.dt)
    within = gaps[same]
    lerobot = (f"LeRobot's own loader looks video frames up by these timestamps and fails beyond tolerance_s: "
               f"{int((drift > tol).sum())} of {v.frames.n} frames are more than {tol}s from frame_index/fps "
               f"(up to {drift.max():.3f}s). This pipeline reads frame i of an episode at i/fps, so training "
               f"and evaluation read the right frames; check that the videos hold one frame per row")
    if len(off_episodes) * 2 > len(starts):
        q = np.percentile(within, [0, 5, 50, 95, 100])
        out.warn("timestamps", f"timestamps are not 1/fps = {v.dt:.4f}s apart in {len(off_episodes)} of "
                 f"{len(starts)} episodes: a wall clock, not frame_index/fps. Frame spacing min {q[0]:.4f}s, "
                 f"p5 {q[1]:.4f}s, median {q[2]:.4f}s, p95 {q[3]:.4f}s, max {q[4]:.4f}s. {lerobot}",
                 value={"min": q[0], "p5": q[1], "median": q[2], "p95": q[3], "max": q[4]}, expected=v.dt)
        return
    for e in off_episodes:
        rows = np.nonzero(off & (ep[1:] == e))[0]
        worst = rows[np.argmax(np.abs(gaps[rows] - v.dt))]
        frame = int(v.frames["frame_index"][worst + 1])
        out.warn("timestamps", f"episode {e}: timestamps off 1/fps at {len(rows)} frames (worst at frame {frame}: "
                 f"spacing {gaps[worst]:.5f}s, expected {v.dt:.5f}s +- {tol}s): a stall or a clock that drifts. "
                 f"{lerobot}", episode=e, frame=frame, value=float(gaps[worst]), expected=v.dt)


def check_tasks(v: View, out: Findings) -> None:
    if "task_index" not in v.frames.columns:
        out.error("tasks", "data: no 'task_index' column; every frame needs a task", key="task_index")
        return
    tasks = pd.read_parquet(Path(v.root) / "meta" / "tasks.parquet")
    if has_bare_task_column(tasks):
        out.warn("tasks", f"meta/tasks.parquet keeps the task strings in a bare '{BARE_INDEX_COLUMN}' column (written "
                 f"without pandas metadata), so LeRobot's loader would prompt the policy with the task's number "
                 f"instead of its text (e.g. {tasks.index[0]!r} for {str(tasks[BARE_INDEX_COLUMN].iloc[0])!r}); this "
                 f"pipeline reads the strings from that column. To fix the file for other tools: "
                 f"df.set_index('{BARE_INDEX_COLUMN}').to_parquet(...) with pandas", key=BARE_INDEX_COLUMN)
    ti = v.frames["task_index"]
    known = np.array(sorted(v.tasks), dtype=ti.dtype)
    bad = np.nonzero(~np.isin(ti, known))[0]
    for e in episodes_of(v.frames, bad):
        value = int(ti[bad[v.frames["episode_index"][bad] == e][0]])
        out.error("tasks", f"episode {e}: task_index {value} has no task string in meta/tasks.parquet; "
                  f"add the task or exclude the episode", episode=e, key="task_index", value=value)
