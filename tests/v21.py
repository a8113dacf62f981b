"""Write a LeRobot v2.1 dataset from a v3.0 one, for the conversion tests.

LeRobot 0.4.2 only writes v3.0, so the v2.1 fixture is derived from a dataset that LeRobot's own
writer produced, in the layout LeRobot <= 0.3 wrote and its v2.1 -> v3.0 converter reads:

* ``meta/info.json``: ``codebase_version`` ``v2.1``, ``total_chunks``/``total_videos``, the per-episode
  ``data_path``/``video_path`` templates, no per-feature ``fps`` and no file-size keys;
* ``meta/episodes.jsonl`` (``episode_index``, ``tasks``, ``length``), ``meta/tasks.jsonl``
  (``task_index``, ``task``), ``meta/episodes_stats.jsonl`` (``episode_index``, ``stats`` with
  min/max/mean/std/count per feature, images as (3, 1, 1) in [0, 1]); no ``stats.json``;
* ``data/chunk-000/episode_000000.parquet``: one file per episode, the v3.0 rows and schema;
* ``videos/chunk-000/<video_key>/episode_000000.mp4``: one AV1 file per episode and camera, encoded
  by LeRobot's ``encode_video_frames`` (as LeRobot v2.1 did) from the v3.0 video's decoded frames.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V21_STATS = ("min", "max", "mean", "std", "count")


def _plain(value):
    """numpy (possibly nested object arrays) -> JSON lists."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value] if value.dtype == object else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def decode_all_frames(path: Path) -> list[np.ndarray]:
    """Every frame of an mp4, in order, as HxWx3 uint8."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write_v21_from_v30(src: Path, dst: Path) -> Path:
    """Write ``src`` (a v3.0 dataset, one data file and one file per camera) as v2.1 at ``dst``."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from lerobot.datasets.video_utils import encode_video_frames
    from PIL import Image

    src, dst = Path(src), Path(dst)
    info = json.loads((src / "meta" / "info.json").read_text())
    episodes = pd.read_parquet(next((src / "meta" / "episodes").glob("**/*.parquet"))).sort_values("episode_index")
    video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    num_episodes, chunks_size = len(episodes), info["chunks_size"]

    features = {k: {kk: vv for kk, vv in f.items() if kk != "fps" or f["dtype"] == "video"}
                for k, f in info["features"].items()}
    v21_info = {
        "codebase_version": "v2.1", "robot_type": info.get("robot_type"), "total_episodes": num_episodes,
        "total_frames": info["total_frames"], "total_tasks": info["total_tasks"],
        "total_videos": num_episodes * len(video_keys), "total_chunks": -(-num_episodes // chunks_size),
        "chunks_size": chunks_size, "fps": info["fps"], "splits": {"train": f"0:{num_episodes}"},
        "data_path": V21_DATA_PATH, "video_path": V21_VIDEO_PATH if video_keys else None, "features": features,
    }
    (dst / "meta").mkdir(parents=True)
    (dst / "meta" / "info.json").write_text(json.dumps(v21_info, indent=4))

    tasks = pd.read_parquet(src / "meta" / "tasks.parquet")
    _jsonl(dst / "meta" / "tasks.jsonl",
           [{"task_index": int(i), "task": t} for t, i in sorted(tasks["task_index"].items(), key=lambda x: x[1])])
    _jsonl(dst / "meta" / "episodes.jsonl",
           [{"episode_index": int(e.episode_index), "tasks": list(e.tasks), "length": int(e.length)}
            for e in episodes.itertuples()])
    stats_rows = []
    for _, e in episodes.iterrows():
        stats = {k: {s: _plain(e[f"stats/{k}/{s}"]) for s in V21_STATS} for k in info["features"]
                 if f"stats/{k}/mean" in e}
        stats_rows.append({"episode_index": int(e["episode_index"]), "stats": stats})
    _jsonl(dst / "meta" / "episodes_stats.jsonl", stats_rows)

    table = pq.read_table(sorted((src / "data").glob("**/*.parquet")))
    for ep in episodes["episode_index"].tolist():
        path = dst / V21_DATA_PATH.format(episode_chunk=ep // chunks_size, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(table["episode_index"], ep)), path)

    for key in video_keys:
        v3_files = sorted((src / "videos" / key).glob("**/*.mp4"))
        assert len(v3_files) == 1, f"one v3.0 video file per camera expected, got {v3_files}"
        frames = decode_all_frames(v3_files[0])
        assert len(frames) == info["total_frames"], (len(frames), info["total_frames"])
        for _, e in episodes.iterrows():
            start = round(e[f"videos/{key}/from_timestamp"] * info["fps"])
            ep, length = int(e["episode_index"]), int(e["length"])
            with tempfile.TemporaryDirectory() as imgs:
                for i, frame in enumerate(frames[start:start + length]):
                    Image.fromarray(frame).save(Path(imgs) / f"frame-{i:06d}.png")
                out = dst / V21_VIDEO_PATH.format(episode_chunk=ep // chunks_size, video_key=key, episode_index=ep)
                encode_video_frames(imgs, out, info["fps"], vcodec="libsvtav1")
    return dst
