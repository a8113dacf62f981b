"""The decoded-frame cache gives the batches the video-decoding path gives: every vector, mask,
index and task bit-identical; images bit-identical for native frames and within the documented
uint8 rounding (0.5/255) at the model's input when frames are resized; a stale cache is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.policies.pi05.modeling_pi05 import resize_with_pad_torch
from lerobot.utils.constants import OBS_IMAGES

from vla_pipeline.data.augment import AugmentConfig, make_image_transforms
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import (
    FRAME_CACHE_MANIFEST_FILE,
    ROUNDING_TOLERANCE,
    FrameCacheConfig,
    compute_resized_shape,
    load_frame_cache,
    save_frame_cache,
)
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.data.sampler import make_loader
from vla_pipeline.errors import TrainInputError
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint

from conftest import CONTRACT, make_train_config, vla

RESOLUTION = (112, 112)  # the tiny policy's image_resolution (params.yaml)
EPISODES = [0, 2, 5]


@pytest.fixture(scope="module")
def caches(demo_dataset, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("frame_cache")
    out = {}
    for name, resolution in (("resized", RESOLUTION), ("native", None)):
        cfg = FrameCacheConfig(demo_dataset, CONTRACT, work / name, resolution=resolution, num_workers=1)
        out[name] = save_frame_cache(cfg)
    return out


def batches(dataset, n: int = 4) -> list[dict]:
    loader = make_loader(dataset, batch_size=4, seed=3, num_workers=0)
    return [next(loader) for _ in range(n)]


def model_input(images: torch.Tensor) -> torch.Tensor:
    """What Pi0.5's ``_preprocess_images`` feeds SigLIP (before the [-1, 1] shift): resized and padded."""
    return resize_with_pad_torch(images.permute(0, 2, 3, 1), *RESOLUTION)


def pair(demo_dataset, cache_dir: Path, resolution, augment=None):
    contract = load_contract(CONTRACT)
    cache = load_frame_cache(cache_dir, compute_dataset_fingerprint(demo_dataset), resolution)
    decoded = make_dataset(demo_dataset, contract, EPISODES, 10, augment, augment_seed=7)
    cached = make_episode_dataset(demo_dataset, contract, EPISODES, 10, cache, augment=augment, augment_seed=7)
    return batches(decoded), batches(cached)


def assert_same_non_image(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if key.startswith(OBS_IMAGES):
            continue
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_resized_cache_matches_decode_path_within_rounding(demo_dataset, caches) -> None:
    decoded, cached = pair(demo_dataset, caches["resized"], RESOLUTION)
    worst = 0.0
    for a, b in zip(decoded, cached, strict=True):
        assert_same_non_image(a, b)
        for key in (k for k in a if k.startswith(OBS_IMAGES)):
            h, w = compute_resized_shape(*a[key].shape[-2:], RESOLUTION)
            assert b[key].shape[-2:] == (h, w)  # stored without Pi0.5's pad: the model adds it
            diff = (model_input(a[key]) - model_input(b[key])).abs().max().item()
            worst = max(worst, diff)
    assert 0 < worst <= ROUNDING_TOLERANCE  # rounding, nothing else (the demo frames are resized 32x40 -> 89x112)


def test_native_cache_is_bit_identical_with_augmentation(demo_dataset, caches) -> None:
    augment = make_image_transforms(AugmentConfig(enable=True, saturation=(0.8, 1.2), crop_scale=0.9))
    decoded, cached = pair(demo_dataset, caches["native"], None, augment)
    for a, b in zip(decoded, cached, strict=True):
        assert_same_non_image(a, b)
        for key in (k for k in a if k.startswith(OBS_IMAGES)):
            assert torch.equal(a[key], b[key]), key


def test_resized_cache_with_augmentation_stays_close(demo_dataset, caches) -> None:
    """The same per-sample draws, applied after the resize instead of before: they differ only where
    brightness/contrast saturate at 0 or 1 next to an edge (clamping does not commute with the resize)."""
    augment = make_image_transforms(AugmentConfig(enable=True))
    decoded, cached = pair(demo_dataset, caches["resized"], RESOLUTION, augment)
    diffs = []
    for a, b in zip(decoded, cached, strict=True):
        assert_same_non_image(a, b)
        for key in (k for k in a if k.startswith(OBS_IMAGES)):
            diffs.append((model_input(a[key]) - model_input(b[key])).abs().mean().item())
    assert max(diffs) <= 2 / 255


def test_manifest_links_fingerprint_resize_and_file_hashes(demo_dataset, caches) -> None:
    import hashlib

    manifest = json.loads((caches["resized"] / FRAME_CACHE_MANIFEST_FILE).read_text())
    assert manifest["dataset_fingerprint"] == compute_dataset_fingerprint(demo_dataset)
    assert manifest["resolution"] == list(RESOLUTION)
    contract = load_contract(CONTRACT)
    assert sorted(manifest["cameras"]) == sorted(contract.cameras.values())
    for key, entry in manifest["cameras"].items():
        path = caches["resized"] / f"{key}.u8"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        frames = np.load(path, mmap_mode="r")
        assert list(frames.shape) == entry["shape"] and frames.dtype == np.uint8
        assert frames.shape[0] == manifest["n_frames"] and frames.max() > 0  # every row written


def test_stale_or_mismatched_cache_is_refused(demo_dataset, caches, tmp_path) -> None:
    fingerprint = compute_dataset_fingerprint(demo_dataset)
    with pytest.raises(TrainInputError, match="another version of the dataset.*dvc repro -f frame_cache"):
        load_frame_cache(caches["resized"], "0" * 64, RESOLUTION)
    with pytest.raises(TrainInputError, match=r"resized for \(112, 112\).*\(224, 224\)"):
        load_frame_cache(caches["resized"], fingerprint, (224, 224))
    with pytest.raises(TrainInputError, match="holds no frame cache"):
        load_frame_cache(tmp_path / "missing", fingerprint, RESOLUTION)
    off = save_frame_cache(FrameCacheConfig(demo_dataset, CONTRACT, tmp_path / "off", enable=False))
    assert sorted(p.name for p in off.iterdir()) == [FRAME_CACHE_MANIFEST_FILE]
    with pytest.raises(TrainInputError, match="enable: false"):
        load_frame_cache(off, fingerprint, RESOLUTION)


def test_training_on_native_cache_gives_identical_losses(params, tiny_run, caches, tmp_path) -> None:
    """Whole train runs: the decode path and the native cache give bit-identical loss curves."""
    from vla_pipeline.train.trainer import train

    losses = {}
    for name, cache in (("decode", None), ("cache", caches["native"])):
        cfg = make_train_config(params, tiny_run.dataset, tmp_path / name, steps=3, log_every=1, eval_every=3,
                                frame_cache_dir=cache, wandb_mode="disabled", norms_dir=tiny_run.norms,
                                validation_report=tiny_run.report, val_samples=8)
        train(cfg)
        losses[name] = (tmp_path / name / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert losses["decode"] == losses["cache"] and len(losses["decode"].splitlines()) == 4


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_cli_builds_cache_and_evaluate_reads_it(tiny_run, tmp_path) -> None:
    out = tmp_path / "fc"
    result = vla("frame-cache", str(tiny_run.dataset), "--contract", str(CONTRACT), "--out", str(out),
                 "--resolution", *map(str, RESOLUTION))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / FRAME_CACHE_MANIFEST_FILE).read_text())["resolution"] == list(RESOLUTION)
    runs = {}
    for name, extra in (("decode", []), ("cache", ["--frame-cache", str(out)])):
        result = vla("evaluate", str(tiny_run.checkpoint), "--dataset", str(tiny_run.dataset), "--out",
                     str(tmp_path / name), "--no-videos", "--wandb", "disabled", *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["cache"]["n_valid_steps"] == runs["decode"]["n_valid_steps"]
    assert runs["cache"]["baseline_hold_mse"] == runs["decode"]["baseline_hold_mse"]  # the vectors are identical
    assert runs["cache"]["action_mse"] == pytest.approx(runs["decode"]["action_mse"], rel=0.05)


def test_excluded_episodes_are_not_decoded_and_cannot_be_read(demo_dataset, tmp_path) -> None:
    """dataset.exclude_episodes may name episodes with broken videos: the cache skips them, and a
    dataset over them is refused instead of serving blank frames."""
    cache_dir = save_frame_cache(FrameCacheConfig(demo_dataset, CONTRACT, tmp_path / "fc", resolution=RESOLUTION,
                                                  exclude_episodes=(1,)))
    cache = load_frame_cache(cache_dir, compute_dataset_fingerprint(demo_dataset), RESOLUTION)
    assert cache.manifest["excluded_episodes"] == [1]
    contract = load_contract(CONTRACT)
    ok = make_episode_dataset(demo_dataset, contract, [0, 2], 10, cache)
    assert all(ok[i][f"{OBS_IMAGES}.front"].max() > 0 for i in range(len(ok)))
    with pytest.raises(TrainInputError, match=r"episodes \[1\] were excluded .*dvc repro frame_cache"):
        make_episode_dataset(demo_dataset, contract, [0, 1], 10, cache)


def test_the_stage_takes_its_exclusions_from_the_validation_report(demo_dataset, tmp_path) -> None:
    """As the stage builds it (exclude_episodes None), the cache leaves out what the report recorded;
    without a report it refuses to guess."""
    import json

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"ok": True, "excluded_episodes": [2], "dataset_root": str(demo_dataset),
                                  "contract": str(CONTRACT), "contract_hash": compute_contract_hash(CONTRACT),
                                  "dataset_fingerprint": compute_dataset_fingerprint(demo_dataset)}))
    cfg = FrameCacheConfig(demo_dataset, CONTRACT, tmp_path / "fc", resolution=RESOLUTION, exclude_episodes=None,
                           report_path=report)
    cache = load_frame_cache(save_frame_cache(cfg), compute_dataset_fingerprint(demo_dataset), RESOLUTION)
    assert cache.manifest["excluded_episodes"] == [2]
    missing = FrameCacheConfig(demo_dataset, CONTRACT, tmp_path / "fc2", exclude_episodes=None,
                               report_path=tmp_path / "nowhere.json")
    with pytest.raises(TrainInputError, match="validation report .* not found.*dvc repro validate"):
        save_frame_cache(missing)

