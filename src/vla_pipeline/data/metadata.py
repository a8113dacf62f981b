"""LeRobot's metadata of a local dataset root (never the hub): the meta files it needs, the video
backend these machines can decode with, and the camera shapes a contract's cameras give the policy."""

from __future__ import annotations

from pathlib import Path

from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
from lerobot.utils.constants import OBS_IMAGES

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.features import read_cameras
from vla_pipeline.data.tables import load_info, load_tasks_table
from vla_pipeline.errors import TrainInputError

VIDEO_BACKEND = "pyav"  # torchcodec needs system FFmpeg libraries these machines lack


META_FILES = ("meta/info.json", "meta/tasks.parquet", "meta/episodes")


def require_local_root(root: Path) -> Path:
    """``root`` if it holds the meta files LeRobot reads (else LeRobot would go to the hub for them)."""
    root = Path(root)
    missing = [f for f in META_FILES if not (root / f).exists()]
    if missing:
        raise TrainInputError(f"{root} is not a complete LeRobotDataset v3.0 root: {missing} missing; check "
                              f"dataset.root, then run `vla validate {root} --contract ...`")
    return root


def load_metadata(root: Path) -> LeRobotDatasetMetadata:
    """LeRobot's metadata of the local dataset at ``root``. LeRobot falls back to the hub when a file is
    missing (and then fails offline, telling the user to unset ``HF_HUB_OFFLINE``); a local root that
    lacks its meta files is refused here instead, with the files named. Task strings stored in a bare
    ``__index_level_0__`` column are read as the task index (``frames.load_tasks_table``)."""
    root = require_local_root(root)
    meta = LeRobotDatasetMetadata(repo_id=f"local/{root.name}", root=root)
    meta.tasks = load_tasks_table(root)
    return meta


def camera_shapes(root: Path, contract: Contract) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of each contract camera, as the policy's input features need them."""
    cameras = read_cameras(load_info(root), list(contract.cameras.values()))
    return {f"{OBS_IMAGES}.{name}": cameras[key].chw for name, key in contract.cameras.items()}
