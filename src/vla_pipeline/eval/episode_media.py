"""The media of an evaluation: best, median and worst held-out episodes (by normalized action MSE),
their action traces and camera videos, with frames read from the dataset or the frame cache."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import OBS_IMAGES

from vla_pipeline.data.cached import FrameCacheSource
from vla_pipeline.data.contract import Contract
from vla_pipeline.data.features import read_camera, video_keys
from vla_pipeline.eval.media import EpisodeFigure, decode_video_frames, prefetch, save_video
from vla_pipeline.eval.metrics import (
    Predictions,
    compute_executed,
    pick_representative,
)
from vla_pipeline.eval.protocol import RANK_KEY


def compute_media_roles(table: list[dict]) -> dict[str, int]:
    """The episode behind each media file, by role (``best``, ``median``, ``worst``; protocol.json's
    ``media``). Files are named by role, so a new evaluation replaces them instead of adding to them; with
    fewer than three episodes the median is the best one and has no files of its own."""
    roles = pick_representative(table, RANK_KEY)
    return {role: ep for role, ep in roles.items() if role == "best" or ep != roles["best"]}


def save_media(tracker, out: Path, dataset, preds: Predictions, table: list[dict], contract: Contract, *,
               stride: int, videos: bool) -> None:
    """Per-joint traces (PNG) and a video (MP4) of the best, median and worst episode."""
    executed = compute_executed(preds, stride)
    by_episode = {r["episode_index"]: r for r in table}
    joints = list(contract.joints)
    roles = compute_media_roles(table)
    shapes = media_frame_shapes(dataset, roles["best"]) if videos else {}
    (out / "videos").mkdir(parents=True, exist_ok=True)  # a DVC output of the evaluate stage, empty without videos
    # one figure for every episode: drawn once per episode for its PNG and every frame of its video
    with tempfile.TemporaryDirectory() as tmp, EpisodeFigure(shapes, joints, contract.units) as figure:
        for which, ep in roles.items():
            chunks = preds.select(preds.episode == ep)
            title = (f"{which} episode {ep} ({by_episode[ep]['task']}): "
                     f"normalized action MSE {by_episode[ep][RANK_KEY]:.4g}")
            png = figure.show(executed[ep], chunks, title).save_traces(Path(tmp) / f"{which}.png")
            tracker.log_image(f"traces/{which}", png)
            if videos:
                mp4 = out / "videos" / f"{which}.mp4"
                save_video(figure.render(prefetch(load_media_frames(dataset, ep, figure.sizes))), contract.fps, mp4)
                tracker.log_video(f"videos/{which}", mp4, contract.fps)


def _episode_span(dataset, episode: int) -> tuple[int, int]:
    """(position of the episode's first frame in ``dataset``, its number of frames)."""
    bounds = dataset.dataset.meta.episodes[episode]
    start = int(bounds["dataset_from_index"])
    return dataset.frames.index(start), int(bounds["dataset_to_index"]) - start


def _decodes_videos(dataset) -> bool:
    """Whether ``load_media_frames`` decodes the videos itself: LeRobot's dataset with every camera a video
    (not the frame cache, not image features)."""
    if isinstance(dataset.dataset, FrameCacheSource):
        return False
    cameras = list(dataset.contract.cameras.values())
    return video_keys(dataset.dataset.meta.info, cameras) == cameras


def media_frame_shapes(dataset, episode: int) -> dict[str, tuple[int, int]]:
    """(h, w) of each camera's frames as ``load_media_frames`` reads them (policy camera names)."""
    cameras = dataset.contract.cameras
    if _decodes_videos(dataset):
        info = dataset.dataset.meta.info
        return {name: read_camera(info, key).hw for name, key in cameras.items()}
    item = dataset[_episode_span(dataset, episode)[0]]
    return {name: tuple(item[f"{OBS_IMAGES}.{name}"].shape[1:]) for name in cameras}


def read_item_frames(dataset, episode: int) -> Iterator[dict[str, np.ndarray]]:
    """Every frame of one episode as the dataset's items give it (LeRobot: a seek and a decode per item;
    or the frame cache), one {camera: (h, w, 3) uint8} at a time."""
    start, length = _episode_span(dataset, episode)
    for pos in range(start, start + length):
        item = dataset[pos]
        yield {name: (item[f"{OBS_IMAGES}.{name}"].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
               for name in dataset.contract.cameras}


def load_media_frames(dataset, episode: int, sizes: dict[str, tuple[int, int]]) -> Iterator[dict[str, np.ndarray]]:
    """Every frame of one episode, one {camera: (h, w, 3) uint8} at a time: decoded from the videos in one
    pass per camera and scaled by the decoder to ``sizes`` (camera -> (h, w); LeRobot's per-item decoding
    seeks and converts every frame at full size), else (frame cache, image features) read item by item."""
    if not _decodes_videos(dataset):
        yield from read_item_frames(dataset, episode)
        return
    _, length = _episode_span(dataset, episode)
    cameras = dataset.contract.cameras
    source = dataset.dataset
    bounds = source.meta.episodes[episode]
    streams = {}
    for name, key in cameras.items():
        # frame i of an episode sits at i / fps in its video, as data.RunDataset reads it
        timestamps = float(bounds[f"videos/{key}/from_timestamp"]) + np.arange(length) / source.meta.fps
        streams[name] = decode_video_frames(Path(source.root) / source.meta.get_video_file_path(episode, key),
                                            timestamps, sizes[name])
    for frames in zip(*streams.values(), strict=True):  # each yields `length` frames or raises ValidationError
        yield dict(zip(streams, frames, strict=True))
