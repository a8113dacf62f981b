"""Image augmentation for training, configured entirely in params, applied to camera images only.

Built from LeRobot's own ``ImageTransforms`` (ColorJitter / SharpnessJitter, at most
``max_num_transforms`` per image) plus an optional small random crop resized back. Randomness is
seeded per sample from (augment seed, epoch, frame): the same seed gives bit-identical images in
any process, any worker count and any data order, and changing it changes nothing but the images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from lerobot.datasets.transforms import ImageTransformConfig, ImageTransforms, ImageTransformsConfig
from torchvision.transforms import v2

from vla_pipeline.params import at_least, optional_float, param
from vla_pipeline.params.models import default


def _range(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class AugmentConfig:
    """``train.augment``; the defaults are params.yaml's (``params/models.py``)."""

    enable: bool = default("train.augment.enable")
    seed: int = default("train.augment.seed")
    max_num_transforms: int = default("train.augment.max_num_transforms")
    brightness: tuple[float, float] | None = _range(default("train.augment.brightness"))
    contrast: tuple[float, float] | None = _range(default("train.augment.contrast"))
    saturation: tuple[float, float] | None = _range(default("train.augment.saturation"))
    hue: tuple[float, float] | None = _range(default("train.augment.hue"))
    sharpness: tuple[float, float] | None = _range(default("train.augment.sharpness"))
    crop_scale: float | None = default("train.augment.crop_scale")  # e.g. 0.95: crop >= 95% of the area, resize back

    @classmethod
    def from_params(cls, p: dict) -> AugmentConfig:
        crop = param(p, "crop_scale", optional_float)
        if crop is not None and not 0.5 <= crop <= 1.0:
            at_least(crop, 0.5, "train.augment.crop_scale")
        return cls(
            enable=param(p, "enable", bool),
            seed=param(p, "seed", int),
            max_num_transforms=int(at_least(param(p, "max_num_transforms", int), 1, "train.augment.max_num_transforms")),
            **{k: param(p, k, _range) for k in ("brightness", "contrast", "saturation", "hue", "sharpness")},
            crop_scale=crop,
        )


def make_image_transforms(cfg: AugmentConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The augmentation for one (C, H, W) float image in [0, 1], or None when disabled."""
    if not cfg.enable:
        return None
    tfs = {
        name: ImageTransformConfig(type="ColorJitter", kwargs={name: value})
        for name in ("brightness", "contrast", "saturation", "hue")
        if (value := getattr(cfg, name)) is not None
    }
    if cfg.sharpness is not None:
        tfs["sharpness"] = ImageTransformConfig(type="SharpnessJitter", kwargs={"sharpness": cfg.sharpness})
    steps: list[Callable] = []
    if tfs:
        steps.append(ImageTransforms(ImageTransformsConfig(
            enable=True, max_num_transforms=min(cfg.max_num_transforms, len(tfs)), random_order=False, tfs=tfs,
        )))
    if cfg.crop_scale is not None:
        steps.append(_RandomCropResize(cfg.crop_scale))
    return v2.Compose(steps) if steps else None


class _RandomCropResize:
    """A random crop of at least ``min_scale`` of the area, aspect kept, resized back to the input size."""

    def __init__(self, min_scale: float):
        self.min_scale = min_scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        return v2.RandomResizedCrop(size=(h, w), scale=(self.min_scale, 1.0), ratio=(w / h, w / h), antialias=True)(image)


def compute_sample_seed(seed: int, epoch: int, frame: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, frame]).generate_state(1)[0])


def apply_seeded(transform: Callable, images: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Apply ``transform`` to each image with torch's RNG seeded to ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [transform(image) for image in images]
