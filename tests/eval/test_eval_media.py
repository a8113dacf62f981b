"""Evaluation media drawn fast without changing what they show: the episode videos' camera frames
are the frames LeRobot reads (one sequential decode instead of a seek per frame), each picture has
the camera frames in their boxes and the cursor at its frame, the one figure reused for every
episode draws each exactly as a fresh one would, and a video is the same bytes on every run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.errors import ValidationError
from vla_pipeline.eval.episode_media import load_media_frames, media_frame_shapes, read_item_frames
from vla_pipeline.eval.media import EpisodeFigure, decode_video_frames, prefetch, save_trace_plot, save_video
from vla_pipeline.eval.metrics import Predictions, compute_executed

from conftest import CONTRACT

JOINTS = ["a.pos", "b.pos", "c.pos", "d.pos"]


def _episode(length: int, seed: int, stride: int = 3, chunk: int = 5) -> Predictions:
    rng = np.random.default_rng(seed)
    frames = np.arange(0, length, stride)
    pred = rng.normal(size=(len(frames), chunk, len(JOINTS))).cumsum(1) * (seed + 1)
    pad = frames[:, None] + np.arange(chunk)[None] >= length
    return Predictions(pred, pred + 0.5, pad, pred[:, 0], np.zeros(len(frames), int), frames, ["t"] * len(frames))


@pytest.fixture(scope="module")
def dataset(demo_dataset, tiny_run):
    """LeRobot's dataset over the tiny run's held-out episodes (it decodes every item's frames itself)."""
    import json

    val = json.loads((tiny_run.norms / "split.json").read_text())["val"]
    return make_dataset(demo_dataset, load_contract(CONTRACT), val, 10)


def test_sequential_decode_gives_the_frames_lerobot_reads(dataset) -> None:
    episode = dataset.episodes[-1]
    theirs = list(read_item_frames(dataset, episode))  # LeRobot: a seek and a decode per item
    shapes = media_frame_shapes(dataset, episode)
    ours = list(load_media_frames(dataset, episode, shapes))  # at the stored size: no scaling
    assert len(ours) == len(theirs) >= 20
    for name in shapes:
        assert shapes[name] == theirs[0][name].shape[:2]
        assert all(np.array_equal(a[name], b[name]) for a, b in zip(ours, theirs, strict=True)), name
    scaled = next(load_media_frames(dataset, episode, {name: (16, 20) for name in shapes}))
    assert {f.shape for f in scaled.values()} == {(16, 20, 3)}


def test_decoding_past_the_end_of_a_video_is_a_clear_error(dataset) -> None:
    source = dataset.dataset
    episode = dataset.episodes[-1]
    key = next(iter(dataset.contract.cameras.values()))
    path = source.root / source.meta.get_video_file_path(episode, key)
    with pytest.raises(ValidationError, match="ends before .* check the dataset with `vla validate`"):
        list(decode_video_frames(path, np.arange(100_000) / source.meta.fps))


def test_an_undecodable_video_is_a_clear_error(tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    for path in (broken, tmp_path / "missing.mp4"):
        with pytest.raises(ValidationError, match="cannot be decoded .* `vla validate`"):
            list(decode_video_frames(path, np.arange(3) / 30))


def test_pictures_show_the_cameras_and_move_the_cursor() -> None:
    chunks = _episode(12, 0)
    executed = compute_executed(chunks, 3)[0]
    red, blue = np.zeros((48, 64, 3), np.uint8), np.zeros((60, 60, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    with EpisodeFigure({"front": (480, 640), "wrist": (60, 60)}, JOINTS, {}) as figure:
        figure.show(executed, chunks, "title")
        pictures = list(figure.render({"front": red, "wrist": blue} for _ in range(12)))
        boxes = figure.boxes
    assert len(pictures) == 12 and all(p.shape[0] % 2 == 0 and p.shape[1] % 2 == 0 for p in pictures)
    (fh, fw), (wh, ww) = (r.stop - r.start for r in boxes["front"]), (r.stop - r.start for r in boxes["wrist"])
    assert abs(fh / fw - 480 / 640) < 0.02 and wh == ww  # the cameras' aspect kept
    for name, color in (("front", (255, 0, 0)), ("wrist", (0, 0, 255))):
        rows, cols = boxes[name]
        assert (pictures[5][rows, cols, :3] == color).all()
    traces = np.s_[:, max(c.stop for _, c in boxes.values()):]
    assert not np.array_equal(pictures[0][traces], pictures[6][traces])  # cursor and chunk in use moved


def test_one_figure_draws_every_episode_as_a_fresh_figure_would(tmp_path) -> None:
    episodes = [_episode(30, seed) for seed in range(3)]
    with EpisodeFigure({}, JOINTS, {"a.pos": "deg"}) as figure:
        for i, chunks in enumerate(episodes):
            figure.show(compute_executed(chunks, 3)[0], chunks, f"episode {i}").save_traces(tmp_path / f"reused{i}.png")
    for i, chunks in enumerate(episodes):
        fresh = save_trace_plot(compute_executed(chunks, 3)[0], chunks, JOINTS, {"a.pos": "deg"}, f"episode {i}",
                                tmp_path / f"fresh{i}.png")
        assert fresh.read_bytes() == (tmp_path / f"reused{i}.png").read_bytes(), i


def test_a_video_is_the_same_bytes_on_every_run(dataset, tmp_path) -> None:
    episode = dataset.episodes[0]
    chunks = _episode(len(list(load_media_frames(dataset, episode, media_frame_shapes(dataset, episode)))), 1)
    executed = compute_executed(chunks, 3)[0]
    digests = []
    for run in range(2):
        with EpisodeFigure(media_frame_shapes(dataset, episode), JOINTS, {}) as figure:
            figure.show(executed, chunks, "title")
            frames = prefetch(load_media_frames(dataset, episode, figure.sizes))
            assert save_video(figure.render(frames), 30, tmp_path / f"{run}.mp4") == len(executed.frames)
        digests.append(hashlib.sha256((tmp_path / f"{run}.mp4").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValidationError("decoding failed")

    with pytest.raises(ValidationError, match="decoding failed"):
        list(prefetch(broken()))
    stopped = prefetch(iter(range(1000)), depth=2)
    assert next(stopped) == 0
    stopped.close()  # a consumer that stops early does not leave the producer blocked
