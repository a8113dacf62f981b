"""``vla trim``: a copy of a dataset with idle heads and tails cut, as validation suggests them
(``suggested_trims`` of its report: episode -> the frames to keep). The source is only read; the copy
is written by LeRobot's own writer (every kept frame decoded and encoded again), so it is a plain
LeRobot v3.0 dataset with the same episodes, features and tasks, and new timestamps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from vla_pipeline.data.features import read_cameras
from vla_pipeline.data.metadata import VIDEO_BACKEND, require_local_root
from vla_pipeline.errors import ConfigError

#: what LeRobot's writer fills in itself
WRITER_FILLS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def parse_trims(trims: Mapping) -> dict[int, tuple[int, int]]:
    """A report's ``suggested_trims`` (JSON keys are strings) -> episode -> (first, last) frame kept."""
    out = {}
    for episode, keep in trims.items():
        if not (isinstance(keep, list | tuple) and len(keep) == 2 and all(isinstance(k, int) for k in keep)
                and 0 <= keep[0] <= keep[1]):
            raise ConfigError(f"suggested_trims[{episode}] = {keep!r}: expected [first, last] frames to keep")
        out[int(episode)] = (int(keep[0]), int(keep[1]))
    return out


def _check_paths(src: Path, dst: Path) -> None:
    if dst.exists() and any(dst.iterdir()):
        raise ConfigError(f"--out {dst} exists and is not empty; trim writes a new dataset: pick a new directory")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConfigError(f"--out {dst} lies inside the source {src}; the source is never written: pick a directory "
                          f"outside it")


def _to_writer(value, camera) -> np.ndarray | str:
    """One item of LeRobot's dataset -> what its writer's ``add_frame`` takes (images as uint8 in the
    layout the feature declares)."""
    if camera is None:
        return value.numpy() if hasattr(value, "numpy") else value
    image = np.clip(np.round(value.numpy() * 255.0), 0, 255).astype(np.uint8)  # 3 x H x W floats in [0, 1]
    return np.transpose(image, (1, 2, 0)) if camera.channel_last else image


def trim_dataset(src: Path, dst: Path, keep: Mapping[int, tuple[int, int]],
                 progress: Callable[[str], None] = print) -> Path:
    """Write ``dst``: ``src`` with each episode in ``keep`` cut to its frames [first, last]."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # heavy import, only when writing

    src, dst = Path(src), Path(dst)
    require_local_root(src)
    _check_paths(src, dst)
    source = LeRobotDataset(repo_id=src.name, root=src, video_backend=VIDEO_BACKEND)
    features = {k: v for k, v in source.meta.features.items() if k not in WRITER_FILLS}
    cameras = read_cameras(source.meta.info, list(source.meta.camera_keys))
    episodes = source.meta.episodes
    unknown = sorted(set(keep) - set(range(source.meta.total_episodes)))
    if unknown:
        raise ConfigError(f"trims name episodes {unknown}, which {src} does not have")
    out = LeRobotDataset.create(repo_id=source.repo_id, fps=source.fps, root=dst, robot_type=source.meta.robot_type,
                                features=features, use_videos=bool(source.meta.video_keys))
    try:
        for e in range(source.meta.total_episodes):
            start, end = int(episodes["dataset_from_index"][e]), int(episodes["dataset_to_index"][e])
            first, last = keep.get(e, (0, end - start - 1))
            if last >= end - start:
                raise ConfigError(f"episode {e} has {end - start} frames; cannot keep frames {first}..{last}")
            for row in range(start + first, start + last + 1):
                item = source[row]
                out.add_frame({**{k: _to_writer(item[k], cameras.get(k)) for k in features}, "task": item["task"]})
            out.save_episode()
            progress(f"episode {e}: kept frames {first}..{last} of {end - start}")
    finally:
        out.finalize()
    return dst
