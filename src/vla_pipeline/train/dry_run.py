"""Validation's dry run of the run itself: a few frames of the used episodes read through exactly the
code the train stage uses, checked against the source, then one forward and backward pass.

The sample is the first, middle and last frame of every used episode on small datasets, of
``max_episodes`` evenly spaced ones on large ones (every used video file is opened by the
``videos`` check already). Each frame is read

* through the decode path (``data.make_episode_dataset`` without a cache: LeRobot's dataset),
* through the frame-cache path (the cache's own build, restricted to the sampled rows, read back by
  ``FrameCacheSource``), whatever ``frame_cache.enable`` says,
* independently: by PyAV straight from the video file at ``from_timestamp + frame_index / fps``, or by
  PIL from the data file for a camera stored as images.

The checks: every camera tensor is float32 ``[3, H, W]`` in [0, 1] with the (H, W) that
``data.features`` reads from info.json; the decoded frame equals the independent decode (same
orientation, within codec tolerance); the decode and cache paths agree after LeRobot's own image
preprocessing (``PI05Policy._preprocess_images``: resize with pad to the policy's resolution) within
the cache's uint8 rounding; state and action equal the table rows the contract selects. Then a tiny
Pi0.5 with the run's cameras, resolution, chunk and state/action sizes takes the batch through
LeRobot's preprocessor (``train.batch.BatchPreparer``) and ``Pi05Loss``, forward and backward: the loss
and every gradient must be finite. A failure is a finding naming the feature, the frame and the
declared vs observed shape or value, never a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.policies.pi05.configuration_pi05 import PI05Config

from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.features import FeatureError, read_cameras
from vla_pipeline.data.frame_cache import FrameCacheConfig, compute_resized_shape, save_sample_frame_cache
from vla_pipeline.data.tables import feature_names
from vla_pipeline.errors import VlaError
from vla_pipeline.model.config import PolicyConfig, compute_image_resolution
from vla_pipeline.model.dims import ModelDims
from vla_pipeline.model.reference import load_reference_dims
from vla_pipeline.params import param
from vla_pipeline.train.dry_run_step import DryRunError, decode_frame_independently, run_step_rehearsal

CODEC_TOLERANCE = 3 / 255  # |decode path - independent decode| per pixel: the same FFmpeg decoder, colour conversion
SAMPLE_POSITIONS = (0.0, 0.5, 1.0)  # first, middle and last frame of a sampled episode
CHECK = "dry_run"
LEROBOT_PROMPT_LENGTH = PI05Config.__dataclass_fields__["tokenizer_max_length"].default  # LeRobot's Pi0.5 default


@dataclass(frozen=True)
class DryRunConfig:
    """The run the dry run rehearses: its policy (chunk, prompt length, normalization, resolution) and the
    resolution its frame cache stores. Both data paths are read whatever ``frame_cache.enable`` says: a
    run, or an experiment, may switch it."""

    policy: PolicyConfig
    dims: ModelDims  # the tiny model's dims, vision.image_size = the run's resolution
    cache_resolution: tuple[int, int] | None  # frame_cache.resize: the policy's resolution; None: native
    max_episodes: int = 12

    @classmethod
    def from_params(cls, p: dict) -> DryRunConfig:
        """The run params.yaml describes (``policy``, ``frame_cache``); the tiny dims are ``policy.dims`` at the
        run's resolution, also for a full-size run."""
        policy = PolicyConfig.from_params(param(p, "policy"))
        return cls.shaped_like(policy, ModelDims.from_dict(param(p, "policy.dims")),
                               resize=param(p, "frame_cache.resize", bool))

    @classmethod
    def shaped_like(cls, policy: PolicyConfig, tiny: ModelDims, *, resize: bool = True) -> DryRunConfig:
        """The dry run of ``policy``'s run through ``tiny`` at its resolution. The step uses the local tokenizer:
        with another one (PaliGemma's) the prompt's length is not the run's, so the window is widened to
        LeRobot's default and the prompt check is left to the train stage's guard."""
        if policy.tokenizer != "local":
            length = max(policy.tokenizer_max_length, LEROBOT_PROMPT_LENGTH)
            policy = dataclasses.replace(policy, tokenizer_max_length=length)
        resolution = compute_image_resolution(policy)
        dims = dataclasses.replace(tiny, vision=dataclasses.replace(tiny.vision, image_size=resolution[0]))
        return cls(policy=policy, dims=dims, cache_resolution=resolution if resize else None)

    @classmethod
    def full_size(cls, chunk_size: int = PolicyConfig.chunk_size) -> DryRunConfig:
        """Without a params file (``vla validate DATASET --contract C``): a full-size run's shape (LeRobot's
        defaults, 224x224 images, the frame cache on), through the reference tiny dims."""
        policy = dataclasses.replace(PolicyConfig(), chunk_size=chunk_size, n_action_steps=chunk_size,
                                     tokenizer_max_length=LEROBOT_PROMPT_LENGTH)
        return cls.shaped_like(policy, load_reference_dims())


def make_dry_run_check(cfg: DryRunConfig) -> Callable:
    """The check validation runs last (``validate.run.validate_dataset(..., dry_run=...)``)."""

    def check_dry_run(view, out) -> dict | None:
        started = time.perf_counter()
        try:
            n = run_dry_run(view, cfg)
        except DryRunError as e:
            out.error(CHECK, f"dry run: {e}", **e.where)
            return None
        except VlaError as e:  # a feature LeRobot would misread, a prompt the run would truncate, ...
            out.error(CHECK, f"dry run: {e}")
            return None
        # the time is printed, not recorded: the report is a DVC output that must not change between equal runs
        print(f"dry run: {n} sampled frames and one training step in {time.perf_counter() - started:.2f} s",
              file=sys.stderr)  # progress, beside the report (stdout starts with the findings)
        return {"frames": n}

    return check_dry_run


def pick_rows(view, max_episodes: int) -> dict[int, list[int]]:
    """episode -> the global indices of its sampled frames, for the used episodes."""
    meta = view.episodes
    used = [i for i, e in enumerate(meta["episode_index"].tolist()) if e not in view.exclude_episodes]
    if len(used) > max_episodes:
        used = [used[round(k * (len(used) - 1) / (max_episodes - 1))] for k in range(max_episodes)]
    rows = {}
    for i in used:
        lo, hi = int(meta["dataset_from_index"][i]), int(meta["dataset_to_index"][i])
        rows[int(meta["episode_index"][i])] = sorted({lo + round(s * (hi - 1 - lo)) for s in SAMPLE_POSITIONS})
    return rows


@dataclass
class _Sample:
    """What every check of one dry run reads."""

    view: object  # validate.findings.View
    cfg: DryRunConfig
    cameras: dict  # dataset key -> data.features.Camera
    row_position: dict[int, int]  # global index -> position in view.frames


def run_dry_run(view, cfg: DryRunConfig) -> int:
    """Read the sample through both paths, check it, then one forward/backward; the number of frames."""
    sample = _Sample(view, cfg, read_cameras(view.info, list(view.contract.cameras.values())),
                     {int(g): i for i, g in enumerate(view.frames["index"].tolist())})
    rows = pick_rows(view, cfg.max_episodes)
    episodes = sorted(rows)
    wanted = [r for ep in episodes for r in rows[ep]]
    with tempfile.TemporaryDirectory(prefix="vla-dry-run-") as tmp:
        decoded = _read(sample, episodes, wanted, None, "the decode path (LeRobot's dataset)")
        for row, item in zip(wanted, decoded, strict=True):
            _check_item(sample, row, item, "decode path", None)
            _check_independent(sample, row, item)
        cache = _build_cache(sample, Path(tmp) / "cache", episodes, wanted)
        cached = _read(sample, episodes, wanted, cache, "the frame-cache path")
        for row, item in zip(wanted, cached, strict=True):
            _check_item(sample, row, item, "frame-cache path", cfg.cache_resolution)
        run_step_rehearsal(sample, decoded, cached, Path(tmp))
    return len(wanted)


def _read(sample: _Sample, episodes: list[int], wanted: list[int], cache, what: str) -> list[dict]:
    """The items of the ``wanted`` rows, as the train stage's dataset factory gives them."""
    row = None
    try:
        dataset = make_episode_dataset(sample.view.root, sample.view.contract, episodes,
                                       sample.cfg.policy.chunk_size, cache)
        position = {g: i for i, g in enumerate(dataset.frames)}
        items = []
        for row in wanted:
            items.append(dataset[position[row]])
        return items
    except FeatureError:
        raise
    except Exception as e:  # noqa: BLE001  (whatever the train stage's data path raises is the finding)
        at = f"row {row}" if row is not None else "the sampled episodes"
        raise DryRunError(f"reading {at} through {what} failed: {type(e).__name__}: {e}") from e


def _build_cache(sample: _Sample, out: Path, episodes: list[int], wanted: list[int]):
    view = sample.view
    others = tuple(int(e) for e in view.episodes["episode_index"].tolist() if int(e) not in episodes)
    fc = FrameCacheConfig(dataset_root=view.root, contract_path=view.contract_path, out_dir=out,
                          resolution=sample.cfg.cache_resolution, num_workers=0, exclude_episodes=others, store=None)
    try:
        return save_sample_frame_cache(fc, frozenset(wanted))
    except Exception as e:  # noqa: BLE001
        raise DryRunError(f"building the frame cache of the sampled frames failed: {type(e).__name__}: {e}") from e


def _where(item: dict) -> tuple[int, int]:
    return int(item["episode_index"]), int(item["frame_index"])


def _check_item(sample: _Sample, row: int, item: dict, path: str, resolution: tuple[int, int] | None) -> None:
    """Camera tensors' shape, dtype and range; state and action against the table rows."""
    from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

    view, c = sample.view, sample.view.contract
    episode, frame = _where(item)
    where = f"episode {episode}, frame {frame} (row {row}), {path}"
    for name, key in c.cameras.items():
        image, cam = item[f"{OBS_IMAGES}.{name}"], sample.cameras[key]
        expected = (3, *compute_resized_shape(*cam.hw, resolution))
        if tuple(image.shape) != expected:
            raise DryRunError(f"{where}: camera '{key}' gives a tensor of shape {list(image.shape)}, expected "
                                f"{list(expected)} from {cam.describe()}; correct features.{key}.shape and names "
                                f"in meta/info.json to what the videos hold", episode=episode, frame=frame, key=key,
                                value=list(image.shape), expected=list(expected))
        if image.dtype != torch.float32 or float(image.min()) < 0.0 or float(image.max()) > 1.0:
            raise DryRunError(f"{where}: camera '{key}' gives {image.dtype} values in [{float(image.min()):.3g}, "
                                f"{float(image.max()):.3g}], the policy expects float32 in [0, 1]",
                                episode=episode, frame=frame, key=key)
    pos = sample.row_position[row]
    for key, got in ((c.state_key, item[OBS_STATE]), (c.action_key, item[ACTION][0])):
        idx = c.select_indices(feature_names(view.info, key), key)
        want = view.frames.vectors[key][pos][idx].astype(np.float32)
        if not np.array_equal(got.numpy(), want):
            raise DryRunError(f"{where}: '{key}' is {np.round(got.numpy(), 4).tolist()} but the table row holds "
                                f"{np.round(want, 4).tolist()} for the contract's joints {list(c.joints)}",
                                episode=episode, frame=frame, key=key)


def _check_independent(sample: _Sample, row: int, item: dict) -> None:
    """The decode path's frame equals the source frame decoded on its own (PyAV for a video, PIL for an
    image feature), in the same orientation."""
    from lerobot.utils.constants import OBS_IMAGES

    episode, frame = _where(item)
    for name, key in sample.view.contract.cameras.items():
        cam = sample.cameras[key]
        source = decode_frame_independently(sample.view, cam, (episode, frame, row))
        got = item[f"{OBS_IMAGES}.{name}"].permute(1, 2, 0).numpy()
        if source.shape != got.shape:
            raise DryRunError(f"episode {episode}, frame {frame}: the {cam.storage} of '{key}' holds frames of (H, W, C) "
                                f"{list(source.shape)}, the decode path gives {list(got.shape)}; {cam.describe()}",
                                episode=episode, frame=frame, key=key, value=list(got.shape),
                                expected=list(source.shape))
        diff = float(np.abs(source.astype(np.float32) / 255 - got).mean())
        if diff > CODEC_TOLERANCE:
            raise DryRunError(f"episode {episode}, frame {frame}: camera '{key}' differs from the {cam.storage}'s own frame "
                                f"by {diff * 255:.1f}/255 on average (tolerance {CODEC_TOLERANCE * 255:.0f}/255): the "
                                f"data path reads another frame or another orientation", episode=episode,
                                frame=frame, key=key, value=diff)
