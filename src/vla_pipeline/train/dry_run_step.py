"""The dry run's last two parts: a frame decoded straight from its video by PyAV (the independent
reference), and one training step of a tiny Pi0.5 shaped like the run on the sampled batch."""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline.data.metadata import camera_shapes
from vla_pipeline.data.tables import load_image_bytes
from vla_pipeline.errors import VlaError
from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.config import compute_image_resolution, make_pi05_config
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.model.processors import make_processors
from vla_pipeline.model.tokenizer import make_local_tokenizer
from vla_pipeline.norms import compute_feature_stats, make_processor_stats
from vla_pipeline.train.batch import BatchPreparer
from vla_pipeline.validate.videos import DEFAULT_VIDEO_PATH, grab_frames

PATH_AGREEMENT = 2 * (0.5 / 255) + 1e-5  # decode vs cache after LeRobot's preprocessing ([-1, 1]: twice the rounding)


class DryRunError(VlaError):
    """What the dry run found wrong, as one finding: the message and where (episode, frame, key, values)."""

    def __init__(self, message: str, **where):
        super().__init__(message)
        self.where = where


def decode_frame_independently(view, camera, where: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8: the frame at ``where`` (episode, frame index, global row) of ``camera``
    (``data.features.Camera``) decoded on its own: a video by PyAV alone (the file from meta/episodes and
    info.json's video_path, at from_timestamp + frame / fps), an image feature by PIL from the data file."""
    import av

    episode, frame, row = where
    key = camera.key
    if camera.storage == "image":
        from PIL import Image

        (encoded,) = load_image_bytes(view.root, key, row, row + 1)
        return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    meta = view.episodes
    i = meta["episode_index"].tolist().index(episode)
    rel = (view.info.get("video_path") or DEFAULT_VIDEO_PATH).format(
        video_key=key, chunk_index=int(meta[f"videos/{key}/chunk_index"][i]),
        file_index=int(meta[f"videos/{key}/file_index"][i]))
    fps = float(view.info["fps"])
    t = float(meta[f"videos/{key}/from_timestamp"][i]) + frame / fps
    with av.open(str(Path(view.root) / rel)) as container:
        (picked,) = grab_frames(container, container.streams.video[0], [t], fps, "rgb24")
    if picked is None:
        raise DryRunError(f"episode {episode}, frame {frame}: no frame of {rel} decodes at {t:.3f}s",
                          episode=episode, frame=frame, key=key)
    return picked


def _stats(view, joints: dict[str, list[int]]) -> dict:
    """Statistics of the used episodes' rows, in the frozen stats' form (the dry run's stand-in for norms)."""
    used = ~np.isin(view.frames["episode_index"], list(view.exclude_episodes))
    features = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant joint: validation's static_joints check says so
        for role, key in ((ACTION, view.contract.action_key), (OBS_STATE, view.contract.state_key)):
            values = view.frames.vectors[key][used][:, joints[key]]
            features[role] = compute_feature_stats(values, list(view.contract.joints))
    return make_processor_stats({"features": features})


def _collate(items: list[dict]) -> dict:
    return torch.utils.data.default_collate(items)


def run_step_rehearsal(sample, decoded: list[dict], cached: list[dict], tmp: Path) -> None:
    """A tiny Pi0.5 with the run's cameras, resolution, chunk and state/action sizes: LeRobot's preprocessor
    on the sampled batch, the images as the model sees them (both paths agree), then forward and backward."""
    view, cfg, c = sample.view, sample.cfg, sample.view.contract
    policy_cfg = dataclasses.replace(cfg.policy, dims=cfg.dims, tokenizer="local", pretrained=None)
    config = make_pi05_config(policy_cfg, len(c.joints), camera_shapes(view.root, c), "cpu")
    joints = {k: c.select_indices(view.names(k), k) for k in (c.action_key, c.state_key)}
    tokenizer = make_local_tokenizer(tmp / "tokenizer", vocab_size=cfg.dims.vocab_size)
    pre, _ = make_processors(config, _stats(view, joints), tokenizer)
    prepare = BatchPreparer(pre, trim=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = make_pi05_policy(config, cfg.dims)
        try:
            batch = prepare(_collate(decoded))
            images = _model_images(policy, batch, compute_image_resolution(policy_cfg))
            _compare_paths(images, _model_images(policy, prepare(_collate(cached)), None), decoded)
            loss = Pi05Loss(policy)(batch)
            loss.backward()
        except VlaError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"one training step of a tiny Pi0.5 shaped like the run failed on the sampled "
                                f"batch: {type(e).__name__}: {e}") from e
    bad = [n for n, p in policy.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if not math.isfinite(float(loss)) or bad:
        raise DryRunError(f"one training step on the sampled batch gives loss {float(loss):.4g} and non-finite "
                            f"gradients in {bad[:3]}: a value in the state or action overflows the normalization")


def _model_images(policy, batch: dict, resolution: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    """The camera images as Pi0.5 sees them (LeRobot's ``_preprocess_images``), each [B, 3, H, W] at
    ``resolution``."""
    with torch.no_grad():
        images, _ = policy._preprocess_images(batch)  # noqa: SLF001  (LeRobot's own preprocessing)
    images = dict(zip(policy.config.image_features, images, strict=True))
    for key, image in images.items():
        if resolution is not None and tuple(image.shape[1:]) != (3, *resolution):
            raise DryRunError(f"camera '{key}' reaches the model as {list(image.shape[1:])}, the policy's "
                                f"resolution is {[3, *resolution]}", key=key, value=list(image.shape[1:]))
    return images


def _compare_paths(decoded: dict[str, torch.Tensor], cached: dict[str, torch.Tensor], items: list[dict]) -> None:
    for key, a in decoded.items():
        b = cached[key]
        diff = (a - b).abs().flatten(1).amax(dim=1)
        worst = int(diff.argmax())
        if float(diff[worst]) > PATH_AGREEMENT:
            episode, frame = int(items[worst]["episode_index"]), int(items[worst]["frame_index"])
            raise DryRunError(f"episode {episode}, frame {frame}: camera '{key}' differs between the decode path "
                                f"and the frame-cache path by {float(diff[worst]):.4f} after LeRobot's preprocessing "
                                f"(tolerance {PATH_AGREEMENT:.4f}): the cache holds other pixels than the videos",
                                episode=episode, frame=frame, key=key, value=float(diff[worst]))

