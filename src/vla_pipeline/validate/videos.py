"""The validator's video checks: the video file of every episode and contract camera exists, decodes
and covers the episode; files that exist under another directory than info.json's ``video_path``
template says are named once, with the fix; info.json's codec is compared with the files'; camera
streams that are all black or frozen in an episode are warned about.

Only the contract's cameras are opened (unused cameras may be absent: nothing reads them)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_pipeline.data.features import (
    FeatureError,
    camera_storage,
    declared_codec,
    declared_shape,
    read_camera,
)
from vla_pipeline.validate.findings import Findings, View

DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STREAM_SAMPLES = (0.0, 0.5, 1.0)  # where in each episode camera_streams looks: first, middle, last frame
BLACK_LEVEL = 24  # a frame whose brightest pixel (0..255 luma) is below this is black
FROZEN_LEVEL = 1.0  # mean |luma difference| below which two frames are the same picture


@dataclass(frozen=True)
class VideoProbe:
    duration: float  # covered seconds: up to the end of the last frame that decodes
    n_frames: int
    codec: str


def probe_video(path: Path, decode_samples: int = 0) -> VideoProbe:
    """Duration, frame count and codec of a video file.

    The duration is the end of the last frame that actually decodes (one seek near the end of
    the file), not only what the container's header claims: a file cut short keeps its header.
    ``decode_samples`` > 0 also decodes that many frames from the start.
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        header = float(stream.duration * stream.time_base) if stream.duration else float(container.duration or 0) / 1e6
        fps = float(stream.average_rate or 0) or 30.0
        frames = int(stream.frames or round(header * fps))
        codec = stream.codec_context.codec.canonical_name
        if decode_samples:
            decoded = sum(1 for _ in zip(range(decode_samples), container.decode(stream), strict=False))
            if decoded < min(decode_samples, frames):
                raise ValueError(f"decoded {decoded} of the first {decode_samples} frames")
        container.seek(int(max(header - 1.0, 0.0) / stream.time_base), stream=stream, backward=True)
        last = None
        try:
            for frame in container.decode(stream):
                last = frame.time
        except av.FFmpegError:
            pass  # a truncated file stops decoding early: what decoded is what is covered
    if last is None:
        raise ValueError("no frame decodes near the end of the file")
    return VideoProbe(min(header, last + 1.0 / fps), frames, codec)


@dataclass(frozen=True)
class EpisodeVideo:
    camera: str
    key: str
    row: int  # row in meta/episodes
    episode: int
    path: Path  # relative to the dataset root


def list_episode_videos(v: View, out: Findings) -> list[EpisodeVideo]:
    """The video file of each (contract camera stored as video, episode), as info.json's ``video_path`` names
    it (a camera stored as images has its frames in the data files: :func:`check_images`)."""
    meta, template = v.episodes, v.info.get("video_path") or DEFAULT_VIDEO_PATH
    found = []
    for camera, key in v.contract.cameras.items():
        if camera_storage(v.info, key) == "image":
            continue
        cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index")]
        if not all(c in meta for c in cols):
            out.error("videos", f"meta/episodes has no video columns for camera '{camera}' ('{key}'); is it stored "
                      f"as video? (the pipeline reads cameras from video files)", key=key)
            continue
        for i, e in enumerate(meta["episode_index"].tolist()):
            rel = Path(template.format(video_key=key, chunk_index=int(meta[cols[0]][i]), file_index=int(meta[cols[1]][i])))
            found.append(EpisodeVideo(camera, key, i, e, rel))
    return found


def check_camera_features(v: View, out: Findings) -> None:
    """Each contract camera's declaration is one LeRobot reads as the frames are (``data.features``): three
    positive sizes, names that say the layout, 3 channels; else the declaration and LeRobot's reading."""
    for key in v.contract.cameras.values():
        try:
            read_camera(v.info, key)
        except FeatureError as e:
            out.error("camera_features", str(e), key=key, value=declared_shape(v.info, key))


def check_images(v: View, out: Findings) -> None:
    """A contract camera stored as images (dtype ``image``, frames encoded in the data files, as LeRobot writes
    them without videos) has its column in every data file; the dry run decodes a sample of them."""
    for camera, key in v.contract.cameras.items():
        if camera_storage(v.info, key) == "image" and key not in v.frames.columns:
            out.error("images", f"camera '{camera}' ('{key}') is stored as images (dtype 'image' in meta/info.json) "
                      f"but the data parquet files have no '{key}' column; re-export the dataset with its images, "
                      f"or map another camera in the contract", key=key)


def find_moved_files(root: Path, missing: list[Path], keys: list[str]) -> dict[Path, Path]:
    """missing relative path -> the one file elsewhere under ``root`` with the same relative name from
    its camera directory down (``video/image/chunk-000/file-000.mp4`` for
    ``videos/image/chunk-000/file-000.mp4``)."""
    suffixes = {p.suffix for p in missing}
    index = defaultdict(list)
    for path in (p for s in suffixes for p in Path(root).rglob(f"*{s}")):
        rel = path.relative_to(root)
        for k in range(1, len(rel.parts) + 1):
            index[rel.parts[-k:]].append(rel)
    moved = {}
    for rel in missing:
        anchor = next((i for i, part in enumerate(rel.parts) if part in keys), 1)  # from the camera dir down
        hits = index.get(rel.parts[anchor:], [])
        if len(hits) == 1 and hits[0] != rel:
            moved[rel] = hits[0]
    return moved


def _report_moved(v: View, out: Findings, moved: dict[Path, Path], template: str) -> None:
    expected, found = next(iter(moved.items()))
    tail = len(expected.parts) - next((i for i, part in enumerate(expected.parts) if part in v.contract.cameras.values()), 1)
    prefixes = {(m.parts[: len(m.parts) - tail], f.parts[: len(f.parts) - tail]) for m, f in moved.items()}
    fix = ""
    if len(prefixes) == 1:
        (want, have), = prefixes
        want_dir, have_dir = Path(*want) if want else Path("."), Path(*have) if have else Path(".")
        fix = (f"move them where info.json says (`mv {v.root / have_dir} {v.root / want_dir}`"
               if not (v.root / want_dir).exists() else f"move them from {have_dir}/ into {want_dir}/ (which exists")
        if template.startswith(f"{want_dir.as_posix()}/"):
            fix += f"), or set video_path in meta/info.json to '{have_dir.as_posix()}{template[len(want_dir.as_posix()):]}'"
        else:
            fix += ")"
    out.error("videos", f"{len(moved)} video files that meta/info.json's video_path '{template}' names are not "
              f"there, but files with the same names are in another directory (e.g. {expected} is at {found}): "
              f"{fix or 'move them where video_path says, or correct video_path'}; then run validate again",
              key="video_path", value=str(found), expected=str(expected))


def check_videos(v: View, out: Findings) -> None:
    """Each episode's frames are covered by its video file's duration and frame count; info.json's codec
    is the files' codec."""
    videos = list_episode_videos(v, out)
    absent = sorted({ev.path for ev in videos if not (v.root / ev.path).is_file()})
    moved = find_moved_files(v.root, absent, list(v.contract.cameras.values())) if absent else {}
    if moved:
        _report_moved(v, out, moved, v.info.get("video_path") or DEFAULT_VIDEO_PATH)
    codecs = defaultdict(set)
    for ev in videos:
        if ev.path in moved:
            continue
        path = v.root / ev.path
        if path not in v.probes:
            try:
                v.probes[path] = probe_video(path, v.decode_samples) if path.is_file() else None
            except Exception as exc:  # noqa: BLE001  (any unreadable container is a finding)
                v.probes[path] = exc
        found = v.probes[path]
        if found is None:
            out.error("videos", f"episode {ev.episode}: video file {ev.path} ({ev.camera}) does not exist; restore "
                      f"it or exclude the episode", episode=ev.episode, key=ev.key)
            continue
        if isinstance(found, Exception):
            out.error("videos", f"episode {ev.episode}: video file {ev.path} cannot be read ({found}); it is "
                      f"truncated or corrupt: re-encode it or exclude the episode", episode=ev.episode, key=ev.key)
            continue
        codecs[ev.key].add(found.codec)
        span_end = float(v.episodes[f"videos/{ev.key}/to_timestamp"][ev.row])
        length = int(v.episodes["length"][ev.row])
        if span_end > found.duration + v.contract.timestamp_tolerance_s + v.dt or length > found.n_frames:
            out.error("videos", f"episode {ev.episode}: {ev.path} ({ev.camera}) covers {found.duration:.3f}s / "
                      f"{found.n_frames} frames but the episode needs up to {span_end:.3f}s and {length} frames; "
                      f"the video is truncated: re-encode it or exclude the episode", episode=ev.episode,
                      key=ev.key, value=found.duration, expected=span_end)
    _check_codecs(v, out, codecs)


def _check_codecs(v: View, out: Findings, codecs: dict[str, set[str]]) -> None:
    for key, found in codecs.items():
        claimed = declared_codec(v.info, key)
        if claimed and found != {claimed}:
            out.warn("videos", f"'{key}': meta/info.json says codec '{claimed}', the files hold {sorted(found)}; "
                     f"the pipeline decodes what the files hold (PyAV), but tools that trust info.json may not: "
                     f"correct features.{key}.info.video.codec", key=key, value=sorted(found), expected=claimed)


def grab_frames(container, stream, times: list[float], fps: float, fmt: str = "gray") -> list[np.ndarray | None]:
    """The frame shown at each of ``times`` (seconds in the file) as an array in PyAV's ``fmt`` (``gray``: the
    luma plane; ``rgb24``: H x W x 3), one seek each; None where nothing decodes."""
    frames = []
    for t in times:
        container.seek(max(int(t / stream.time_base), 0), stream=stream, backward=True)
        picked = None
        for frame in container.decode(stream):
            picked = frame
            if frame.time is not None and frame.time >= t - 0.5 / fps:
                break
        frames.append(None if picked is None else picked.to_ndarray(format=fmt))
    return frames


def check_camera_streams(v: View, out: Findings) -> None:
    """Warn about a camera stream that is all black, or frozen on one picture, in an episode (looked at
    its first, middle and last frame)."""
    import av

    by_file = defaultdict(list)
    for ev in list_episode_videos(v, Findings()):
        if isinstance(v.probes.get(v.root / ev.path), VideoProbe) and ev.episode not in v.exclude_episodes:
            by_file[ev.path].append(ev)
    for rel, videos in by_file.items():
        try:
            with av.open(str(v.root / rel)) as container:
                for ev in videos:
                    _check_stream(v, out, container, ev)
        except av.FFmpegError:
            continue  # a file that fails to decode in the middle: the videos check's business, not a warning's


def _check_stream(v: View, out: Findings, container, ev: EpisodeVideo) -> None:
    start, length = float(v.episodes[f"videos/{ev.key}/from_timestamp"][ev.row]), int(v.episodes["length"][ev.row])
    times = [start + round(s * (length - 1)) * v.dt for s in STREAM_SAMPLES]
    luma = [f.astype(np.float32) for f in grab_frames(container, container.streams.video[0], times, 1 / v.dt)
            if f is not None]
    if not luma:
        return
    where = f"episode {ev.episode}: camera '{ev.camera}' ({ev.path})"
    if max(float(f.max()) for f in luma) < BLACK_LEVEL:
        out.warn("camera_streams", f"{where} is all black at its first, middle and last frame: a covered lens or "
                 f"a camera that never started; exclude the episode if so", episode=ev.episode, key=ev.key)
    elif length > 2 and all(float(np.abs(f - luma[0]).mean()) < FROZEN_LEVEL for f in luma[1:]):
        out.warn("camera_streams", f"{where} shows the same picture at its first, middle and last frame: a frozen "
                 f"stream; exclude the episode if the camera stalled", episode=ev.episode, key=ev.key)
