"""The video checks on small files written here with PyAV (16x16 MPEG-4, a few dozen frames): probing
a file (its end decodes, a cut file covers less), where each episode's file is, files found under
another directory and the fix named, coverage and codec findings, and black or frozen camera
streams. tests/e2e/test_realdata.py runs them through `validate` on LeRobot-written datasets."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from vla_pipeline.data.contract import Contract
from vla_pipeline.validate.findings import Finding, Findings, View
from vla_pipeline.validate.videos import (
    DEFAULT_VIDEO_PATH,
    EpisodeVideo,
    VideoProbe,
    check_camera_streams,
    check_videos,
    find_moved_files,
    list_episode_videos,
    probe_video,
)

FPS = 10
FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def moving(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(40, 255, (16, 16, 3), dtype=np.uint8) for _ in range(n)]


def still(n: int, level: int = 128) -> list[np.ndarray]:
    picture = np.full((16, 16, 3), level, dtype=np.uint8)
    picture[4:12, 4:12] = 255 - level  # a picture, not a flat colour
    return [picture] * n


# ----------------------------------------------------------------------------- probing a file
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # the frame count from the header, or from its duration
def test_probe_reads_duration_frames_and_codec(tmp_path, suffix) -> None:
    path = write_video(tmp_path / f"v{suffix}", moving(30))
    assert probe_video(path) == VideoProbe(3.0, 30, "mpeg4")
    assert probe_video(path, decode_samples=5) == probe_video(path, decode_samples=40) == VideoProbe(3.0, 30, "mpeg4")


def test_a_cut_file_covers_only_what_decodes(tmp_path) -> None:
    path = write_video(tmp_path / "v.mkv", moving(30))  # Matroska keeps its header when cut
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    probe = probe_video(path)
    assert probe.n_frames == 30 and probe.codec == "mpeg4"  # what the header claims
    assert 0.5 < probe.duration < 2.5  # what decodes
    decoded = round(probe.duration * FPS)
    with pytest.raises(ValueError, match=rf"^decoded {decoded} of the first 30 frames$"):
        probe_video(path, decode_samples=30)
    assert probe_video(path, decode_samples=decoded) == probe


def test_a_file_without_a_decodable_end_is_refused(tmp_path) -> None:
    path = write_video(tmp_path / "v.mp4", moving(5))
    path.write_bytes(path.read_bytes()[:200])  # the index (moov) is at the end: nothing can be read
    with pytest.raises(av.FFmpegError):
        probe_video(path)


# ----------------------------------------------------------------------------- where the files are
def contract(cameras: dict[str, str] | None = None) -> Contract:
    return Contract(name="arm", action_key="action", state_key="observation.state",
                    cameras=cameras if cameras is not None else {"front": FRONT}, joints=("a",), ranges={}, fps=FPS)


def episodes(lengths: list[int], keys: tuple[str, ...] = (FRONT,), files: list[int] | None = None) -> dict:
    """meta/episodes of episodes packed into video files (``files[e]``: the file of episode e, default 0)."""
    files = files or [0] * len(lengths)
    meta = {"episode_index": np.arange(len(lengths)), "length": np.array(lengths)}
    for key in keys:
        starts, ends, offset = [], [], {}
        for n, f in zip(lengths, files, strict=True):
            starts.append(offset.get(f, 0.0))
            offset[f] = starts[-1] + n / FPS
            ends.append(offset[f])
        meta[f"videos/{key}/chunk_index"] = np.zeros(len(lengths), dtype=int)
        meta[f"videos/{key}/file_index"] = np.array(files)
        meta[f"videos/{key}/from_timestamp"] = np.array(starts)
        meta[f"videos/{key}/to_timestamp"] = np.array(ends)
    return meta


def info(**changes) -> dict:
    video = {"dtype": "video", "shape": [16, 16, 3], "info": {"video.codec": "mpeg4"}}
    return {"codebase_version": "v3.0", "fps": FPS, "features": {FRONT: dict(video), WRIST: dict(video)}, **changes}


def view(root: Path, lengths: list[int], cameras: dict[str, str] | None = None, **kw) -> View:
    c = contract(cameras)
    return View(root, kw.pop("info", None) or info(), c, episodes=episodes(lengths, tuple(c.cameras.values()),
                                                                        kw.pop("files", None)), **kw)


def test_each_camera_and_episode_has_the_file_info_json_names(tmp_path) -> None:
    v = view(tmp_path, [3, 4, 2], {"front": FRONT, "wrist": WRIST}, files=[0, 0, 1])
    out = Findings()
    assert list_episode_videos(v, out) == [
        EpisodeVideo("front", FRONT, 0, 0, Path(f"videos/{FRONT}/chunk-000/file-000.mp4")),
        EpisodeVideo("front", FRONT, 1, 1, Path(f"videos/{FRONT}/chunk-000/file-000.mp4")),
        EpisodeVideo("front", FRONT, 2, 2, Path(f"videos/{FRONT}/chunk-000/file-001.mp4")),
        EpisodeVideo("wrist", WRIST, 0, 0, Path(f"videos/{WRIST}/chunk-000/file-000.mp4")),
        EpisodeVideo("wrist", WRIST, 1, 1, Path(f"videos/{WRIST}/chunk-000/file-000.mp4")),
        EpisodeVideo("wrist", WRIST, 2, 2, Path(f"videos/{WRIST}/chunk-000/file-001.mp4"))]
    assert out.errors == [] and DEFAULT_VIDEO_PATH.startswith("videos/{video_key}/")
    v.info["video_path"] = "cams/{video_key}/{chunk_index}_{file_index}.mkv"
    v.episodes["episode_index"] = np.array([5, 6, 7])
    assert [(e.episode, e.row, str(e.path)) for e in list_episode_videos(v, out)][:3] == [
        (5, 0, f"cams/{FRONT}/0_0.mkv"), (6, 1, f"cams/{FRONT}/0_0.mkv"), (7, 2, f"cams/{FRONT}/0_1.mkv")]


def test_a_camera_without_video_columns_is_an_error(tmp_path) -> None:
    v = view(tmp_path, [3], {"front": FRONT})
    v.contract = contract({"top": "observation.images.top", "front": FRONT})
    out = Findings()
    assert [e.key for e in list_episode_videos(v, out)] == [FRONT]
    assert out.errors == [Finding("videos", "meta/episodes has no video columns for camera 'top' "
                                            "('observation.images.top'); is it stored as video? (the pipeline reads "
                                            "cameras from video files)", key="observation.images.top")]
    del v.episodes[f"videos/{FRONT}/chunk_index"]  # both columns are needed
    assert list_episode_videos(v, Findings()) == []


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_moved_files_are_found_by_their_name_from_the_camera_directory_down(tmp_path) -> None:
    keys = [FRONT, WRIST]
    for key in keys:
        _touch(tmp_path / "video" / key / "chunk-000" / "file-000.mp4")
    _touch(tmp_path / "a" / WRIST / "chunk-000" / "file-001.mp4")
    _touch(tmp_path / "b" / WRIST / "chunk-000" / "file-001.mp4")  # two candidates: not a move
    _touch(tmp_path / "other" / "chunk-000" / "file-002.mp4")
    missing = [Path(f"videos/{FRONT}/chunk-000/file-000.mp4"), Path(f"videos/{WRIST}/chunk-000/file-000.mp4"),
               Path(f"videos/{WRIST}/chunk-000/file-001.mp4"), Path("x/chunk-000/file-002.mp4"),
               Path(f"videos/{FRONT}/chunk-000/file-009.mp4")]
    assert find_moved_files(tmp_path, missing, keys) == {
        missing[0]: Path(f"video/{FRONT}/chunk-000/file-000.mp4"),
        missing[1]: Path(f"video/{WRIST}/chunk-000/file-000.mp4"),
        missing[3]: Path("other/chunk-000/file-002.mp4"),  # no camera directory: from the second part down
    }
    assert find_moved_files(tmp_path, [Path(f"video/{FRONT}/chunk-000/file-000.mp4")], keys) == {}  # it is there


def _layout(root: Path, top: str, lengths: list[int], files: int = 1) -> None:
    for f in range(files):
        _touch(root / top / FRONT / "chunk-000" / f"file-{f:03d}.mp4")


def test_videos_under_another_directory_are_one_error_with_the_move(tmp_path) -> None:
    _layout(tmp_path, "video", [3, 4], files=2)
    v = view(tmp_path, [3, 4], files=[0, 1])
    out = Findings()
    check_videos(v, out)
    template = DEFAULT_VIDEO_PATH
    assert out.errors == [Finding(
        "videos", f"2 video files that meta/info.json's video_path '{template}' names are not there, but files with "
                  f"the same names are in another directory (e.g. videos/{FRONT}/chunk-000/file-000.mp4 is at "
                  f"video/{FRONT}/chunk-000/file-000.mp4): move them where info.json says (`mv {tmp_path / 'video'} "
                  f"{tmp_path / 'videos'}`), or set video_path in meta/info.json to "
                  f"'video/{{video_key}}/chunk-{{chunk_index:03d}}/file-{{file_index:03d}}.mp4'; then run validate "
                  f"again", key="video_path", value=f"video/{FRONT}/chunk-000/file-000.mp4",
        expected=f"videos/{FRONT}/chunk-000/file-000.mp4")]
    assert v.probes == {}  # moved files are not probed


def test_moved_videos_into_an_existing_directory(tmp_path) -> None:
    _layout(tmp_path, "video", [3])
    (tmp_path / "videos").mkdir()
    v = view(tmp_path, [3])
    out = Findings()
    check_videos(v, out)
    assert out.errors[0].message.endswith(
        ": move them from video/ into videos/ (which exists), or set video_path in meta/info.json to "
        "'video/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'; then run validate again")


def test_a_template_without_a_directory_above_the_cameras(tmp_path) -> None:
    _layout(tmp_path, "clips", [3])
    v = view(tmp_path, [3], info=info(video_path="{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"))
    out = Findings()
    check_videos(v, out)
    assert out.errors[0].message.endswith(": move them from clips/ into ./ (which exists); then run validate again")


def test_videos_moved_to_different_places_get_the_generic_fix(tmp_path) -> None:
    _touch(tmp_path / "a" / FRONT / "chunk-000" / "file-000.mp4")
    _touch(tmp_path / "b" / "c" / FRONT / "chunk-000" / "file-001.mp4")
    v = view(tmp_path, [3, 4], files=[0, 1])
    out = Findings()
    check_videos(v, out)
    assert out.errors[0].message.startswith("2 video files that")
    assert out.errors[0].message.endswith(": move them where video_path says, or correct video_path; then run validate "
                                          "again")


def test_a_template_without_a_camera_directory(tmp_path) -> None:
    flat = "videos/{video_key}_{chunk_index:03d}_{file_index:03d}.mp4"
    _touch(tmp_path / "video" / f"{FRONT}_000_000.mp4")
    v = view(tmp_path, [3], info=info(video_path=flat))
    out = Findings()
    check_videos(v, out)
    assert out.errors[0].message.endswith(
        f"(e.g. videos/{FRONT}_000_000.mp4 is at video/{FRONT}_000_000.mp4): move them where info.json says (`mv "
        f"{tmp_path / 'video'} {tmp_path / 'videos'}`), or set video_path in meta/info.json to "
        f"'video/{{video_key}}_{{chunk_index:03d}}_{{file_index:03d}}.mp4'; then run validate again")
    assert find_moved_files(tmp_path, [Path("videos/x.mp4")], []) == {}
    _touch(tmp_path / "elsewhere" / "x.mp4")
    assert find_moved_files(tmp_path, [Path("videos/x.mp4")], []) == {Path("videos/x.mp4"): Path("elsewhere/x.mp4")}


def test_a_moved_file_at_the_top_of_the_dataset(tmp_path) -> None:
    _touch(tmp_path / FRONT / "chunk-000" / "file-000.mp4")
    v = view(tmp_path, [3])
    out = Findings()
    check_videos(v, out)
    assert f"(`mv {tmp_path / '.'} {tmp_path / 'videos'}`), or set video_path in meta/info.json to './" in (
        out.errors[0].message)


# ----------------------------------------------------------------------------- coverage and codecs
def _probed(tmp_path: Path, lengths: list[int], probe, files: list[int] | None = None, **kw) -> tuple[View, Findings]:
    """check_videos on files that exist, with their probe given (the probe itself is tested above)."""
    v = view(tmp_path, lengths, files=files, **kw)
    for ev in list_episode_videos(v, Findings()):
        _touch(tmp_path / ev.path)
        v.probes[tmp_path / ev.path] = probe
    out = Findings()
    check_videos(v, out)
    return v, out


def test_files_that_cover_their_episodes_pass(tmp_path) -> None:
    _, out = _probed(tmp_path, [3, 4], VideoProbe(0.7, 7, "mpeg4"))
    assert out.errors == [] and out.warnings == []
    # the end may fall short by the timestamp tolerance plus one frame
    _, out = _probed(tmp_path, [3, 4], VideoProbe(0.7 - 0.1 - 0.0009, 7, "mpeg4"))
    assert out.errors == []


def test_a_file_that_ends_before_its_episode_is_truncated(tmp_path) -> None:
    _, out = _probed(tmp_path, [3, 4], VideoProbe(0.7 - 0.1 - 0.0011, 7, "mpeg4"))
    assert out.errors == [Finding(
        "videos", f"episode 1: videos/{FRONT}/chunk-000/file-000.mp4 (front) covers 0.599s / 7 frames but the episode "
                  f"needs up to 0.700s and 4 frames; the video is truncated: re-encode it or exclude the episode",
        episode=1, key=FRONT, value=pytest.approx(0.5989), expected=pytest.approx(0.7))]
    _, out = _probed(tmp_path, [3, 4], VideoProbe(0.7, 3, "mpeg4"), files=[0, 1])  # 4 frames needed, 3 in the file
    assert [e.episode for e in out.errors] == [1]
    assert "covers 0.700s / 3 frames but the episode needs up to 0.400s and 4 frames" in out.errors[0].message


def test_other_files_are_checked_after_a_moved_one(tmp_path) -> None:
    _touch(tmp_path / "video" / FRONT / "chunk-000" / "file-000.mp4")  # episode 0's file moved, episode 1's lost
    v = view(tmp_path, [3, 4], files=[0, 1])
    v.contract = contract({"front": FRONT, "top": "observation.images.top"})  # and a camera without video columns
    out = Findings()
    check_videos(v, out)
    assert [(e.check, e.key, e.episode) for e in out.errors] == [
        ("videos", "observation.images.top", None), ("videos", "video_path", None), ("videos", FRONT, 1)]


def test_the_configured_frames_are_decoded(tmp_path) -> None:
    path = write_video(tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mkv", moving(30))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    v = view(tmp_path, [30], info=info(video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mkv"),
             decode_samples=30)
    out = Findings()
    check_videos(v, out)
    assert [(e.episode, "cannot be read (decoded " in e.message) for e in out.errors] == [(0, True)]


def test_absent_and_unreadable_files_are_named_per_episode(tmp_path) -> None:
    v = view(tmp_path, [3, 4], files=[0, 1])
    _touch(tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mp4")  # an empty file: PyAV cannot open it
    out = Findings()
    check_videos(v, out)
    assert re.fullmatch(rf"episode 0: video file videos/{FRONT}/chunk-000/file-000.mp4 cannot be read \(.+\); it is "
                        rf"truncated or corrupt: re-encode it or exclude the episode", out.errors[0].message)
    assert (out.errors[0].check, out.errors[0].episode, out.errors[0].key) == ("videos", 0, FRONT)
    assert out.errors[1] == Finding("videos", f"episode 1: video file videos/{FRONT}/chunk-000/file-001.mp4 (front) "
                                              f"does not exist; restore it or exclude the episode", episode=1, key=FRONT)
    assert len(out.errors) == 2
    assert isinstance(v.probes[tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mp4"], Exception)
    assert v.probes[tmp_path / "videos" / FRONT / "chunk-000" / "file-001.mp4"] is None


def test_each_file_is_probed_once(tmp_path) -> None:
    path = write_video(tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mp4", moving(7))
    v = view(tmp_path, [3, 4])
    out = Findings()
    check_videos(v, out)
    assert out.errors == [] and v.probes == {path: VideoProbe(0.7, 7, "mpeg4")}
    v.probes[path] = VideoProbe(0.0, 0, "mpeg4")  # a second run uses what was probed
    check_videos(v, out)
    assert len(out.errors) == 2


def test_a_codec_other_than_info_json_claims_warns(tmp_path) -> None:
    _, out = _probed(tmp_path, [3], VideoProbe(0.3, 3, "av1"))
    assert out.warnings == [Finding(
        "videos", f"'{FRONT}': meta/info.json says codec 'mpeg4', the files hold ['av1']; the pipeline decodes what the "
                  f"files hold (PyAV), but tools that trust info.json may not: correct "
                  f"features.{FRONT}.info.video.codec", key=FRONT, value=["av1"], expected="mpeg4")]
    unclaimed = info()
    unclaimed["features"][FRONT]["info"] = None
    assert _probed(tmp_path / "b", [3], VideoProbe(0.3, 3, "av1"), info=unclaimed)[1].warnings == []


# ----------------------------------------------------------------------------- camera streams
def _streams(tmp_path: Path, episode_frames: list[list[np.ndarray]], **kw) -> list[Finding]:
    """check_camera_streams on one file holding the episodes one after the other."""
    path = write_video(tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mp4", sum(episode_frames, []))
    v = view(tmp_path, [len(f) for f in episode_frames], **kw)
    v.probes[path] = probe_video(path)
    out = Findings()
    check_camera_streams(v, out)
    assert out.errors == []
    return out.warnings


def test_black_and_frozen_streams_warn_per_episode(tmp_path) -> None:
    dark = [np.full((16, 16, 3), 10, dtype=np.uint8)] * 6
    warnings = _streams(tmp_path, [moving(5), dark, still(7), moving(4, seed=1)])
    where = f"camera 'front' (videos/{FRONT}/chunk-000/file-000.mp4)"
    assert warnings == [
        Finding("camera_streams", f"episode 1: {where} is all black at its first, middle and last frame: a covered lens "
                                  f"or a camera that never started; exclude the episode if so", episode=1, key=FRONT),
        Finding("camera_streams", f"episode 2: {where} shows the same picture at its first, middle and last frame: a "
                                  f"frozen stream; exclude the episode if the camera stalled", episode=2, key=FRONT)]


def test_a_stream_that_moves_once_in_the_middle_is_not_frozen(tmp_path) -> None:
    frames = still(3) + still(3, level=60) + still(3)  # first and last the same, the middle differs
    assert _streams(tmp_path, [moving(4), frames]) == []
    assert _streams(tmp_path / "b", [moving(4), still(5)[:1] + moving(4)]) == []  # the end differs


def test_the_last_frame_of_an_episode_is_looked_at(tmp_path) -> None:
    assert _streams(tmp_path, [still(6) + moving(1), moving(3)]) == []  # only the last frame moves: not frozen
    assert _streams(tmp_path / "b", [moving(1) + still(6), moving(3)]) == []  # only the first differs: not frozen


def test_frozen_needs_three_frames_and_dark_is_below_the_black_level(tmp_path) -> None:
    assert _streams(tmp_path, [moving(4), still(2)]) == []
    assert [w.episode for w in _streams(tmp_path / "c", [still(3), moving(4)])] == [0]
    level24 = [np.full((16, 16, 3), 24, dtype=np.uint8)] * 4  # decodes to luma 24: not below the black level
    assert ["all black" in w.message for w in _streams(tmp_path / "d", [moving(4), level24])] == [False]
    grey = [np.full((16, 16, 3), 40, dtype=np.uint8)] * 4  # brightest luma above 24: not black, but frozen
    (warning,) = _streams(tmp_path / "b", [moving(4), grey])
    assert warning.episode == 1 and "shows the same picture" in warning.message


def test_excluded_episodes_and_unprobed_files_are_not_looked_at(tmp_path) -> None:
    dark = [np.zeros((16, 16, 3), dtype=np.uint8)] * 5
    assert [w.episode for w in _streams(tmp_path, [dark, dark, moving(3)], exclude_episodes=(0,))] == [1]
    v = view(tmp_path, [5, 5, 3])  # no probe recorded (the videos check skipped or failed the file)
    out = Findings()
    check_camera_streams(v, out)
    assert out.warnings == []


def test_a_file_that_fails_to_decode_leaves_the_others_checked(tmp_path) -> None:
    broken = _touch(tmp_path / "videos" / FRONT / "chunk-000" / "file-000.mp4")
    broken.write_bytes(b"not a video at all")
    good = write_video(tmp_path / "videos" / FRONT / "chunk-000" / "file-001.mp4", still(4))
    v = view(tmp_path, [3, 4], files=[0, 1])
    v.contract = contract({"front": FRONT, "top": "observation.images.top"})  # no video columns: skipped
    v.probes[broken] = VideoProbe(0.3, 3, "mpeg4")  # what an earlier probe said
    v.probes[good] = probe_video(good)
    out = Findings()
    check_camera_streams(v, out)
    assert [(w.episode, "frozen" in w.message) for w in out.warnings] == [(1, True)] and out.errors == []
