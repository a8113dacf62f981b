"""Datasets that look like other people's recordings: written by LeRobot's own writer, then
altered the way real recordings are (other key names, bimanual vectors, videos in another
directory, absent video files, a codec that differs from info.json, the task strings in a bare
``__index_level_0__`` column, a joint whose action and state are offset, wall-clock timestamps,
an all-black or frozen camera).

``write_recording`` draws smooth, seeded joint trajectories (the action is the next frame's
state, so a policy can learn it) and camera frames that change every frame; the ``alter_*``
functions edit the files afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SO101_JOINTS = ("shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos",
                "gripper.pos")
BIMANUAL_NAMES = (*(f"left.joint_{i}.pos" for i in range(1, 8)), *(f"left_hand.joint_{i}" for i in range(1, 11)),
                  *(f"right.joint_{i}.pos" for i in range(1, 8)), *(f"right_hand.joint_{i}" for i in range(1, 11)))
TASKS = ("pick up the cube", "put the cube in the box")


@dataclass(frozen=True)
class Recording:
    """What to write: keys, per-dimension names, cameras, episodes, and the quirks to bake in."""

    action_key: str = "action"
    state_key: str = "observation.state"
    cameras: tuple[str, ...] = ("observation.images.front", "observation.images.wrist")
    names: tuple[str, ...] = SO101_JOINTS
    fps: int = 30
    lengths: tuple[int, ...] = (24, 20, 26, 22)
    height: int = 24
    width: int = 32
    robot_type: str = "so101_follower"
    one_video_file_per_episode: bool = False  # v3.0 packs episodes into one file; real sets often have many
    # name -> (state centre, state amplitude, action centre, action amplitude): a calibration mismatch
    offset_joints: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    black: tuple[tuple[str, int], ...] = ()  # (camera key, episode) streams that are all black
    frozen: tuple[tuple[str, int], ...] = ()  # (camera key, episode) streams that repeat their first frame
    use_videos: bool = True  # False: cameras stored as images (dtype "image") in the parquet files
    ticks: bool = False  # joints as raw servo encoder ticks: int32 whole numbers in 0..4095
    seed: int = 0


def joint_range(name: str) -> tuple[float, float]:
    """The (low, high) the synthetic trajectories of a joint stay in: grippers 0..100, the rest +-60."""
    return (0.0, 100.0) if "gripper" in name else (-60.0, 60.0)


def _trajectories(rec: Recording, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) states and actions: a sinusoid per joint; the action is the next frame's state."""
    dim = len(rec.names)
    lo, hi = np.array([joint_range(j) for j in rec.names]).T
    centre, amp = (lo + hi) / 2, (hi - lo) / 2 * rng.uniform(0.3, 0.8, dim)
    freq, phase = rng.uniform(0.2, 0.6, dim), rng.uniform(0, 2 * np.pi, dim)
    t = np.arange(n + 1)[:, None] / rec.fps
    wave = np.sin(2 * np.pi * freq * t + phase)
    state, action = centre + amp * wave[:-1], centre + amp * wave[1:]
    for name, (s_c, s_a, a_c, a_a) in rec.offset_joints.items():
        j = rec.names.index(name)
        state[:, j], action[:, j] = s_c + s_a * wave[:-1, j], a_c + a_a * wave[1:, j]
    return state.astype(np.float32), action.astype(np.float32)


def _frame(rec: Recording, camera: int, t: int) -> np.ndarray:
    """A frame that changes every step: diagonal stripes moving with t, a colour per camera."""
    ys, xs = np.mgrid[0 : rec.height, 0 : rec.width]
    stripes = ((xs + ys + 3 * t) % 16 < 8).astype(np.uint8)
    colour = np.array([200, 80 + 60 * camera, 40 + 90 * camera], dtype=np.uint8)
    return stripes[..., None] * colour + 20


def features(rec: Recording) -> dict[str, dict]:
    vector = {"dtype": "int32" if rec.ticks else "float32", "shape": (len(rec.names),), "names": list(rec.names)}
    out = {rec.state_key: dict(vector), rec.action_key: dict(vector)}
    for key in rec.cameras:
        out[key] = {"dtype": "video" if rec.use_videos else "image", "shape": (rec.height, rec.width, 3),
                    "names": ["height", "width", "channels"]}
    return out


def write_recording(root: Path, rec: Recording = Recording()) -> Path:
    """Write ``rec`` with LeRobot's ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rec.seed)
    dataset = LeRobotDataset.create(repo_id=f"them/{root.name}", fps=rec.fps, root=root, robot_type=rec.robot_type,
                                    features=features(rec), use_videos=rec.use_videos)
    if rec.one_video_file_per_episode:  # a new file as soon as the current one holds anything
        dataset.meta.update_chunk_settings(video_files_size_in_mb=1e-9)
    try:
        for ep, n in enumerate(rec.lengths):
            state, action = _trajectories(rec, rng, n)
            if rec.ticks:  # a Feetech/Dynamixel encoder: 4096 ticks a turn, the joint range mapped onto it
                lo, hi = np.array([joint_range(j) for j in rec.names]).T
                state, action = (np.round((v - lo) / (hi - lo) * 4095).astype(np.int32) for v in (state, action))
            for t in range(n):
                frame = {rec.state_key: state[t], rec.action_key: action[t], "task": TASKS[ep % len(TASKS)]}
                for c, key in enumerate(rec.cameras):
                    if (key, ep) in rec.black:
                        frame[key] = np.zeros((rec.height, rec.width, 3), dtype=np.uint8)
                    else:
                        frame[key] = _frame(rec, c, 0 if (key, ep) in rec.frozen else t + 7 * ep)
                dataset.add_frame(frame)
            dataset.save_episode()
    finally:
        dataset.finalize()
    return root


# ----------------------------------------------------------------------------- alterations
def edit_info(root: Path, fn) -> None:
    path = Path(root) / "meta" / "info.json"
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info, indent=4))


def video_files(root: Path, key: str) -> list[Path]:
    return sorted((Path(root) / "videos" / key).glob("chunk-*/file-*.mp4"))


def episode_video_file(root: Path, key: str, episode: int) -> Path:
    """The file that holds ``episode``'s frames of camera ``key`` (from meta/episodes)."""
    table = pq.read_table(sorted((Path(root) / "meta" / "episodes").glob("**/*.parquet"))[0]).to_pandas()
    row = table[table["episode_index"] == episode].iloc[0]
    chunk, file = int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"])
    return Path(root) / "videos" / key / f"chunk-{chunk:03d}" / f"file-{file:03d}.mp4"


def alter_remove_videos(root: Path, key: str, episodes: list[int]) -> list[Path]:
    """Delete the video files of ``key`` that hold ``episodes`` (a real set's lost downloads)."""
    gone = sorted({episode_video_file(root, key, e) for e in episodes})
    for path in gone:
        path.unlink()
    return gone


def alter_move_videos(root: Path, new_top: str = "video") -> Path:
    """Move ``videos/`` to another directory while info.json's ``video_path`` still says ``videos/``."""
    target = Path(root) / new_top
    shutil.move(str(Path(root) / "videos"), str(target))
    return target


def alter_info_codec(root: Path, key: str, codec: str = "h264") -> None:
    """info.json claims another codec than the files hold (a converter that copied info from elsewhere)."""
    edit_info(root, lambda info: info["features"][key]["info"].__setitem__("video.codec", codec))


def alter_tasks_in_index_column(root: Path) -> None:
    """Rewrite meta/tasks.parquet with the task strings in a plain ``__index_level_0__`` column and no
    pandas metadata (what a pyarrow-only writer leaves): pandas then reads a 0..n-1 index."""
    path = Path(root) / "meta" / "tasks.parquet"
    df = pq.read_table(path).to_pandas()
    table = pa.table({"__index_level_0__": pa.array([str(t) for t in df.index]),
                      "task_index": pa.array(df["task_index"].to_numpy())})
    pq.write_table(table.replace_schema_metadata(None), path)


def alter_wall_clock_timestamps(root: Path, jitter: tuple[float, float] = (0.050, 0.067), seed: int = 0) -> None:
    """Replace each episode's ``timestamp`` (frame_index / fps) by a wall clock: seconds since the episode's
    first frame, with the time between frames drawn uniformly from ``jitter`` (LeRobot's writer has no
    way to take them, recorders made by others write them). The videos keep one frame per row."""
    rng = np.random.default_rng(seed)
    for path in sorted((Path(root) / "data").glob("**/*.parquet")):
        table = pq.read_table(path)
        episodes = table["episode_index"].to_numpy()
        ts = np.zeros(len(episodes))
        for e in np.unique(episodes):
            rows = np.nonzero(episodes == e)[0]
            ts[rows[1:]] = np.cumsum(rng.uniform(*jitter, size=len(rows) - 1))
        column = table.schema.get_field_index("timestamp")
        table = table.set_column(column, table.schema.field(column), pa.array(ts.astype(np.float32)))
        pq.write_table(table, path)


def alter_declare_channel_first(root: Path, keys: list[str] | None = None) -> None:
    """Declare cameras channel-first, ``shape: [3, H, W]`` with ``names: [channel, height, width]``, as some
    recorders do (LeRobot 0.4.2 reads that correctly: only a last name ``channel(s)`` means channel-last)."""
    def declare(info: dict) -> None:
        for key, ft in info["features"].items():
            if ft.get("dtype") in ("video", "image") and (keys is None or key in keys):
                h, w, c = ft["shape"]
                ft["shape"], ft["names"] = [c, h, w], ["channel", "height", "width"]
    edit_info(root, declare)


def write_contract(path: Path, **changes) -> Path:
    """contracts/so101_arm.yaml with ``changes`` applied (``keys`` merged)."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "contracts" / "so101_arm.yaml").read_text())
    raw["keys"].update(changes.pop("keys", {}))
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


CODECS = {"av1": "libsvtav1", "h264": "libx264", "mpeg4": "mpeg4"}  # what real writers use (mpeg4: OpenCV's mp4v)


def alter_reencode_videos(root: Path, codec: str) -> None:
    """Re-encode every video file with ``codec`` (one frame per input frame, same rate and timestamps) and
    say so in info.json, as a recorder that writes h264 or OpenCV's mp4v does."""
    import av

    for path in sorted((Path(root) / "videos").glob("**/*.mp4")):
        with av.open(str(path)) as src:
            stream = src.streams.video[0]
            rate = stream.average_rate
            frames = [f.to_ndarray(format="rgb24") for f in src.decode(stream)]
        tmp = path.with_suffix(".tmp.mp4")
        with av.open(str(tmp), "w") as dst:
            out = dst.add_stream(CODECS[codec], rate=rate)
            out.height, out.width, out.pix_fmt = frames[0].shape[0], frames[0].shape[1], "yuv420p"
            if codec != "av1":
                out.options = {"qscale": "2"} if codec == "mpeg4" else {"crf": "12"}
            for image in frames:
                dst.mux(out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            dst.mux(out.encode())
        tmp.replace(path)
    name = {"av1": "av1", "h264": "h264", "mpeg4": "mpeg4"}[codec]
    edit_info(root, lambda info: [ft["info"].__setitem__("video.codec", name) for ft in info["features"].values()
                                  if ft.get("dtype") == "video" and isinstance(ft.get("info"), dict)])


def alter_stray_files(root: Path) -> list[Path]:
    """What a copied or hand-edited set carries: .DS_Store files, a json beside the parquet files, an empty
    extra chunk directory."""
    root = Path(root)
    data = sorted((root / "data").glob("chunk-*"))[0]
    made = [root / ".DS_Store", root / "data" / ".DS_Store", data / "notes.json", root / "meta" / ".DS_Store"]
    for path in made:
        path.write_text("{}" if path.suffix == ".json" else "junk")
    extra = root / "data" / f"chunk-{len(list((root / 'data').glob('chunk-*'))):03d}"
    extra.mkdir()
    return [*made, extra]


def alter_drop_columns(root: Path, columns: tuple[str, ...] = ("index", "task_index")) -> None:
    """Data parquet files without ``columns`` (a recorder that never wrote them)."""
    for path in sorted((Path(root) / "data").glob("**/*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.drop([c for c in columns if c in table.column_names]), path)


def alter_drop_stats(root: Path) -> None:
    """No meta/stats.json and no per-episode stats columns in meta/episodes (a recorder that computes none)."""
    (Path(root) / "meta" / "stats.json").unlink(missing_ok=True)
    for path in sorted((Path(root) / "meta" / "episodes").glob("**/*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table.drop([c for c in table.column_names if c.startswith("stats/")]), path)
