"""Decoded-frame cache: every camera frame of the dataset decoded once (by LeRobot's own video
decoder), resized the way Pi0.5's preprocessing resizes it, and stored as uint8 in one
memory-mapped file per camera. Training and evaluation then read frames instead of decoding
video at every step.

Layout of ``out_dir``: ``<camera key>.u8`` (``n_frames x 3 x H x W`` uint8, row = the dataset's
global ``index``) and ``manifest.json`` (dataset fingerprint, resize settings, shapes, sha256 of
every frame file). ``resolution`` is the policy's ``image_resolution``: each frame is resized
with LeRobot's ``resize_with_pad_torch`` arithmetic (aspect kept) *without* the pad, so the
model's own resize becomes the identity and it still adds its pad. The only difference from the
decode path is the uint8 rounding of the resized image: at most 0.5/255 per pixel in [0, 1]
(documented in docs/performance.md, tested in ``tests/data/test_frame_cache.py``). ``resolution=None`` keeps the
decoded frames as they are: bit-identical tensors, more memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.datasets.video_utils import decode_video_frames
from tqdm import tqdm

from vla_pipeline.data.contract import Contract, load_contract
from vla_pipeline.data.features import read_cameras
from vla_pipeline.data.metadata import load_metadata
from vla_pipeline.data.tables import load_image_bytes, load_rows_by_index
from vla_pipeline.errors import ArtifactError, TrainInputError, read_json_artifact
from vla_pipeline.params import at_least, param
from vla_pipeline.provenance import compute_dataset_fingerprint, find_data_mismatch, sha256_file
from vla_pipeline.store import FRAME_CACHE_DIR, file_lock, resolve_store

log = logging.getLogger(__name__)

FRAME_CACHE_MANIFEST_FILE = "manifest.json"


FORMAT_VERSION = 1


BLOCK = 32  # frames decoded per call: bounded memory at 640x480 and beyond


FULL_RESOLUTION = (224, 224)  # LeRobot's PI05Config.image_resolution


ROUNDING_TOLERANCE = 0.5 / 255 + 1e-6  # max |cache - decode| per pixel in [0, 1] when frames are resized


@dataclass(frozen=True)
class FrameCacheConfig:
    dataset_root: Path
    contract_path: Path
    out_dir: Path
    enable: bool = True
    resolution: tuple[int, int] | None = (224, 224)  # the policy's image_resolution; None: native frames
    num_workers: int = 1  # decoding processes
    exclude_episodes: tuple[int, ...] | None = ()  # not decoded (rows stay zero; a video may be broken)
    report_path: Path | None = None  # exclude_episodes None: the exclusions this validation report recorded
    store: Path | None = None  # frames in <store>/frame_cache/<entry>, shared; None: in out_dir itself

    def __post_init__(self) -> None:
        at_least(self.num_workers, 0, "frame_cache.num_workers")

    @classmethod
    def from_params(cls, p: dict) -> FrameCacheConfig:
        """``frame_cache.*``, the dataset, and the policy's image resolution (``policy.size`` and, for the
        tiny model, ``policy.dims.vision.image_size``) unless ``frame_cache.resize`` is false."""
        size = param(p, "policy.size", str)
        image_size = param(p, "policy.dims.vision.image_size", int) if size == "tiny" else None
        resolution = (image_size, image_size) if image_size else FULL_RESOLUTION
        return cls(
            dataset_root=param(p, "dataset.root", Path), contract_path=param(p, "dataset.contract", Path),
            out_dir=param(p, "frame_cache.dir", Path), enable=param(p, "frame_cache.enable", bool),
            resolution=resolution if param(p, "frame_cache.resize", bool) else None,
            num_workers=param(p, "frame_cache.num_workers", int),
            exclude_episodes=None, report_path=param(p, "validate.report", Path),  # carried by the report
            store=resolve_store(param(p, "base.store")),
        )


def compute_resized_shape(height: int, width: int, target: tuple[int, int] | None) -> tuple[int, int]:
    """The (h, w) that LeRobot's ``resize_with_pad_torch`` resizes a frame to before padding."""
    if target is None:
        return height, width
    ratio = max(width / target[1], height / target[0])
    return int(height / ratio), int(width / ratio)


def compute_resized_frames(frames: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(n, 3, h, w) float frames in [0, 1] -> (n, 3, *shape) uint8, by Pi0.5's bilinear resize
    (``F.interpolate``, ``align_corners=False``, as ``resize_with_pad_torch`` calls it)."""
    if tuple(frames.shape[-2:]) != tuple(shape):
        frames = F.interpolate(frames, size=shape, mode="bilinear", align_corners=False)
    return (frames * 255).round().clamp(0, 255).to(torch.uint8)


def camera_file(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / f"{key}.u8"


class _EpisodeBlocks(torch.utils.data.Dataset):
    """(camera, episode, block of frames) decoded with LeRobot's decoder: a DataLoader spreads the
    blocks over worker processes while the main process writes the memory-mapped files."""

    def __init__(self, meta, cameras: list[str], tolerance_s: float, shapes: dict[str, tuple[int, int]],
                 exclude: tuple[int, ...] = (), rows: frozenset[int] | None = None):
        self.root, self.tolerance_s, self.shapes = Path(meta.root), tolerance_s, shapes
        self.meta = meta  # LeRobot's metadata of the dataset, read once by the caller
        self.cameras = read_cameras(meta.info, cameras)
        # frame i of an episode sits at i / fps in its video (a wall-clock `timestamp` column would miss it)
        self.timestamps = load_rows_by_index(self.root, {})["frame_index"].astype(np.float64) / self.meta.fps
        self.blocks = []
        for ep in sorted(set(range(self.meta.total_episodes)) - set(exclude)):
            e = self.meta.episodes[ep]
            lo, hi = int(e["dataset_from_index"]), int(e["dataset_to_index"])
            for key in cameras:
                path = self.root / self.meta.get_video_file_path(ep, key) if self.is_video(key) else None
                if path is not None and not path.is_file():
                    raise TrainInputError(f"episode {ep}: video file {path} ({key}) does not exist; restore it, or add "
                                          f"the episode to dataset.exclude_episodes and re-run `dvc repro`")
                if rows is None:
                    self.blocks += [(key, ep, s, min(s + BLOCK, hi)) for s in range(lo, hi, BLOCK)]
                else:  # only these rows (validation's dry run), each decoded as the build decodes it
                    self.blocks += [(key, ep, r, r + 1) for r in sorted(rows) if lo <= r < hi]

    def __len__(self) -> int:
        return len(self.blocks)

    def is_video(self, key: str) -> bool:
        return self.cameras[key].storage == "video"

    def __getitem__(self, i: int):
        key, ep, lo, hi = self.blocks[i]
        if self.is_video(key):
            e = self.meta.episodes[ep]
            ts = [float(e[f"videos/{key}/from_timestamp"]) + float(t) for t in self.timestamps[lo:hi]]
            source = self.root / self.meta.get_video_file_path(ep, key)
            frames = decode_video_frames(source, ts, self.tolerance_s, "pyav")
        else:  # an image feature: encoded frames in the data files
            source = self.root / "data"
            frames = decode_image_frames(load_image_bytes(self.root, key, lo, hi))
        if tuple(frames.shape[1:]) != self.cameras[key].chw:
            raise TrainInputError(f"episode {ep}: {source} ({key}) decodes to frames of {tuple(frames.shape[1:])} "
                                  f"(C, H, W), meta/info.json declares {self.cameras[key].chw}; correct "
                                  f"features.{key}.shape and names, then run `vla validate`")
        return key, lo, hi, compute_resized_frames(frames, self.shapes[key])


def decode_image_frames(encoded: list[bytes]) -> torch.Tensor:
    """(n, 3, H, W) float frames in [0, 1] from PNG/JPEG bytes, as LeRobot's ``hf_transform_to_torch`` reads an
    image feature (PIL, RGB, ``ToTensor``)."""
    import io

    from PIL import Image

    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def save_frame_cache(cfg: FrameCacheConfig) -> Path:
    """Decode every camera frame once. Without a store: into ``cfg.out_dir``. With a store: into the
    store's entry for this dataset version, resolution, cameras and exclusions, built once (a file lock
    makes a second builder wait, then reuse it) and shared by every experiment; ``cfg.out_dir`` then holds
    only the manifest, naming the entry. Atomic either way (a ``.tmp`` dir renamed at the end). Disabled:
    only a manifest saying so, so the stage still has its output."""
    out = Path(cfg.out_dir)
    if cfg.exclude_episodes is None:
        cfg = dataclasses.replace(cfg, exclude_episodes=read_recorded_exclusions(
            cfg.report_path, cfg.dataset_root, cfg.contract_path))
    if cfg.enable and cfg.store is not None:
        _build(out, lambda tmp: _save_shared(cfg))
    else:
        _build(out, lambda tmp: _frames_manifest(cfg, tmp))
    return out


def read_recorded_exclusions(report_path: Path | None, dataset_root: Path, contract_path: Path) -> tuple[int, ...]:
    """The episodes the validation report says were excluded (``dataset.exclude_episodes`` is read by the
    validate stage only; the report carries it to the stages after it), read through the one checked
    read-back: a failed report, or one of another dataset version or contract, is refused (nothing is
    decoded, no store entry is made)."""
    from vla_pipeline.data.validation_report import load_report

    path = Path(report_path) if report_path is not None else None
    if path is None or not path.is_file():
        raise TrainInputError(f"validation report {path} not found: the frame cache leaves out the episodes it "
                              f"excluded; run `dvc repro validate` (or `vla validate`) first")
    return tuple(load_report(path, dataset_root, contract_path)["excluded_episodes"])


def _build(out: Path, fill) -> dict:
    """``out`` replaced atomically by a directory that ``fill(tmp)`` fills, plus the manifest it returns."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = fill(tmp)
    (tmp / FRAME_CACHE_MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


def _frames_manifest(cfg: FrameCacheConfig, tmp: Path, fingerprint: str | None = None,
                     rows: frozenset[int] | None = None) -> dict:
    manifest = {"format": FORMAT_VERSION, "enable": cfg.enable}
    if cfg.enable:
        contract = load_contract(cfg.contract_path)
        fingerprint = fingerprint or compute_dataset_fingerprint(cfg.dataset_root)
        manifest.update(_write_frames(cfg, contract, tmp, fingerprint, rows))
    return manifest


def save_sample_frame_cache(cfg: FrameCacheConfig, rows: frozenset[int]) -> LoadedFrameCache:
    """A frame cache in ``cfg.out_dir`` built by the same code as :func:`save_frame_cache` but holding only
    ``rows`` (global indices; the other rows stay zero): validation's dry run reads a run's first frames
    through the cache path without decoding the whole dataset. Never a store entry; not fingerprinted."""
    manifest = _build(Path(cfg.out_dir), lambda tmp: _frames_manifest(cfg, tmp, "dry-run sample", rows))
    return LoadedFrameCache(Path(cfg.out_dir), manifest)


def compute_entry_key(fingerprint: str, resolution: tuple[int, int] | None, cameras: list[str],
                      excluded: tuple[int, ...]) -> str:
    """The store entry's name: what decides the cached bytes (and nothing else)."""
    identity = {"format": FORMAT_VERSION, "dataset_fingerprint": fingerprint, "cameras": sorted(cameras),
                "resolution": list(resolution) if resolution else None, "excluded_episodes": sorted(excluded)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _save_shared(cfg: FrameCacheConfig) -> dict:
    contract = load_contract(cfg.contract_path)
    fingerprint = compute_dataset_fingerprint(cfg.dataset_root)
    key = compute_entry_key(fingerprint, cfg.resolution, list(contract.cameras.values()), cfg.exclude_episodes)
    entry = Path(cfg.store) / FRAME_CACHE_DIR / key
    with file_lock(entry.with_name(key + ".lock"), f"building the frame cache {entry}"):
        problem = verify_entry(entry)
        if problem is None:
            log.info(f"frame cache: reusing {entry} (same dataset version, resolution, cameras and exclusions)")
        else:
            log.info(f"frame cache: building {entry}" + (f" ({problem})" if entry.exists() else ""))
            _build(entry, lambda tmp: _frames_manifest(cfg, tmp, fingerprint))  # fingerprinted once
    manifest = read_json_artifact(entry / FRAME_CACHE_MANIFEST_FILE, "frame_cache")
    return {**manifest, "store_entry": key}


def verify_entry(entry: Path) -> str | None:
    """Why the store entry cannot be used (absent, unfinished, a file missing or of another shape), or None."""
    path = Path(entry) / FRAME_CACHE_MANIFEST_FILE
    if not path.is_file():
        return "not built"
    try:
        manifest = read_json_artifact(path, "frame_cache")
    except ArtifactError:
        return f"torn or not this project's ({FRAME_CACHE_MANIFEST_FILE} does not parse as a manifest)"
    for key, doc in manifest.get("cameras", {}).items():
        file = camera_file(Path(entry), key)
        try:
            shape = list(np.load(file, mmap_mode="r").shape)
        except (OSError, ValueError) as e:
            return f"{file} is unreadable ({e})"
        if shape != doc["shape"]:
            return f"{file} has shape {shape}, its manifest says {doc['shape']}"
    return None


def _write_frames(cfg: FrameCacheConfig, contract: Contract, tmp: Path, fingerprint: str,
                 rows: frozenset[int] | None = None) -> dict:
    meta = load_metadata(cfg.dataset_root)
    keys = list(contract.cameras.values())
    shapes = {key: compute_resized_shape(*camera.hw, cfg.resolution)
              for key, camera in read_cameras(meta.info, keys).items()}
    n = meta.total_frames
    maps = {k: np.lib.format.open_memmap(camera_file(tmp, k), mode="w+", dtype=np.uint8, shape=(n, 3, *shapes[k]))
            for k in keys}
    blocks = _EpisodeBlocks(meta, keys, contract.timestamp_tolerance_s, shapes, cfg.exclude_episodes, rows)
    decoded = sum(hi - lo for _, _, lo, hi in blocks.blocks)
    loader = torch.utils.data.DataLoader(blocks, batch_size=None, num_workers=cfg.num_workers)
    with tqdm(total=decoded, desc="frame cache", unit="frame", disable=rows is not None) as progress:
        for key, lo, hi, frames in loader:
            maps[key][lo:hi] = frames.numpy()
            progress.update(hi - lo)
    files = {}
    for key, mm in maps.items():
        mm.flush()
        del mm
        files[key] = {"shape": [n, 3, *shapes[key]], "sha256": sha256_file(camera_file(tmp, key))}
    return {"dataset_fingerprint": fingerprint, "resolution": list(cfg.resolution) if cfg.resolution else None,
            "resize": "pi05 resize_with_pad (bilinear, aspect kept, no pad), uint8 rounding" if cfg.resolution
            else "none (decoded frames)", "n_frames": n, "cameras": files,
            "excluded_episodes": sorted(cfg.exclude_episodes)}


@dataclass(frozen=True)
class LoadedFrameCache:
    directory: Path
    manifest: dict


def load_frame_cache(cache_dir: Path, fingerprint: str, resolution: tuple[int, int] | None,
                     store: Path | None = None, rebuild_from: tuple[Path, Path] | None = None) -> LoadedFrameCache:
    """The cache at ``cache_dir`` (or the store entry its manifest names), refused (with the command that
    rebuilds it) when it was made from another version of the dataset or with other resize settings than
    the policy's. A store entry that is gone (a cleaned store, another ``base.store``) is built again, the
    same bytes under the same lock, when ``rebuild_from`` gives (dataset root, contract path); else refused."""
    path = Path(cache_dir) / FRAME_CACHE_MANIFEST_FILE
    rebuild = "rebuild it with `dvc repro -f frame_cache` (or `vla frame-cache`)"
    if not path.is_file():
        raise TrainInputError(f"frame_cache.enable is true but {cache_dir} holds no frame cache; {rebuild}")
    manifest = read_json_artifact(path, "frame_cache", ("enable",))
    if not manifest.get("enable"):
        raise TrainInputError(f"{cache_dir} was built with frame_cache.enable: false; {rebuild}")
    if find_data_mismatch(manifest, fingerprint=fingerprint) == "dataset":
        raise TrainInputError(f"the frame cache in {cache_dir} was decoded from another version of the dataset; "
                              f"{rebuild}")
    cached = tuple(manifest["resolution"]) if manifest["resolution"] else None
    if cached is not None and cached != tuple(resolution or ()):
        raise TrainInputError(f"the frame cache in {cache_dir} was resized for {cached}, the policy takes "
                              f"{tuple(resolution or ())}; {rebuild}")
    directory = Path(cache_dir)
    if "store_entry" in manifest:
        directory = resolve_store(store) / FRAME_CACHE_DIR / manifest["store_entry"]
        problem = verify_entry(directory)
        if problem is not None and rebuild_from is not None:  # the store was cleaned, or is another one
            log.info(f"frame cache: {directory} is {problem}; building it again as the frame_cache stage did")
            with _rng_untouched():  # (a DataLoader draws its base seed): the run is the same either way
                rebuilt = _save_shared(FrameCacheConfig(
                    *rebuild_from, out_dir=Path(cache_dir), resolution=cached, num_workers=1,
                    exclude_episodes=tuple(manifest.get("excluded_episodes", ())), store=resolve_store(store)))
            problem = None if rebuilt["store_entry"] == manifest["store_entry"] else "not what the manifest names"
        if problem is not None:
            raise TrainInputError(f"{cache_dir} names the frame cache {directory}, which is {problem} (the store "
                                  f"was cleaned, or base.store points elsewhere); {rebuild}")
    return LoadedFrameCache(directory, manifest)


@contextlib.contextmanager
def _rng_untouched():
    """Python's, numpy's and torch's global random state as they were before."""
    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
