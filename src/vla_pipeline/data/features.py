"""The one reading of a dataset's features (``meta/info.json``): cameras and vectors as LeRobot 0.4.2
reads them, or refused with the cause where LeRobot would misread them.

LeRobot turns a camera's declared ``shape`` into the policy's (C, H, W) in
``dataset_to_policy_features``: a declaration whose last name is ``channel``/``channels`` is
height-width-channel and is permuted; every other declaration is taken as channel-first as it
stands. A recorder that declares ``[3, H, W]`` with ``names: [channel, height, width]`` is
therefore read correctly by LeRobot, and a reader that assumes ``(H, W, C)`` is not. Every module
of this project that needs a camera's size, storage, codec or a vector's length asks this module;
no other code indexes a feature's ``shape`` (``tests/test_architecture.py`` holds it to that).

What LeRobot would misread is refused here with a :class:`FeatureError` that names the feature,
the declaration and what LeRobot would make of it: a camera whose channel-first reading does not
have 3 channels, names that contradict the reading LeRobot takes (``[height, width, rgb]`` is
read as 224 channels), a shape that is not three positive integers. The decoded frames are held
to the declaration by validation's dry run (``validate/dry_run.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vla_pipeline.data.tables import CAMERA_DTYPES, camera_keys
from vla_pipeline.errors import VlaError

POLICY_CHANNELS = 3  # Pi0.5's SigLIP takes RGB frames
_ROLE_WORDS = {"channel": {"channel", "channels", "c", "rgb", "color", "colour"},
               "height": {"height", "h", "rows"}, "width": {"width", "w", "cols", "columns"}}


class FeatureError(VlaError, ValueError):
    """A feature of ``meta/info.json`` that LeRobot would misread, or that the policy cannot take."""


@dataclass(frozen=True)
class Camera:
    """A camera feature as LeRobot reads it."""

    key: str
    storage: str  # "video" (frames in mp4 files) or "image" (frames in the parquet files)
    channels: int
    height: int
    width: int
    declared: tuple[int, ...]  # the shape as info.json writes it
    channel_last: bool  # declared (H, W, C): LeRobot permutes it
    codec: str | None  # info.json's video.codec, a claim (validation compares it with the files)

    @property
    def chw(self) -> tuple[int, int, int]:
        """The (C, H, W) the policy's input feature has (LeRobot's ``dataset_to_policy_features``)."""
        return self.channels, self.height, self.width

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def robot_shape(self) -> tuple[int, int, int]:
        """(H, W, C): how a LeRobot robot's observation features describe a camera."""
        return self.height, self.width, self.channels

    def describe(self) -> str:
        return f"'{self.key}' (declared {list(self.declared)}, read as C={self.channels}, H={self.height}, W={self.width})"


def _feature(info: dict, key: str) -> dict:
    features = info.get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict) or key not in features:
        raise FeatureError(f"meta/info.json has no feature '{key}'; its features are "
                           f"{sorted(features) if isinstance(features, dict) else 'missing'}")
    ft = features[key]
    if not isinstance(ft, dict):
        raise FeatureError(f"meta/info.json: feature '{key}' is {type(ft).__name__}, not a mapping")
    return ft


def is_camera(feature: Any) -> bool:
    return isinstance(feature, dict) and feature.get("dtype") in CAMERA_DTYPES


def _role(name: Any) -> str | None:
    word = str(name).strip().lower()
    return next((role for role, words in _ROLE_WORDS.items() if word in words), None)


def read_camera(info: dict, key: str) -> Camera:
    """``key``'s camera feature as LeRobot reads it, or a :class:`FeatureError` saying why it would be
    misread or cannot feed the policy."""
    from lerobot.datasets.utils import dataset_to_policy_features

    ft = _feature(info, key)
    if not is_camera(ft):
        raise FeatureError(f"meta/info.json: '{key}' has dtype {ft.get('dtype')!r}; a camera is 'video' or 'image'")
    shape, names = ft.get("shape"), ft.get("names")
    where = f"meta/info.json: camera '{key}' declares shape {shape!r} with names {names!r}"
    if not (isinstance(shape, list | tuple) and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise FeatureError(f"{where}; a camera's shape is three positive integers, [height, width, channels] or "
                           f"[channels, height, width]; correct features.{key}.shape")
    if not (isinstance(names, list | tuple) and len(names) == 3):
        raise FeatureError(f"{where}; LeRobot needs three names to tell channel-last from channel-first (it reads "
                           f"names[2]); set features.{key}.names to [height, width, channels] or "
                           f"[channels, height, width], whichever the frames are")
    c, h, w = (int(s) for s in dataset_to_policy_features({key: {**ft, "shape": tuple(shape)}})[key].shape)
    channel_last = tuple(shape) != (c, h, w) or str(names[2]).lower() in ("channel", "channels")
    roles = [_role(n) for n in names]
    expected = ["height", "width", "channel"] if channel_last else ["channel", "height", "width"]
    lerobot_reads = (f"LeRobot reads it as {'channel-last' if channel_last else 'channel-first'}: C={c}, H={h}, W={w} "
                     f"(it takes a declaration as channel-last only when names[2] is 'channel' or 'channels')")
    if c != POLICY_CHANNELS:
        raise FeatureError(f"{where}; {lerobot_reads}, but Pi0.5 takes {POLICY_CHANNELS}-channel images. If the "
                           f"frames are H x W x 3, declare names [height, width, channels]; if 3 x H x W, declare "
                           f"shape [3, H, W] with names [channels, height, width]")
    if any(r is not None and r != e for r, e in zip(roles, expected, strict=True)):
        raise FeatureError(f"{where}; {lerobot_reads}, which contradicts the names; make the names say the "
                           f"layout of the shape ({expected} for this reading)")
    return Camera(key, str(ft["dtype"]), c, h, w, tuple(int(s) for s in shape), channel_last, declared_codec(info, key))


def read_cameras(info: dict, keys: list[str] | tuple[str, ...] | None = None) -> dict[str, Camera]:
    """``keys`` (default: every camera of the dataset) read by :func:`read_camera`, key -> Camera."""
    return {k: read_camera(info, k) for k in (camera_keys(info) if keys is None else keys)}


def vector_dim(info: dict, key: str) -> int:
    """The length of the vector feature ``key`` (``shape: [n]``), or a :class:`FeatureError`."""
    shape = _feature(info, key).get("shape")
    if not (isinstance(shape, list | tuple) and len(shape) == 1 and isinstance(shape[0], int)
            and not isinstance(shape[0], bool) and shape[0] > 0):
        raise FeatureError(f"meta/info.json: '{key}' has shape {shape!r}; a vector feature's shape is [n_dims]")
    return int(shape[0])


def vector_dims(info: dict, keys) -> dict[str, int]:
    return {k: vector_dim(info, k) for k in keys}


def camera_storage(info: dict, key: str) -> str | None:
    """"video" or "image" for a camera feature (how its frames are stored), None for anything else or a key
    info.json does not have."""
    ft = (info.get("features") or {}).get(key)
    return str(ft["dtype"]) if is_camera(ft) else None


def declared_codec(info: dict, key: str) -> str | None:
    """The codec info.json claims for a video feature (``info.video.codec``): a claim, not the files' codec."""
    extra = ((info.get("features") or {}).get(key) or {}).get("info")
    return extra.get("video.codec") if isinstance(extra, dict) else None


def video_keys(info: dict, keys) -> list[str]:
    """Those of ``keys`` that are cameras stored as video files."""
    return [k for k in keys if camera_storage(info, k) == "video"]


def declared_shape(info: dict, key: str) -> Any:
    """The shape exactly as info.json writes it (for messages that quote the declaration)."""
    return _feature(info, key).get("shape")
