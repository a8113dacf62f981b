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
  by LeRobot's ``encode_video_frames`` (as LeRobot v2.1 did) from the v3.0 video's decoded frames
  (or, with ``codec``, by PyAV in another codec, as other recorders do).

``write_v21_recording`` writes a v2.1 recording as its owner's own recorder leaves it (the pattern
of issue 27's bimanual SO-101 set): bimanual vectors, cameras declared channel-first, mp4v videos,
meta files missing, stray files beside the data, wall-clock timestamps, no ``index``/``task_index``
columns, an all-black camera in one episode. Each quirk is a keyword, so any subset can be written.
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


def encode_frames(frames: list[np.ndarray], out: Path, fps: int, codec: str) -> None:
    """HxWx3 uint8 frames -> ``out`` (mp4) in ``codec`` with PyAV, one frame every 1/fps, no B-frames."""
    from fractions import Fraction

    import av

    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"qscale": "2"} if codec == "mpeg4" else {}
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_v21_from_v30(src: Path, dst: Path, *, codec: str = "libsvtav1") -> Path:
    """Write ``src`` (a v3.0 dataset, one data file and one file per camera) as v2.1 at ``dst``; videos in
    ``codec`` (LeRobot's own encoder for libsvtav1, as LeRobot v2.1 wrote them; PyAV for any other)."""
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
    for key in video_keys:
        if codec != "libsvtav1" and "info" in features[key]:
            features[key]["info"] = {**features[key]["info"], "video.codec": codec}
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
            out = dst / V21_VIDEO_PATH.format(episode_chunk=ep // chunks_size, video_key=key, episode_index=ep)
            if codec != "libsvtav1":
                encode_frames(frames[start:start + length], out, info["fps"], codec)
                continue
            with tempfile.TemporaryDirectory() as imgs:
                for i, frame in enumerate(frames[start:start + length]):
                    Image.fromarray(frame).save(Path(imgs) / f"frame-{i:06d}.png")
                encode_video_frames(imgs, out, info["fps"], vcodec="libsvtav1")
    return dst


# ----------------------------------------------------------------------------- a recording from its owner's recorder
BLACK_CAMERA = ("observation.images.wrist", 1)
STRAY_DATA_FILES = ("data/.DS_Store", "data/chunk-000/.DS_Store", "data/chunk-000/episodes.json",
                    "data/chunk-000/._episode_000000.parquet")  # ._*: the resource fork a Mac leaves on exFAT
STRAY_VIDEO_FILES = ("videos/.DS_Store", "videos/chunk-000/{camera}/._episode_000000.mp4")
EXTRA_CHUNK_DIR = "data/chunk-001"  # an empty chunk directory


def _rewrite_data(root: Path, fn) -> None:
    """Apply ``fn`` (pyarrow table -> table) to every episode's data file."""
    import pyarrow.parquet as pq

    for path in sorted(Path(root).glob("data/*/episode_*.parquet")):
        pq.write_table(fn(pq.read_table(path)), path)


def _add_task_column(root: Path) -> None:
    """A string ``task`` column beside (or instead of) ``task_index``, as some recorders write it."""
    import pyarrow as pa

    lines = (root / "meta" / "tasks.jsonl").read_text().splitlines()
    tasks = {r["task_index"]: r["task"] for r in map(json.loads, filter(str.strip, lines))}
    _rewrite_data(root, lambda t: t.append_column("task", pa.array([tasks[i] for i in t["task_index"].to_pylist()])))


def add_stray_files(root: Path) -> list[str]:
    """``.DS_Store`` files, a json beside the parquet files, AppleDouble ``._`` copies of an episode's
    parquet and mp4 (what LeRobot's converter globs), and an empty extra chunk directory. Returns them."""
    info = json.loads((root / "meta" / "info.json").read_text())
    cameras = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    written = [*STRAY_DATA_FILES, *(p.format(camera=c) for p in STRAY_VIDEO_FILES if "{camera}" in p for c in cameras),
               *(p for p in STRAY_VIDEO_FILES if "{camera}" not in p)]
    for rel in written:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        content = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X" if path.name.startswith("._") else b"Bud1\x00\x00\x10\x00"
        path.write_bytes(b'{"recorder": "my_recorder", "episodes": 3}' if path.suffix == ".json" else content)
    (root / EXTRA_CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    return [*written, EXTRA_CHUNK_DIR + "/"]


def write_v21_recording(root: Path, *, rec=None, chw: bool = True, codec: str = "mpeg4", drop_stats: bool = True,
                        drop_tasks: bool = False, drop_episodes: bool = False, stray_files: bool = True,
                        wall_clock: bool = True, drop_index_columns: bool = True, declare_index_columns: bool = True,
                        task_column: bool = False, black: tuple[tuple[str, int], ...] = (BLACK_CAMERA,)) -> Path:
    """A v2.1 recording as its owner's own recorder leaves it; every quirk on by default, each one a keyword.

    ``rec``: the :class:`realdata.Recording` to write (default: bimanual 34-dim vectors, two cameras,
    3 short episodes at 24x32, ``black`` streams all black); ``chw``: cameras declared ``[3, H, W]``
    with names ``[channel, height, width]``; ``codec``: the videos' codec (``mpeg4`` is mp4v);
    ``drop_*``: delete ``meta/episodes_stats.jsonl`` / ``tasks.jsonl`` / ``episodes.jsonl``;
    ``stray_files``: :func:`add_stray_files`; ``wall_clock``: timestamps from a jittery clock
    (about 1/fps apart); ``drop_index_columns``: no ``index`` and ``task_index`` columns (info.json
    still declares them unless ``declare_index_columns`` is False); ``task_column``: the task strings
    in a ``task`` column.
    """
    from dataclasses import replace

    from realdata import BIMANUAL_NAMES, Recording, alter_wall_clock_timestamps, edit_info, write_recording

    root = Path(root)
    rec = Recording(names=BIMANUAL_NAMES, lengths=(14, 11, 16), robot_type="bi_so101_follower") if rec is None else rec
    rec = replace(rec, black=tuple(black))
    with tempfile.TemporaryDirectory() as tmp:
        write_v21_from_v30(write_recording(Path(tmp) / root.name, rec), root, codec=codec)
    if chw:
        edit_info(root, lambda info: [f.update(shape=[3, rec.height, rec.width], names=["channel", "height", "width"])
                                      for f in info["features"].values() if f["dtype"] in ("video", "image")])
    if wall_clock:
        alter_wall_clock_timestamps(root, jitter=(0.8 / rec.fps, 1.3 / rec.fps), seed=rec.seed)
    if task_column:
        _add_task_column(root)
    if drop_index_columns:
        _rewrite_data(root, lambda t: t.drop_columns(["index", "task_index"]))
    if not declare_index_columns:
        edit_info(root, lambda info: [info["features"].pop(k) for k in ("index", "task_index")])
    for drop, name in ((drop_stats, "episodes_stats"), (drop_tasks, "tasks"), (drop_episodes, "episodes")):
        if drop:
            (root / "meta" / f"{name}.jsonl").unlink()
    if stray_files:
        add_stray_files(root)
    return root
