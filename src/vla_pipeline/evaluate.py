"""Offline evaluation of one checkpoint, by one protocol for every checkpoint.

The checkpoint runs the way it runs on the robot (its own saved processors, LeRobot's chunked
inference, a fixed noise seed) on its own held-out episodes; the predicted chunks are compared
with the demonstrations (``metrics``), the representative episodes are drawn (``media``), and
everything is logged through the tracker (dvclive + W&B). Outputs in ``out_dir``:

* ``metrics.json``: every metric (DVC metrics); ``episodes.csv``: one row per episode;
* ``protocol.json``: what was evaluated, how; ``predictions.npz``: the raw chunks, for analysis;
* ``videos/<role>.mp4``: camera frames beside the moving traces, of the best/median/worst episode (which
  episode each is: ``protocol.json``'s ``media``);
* ``live/plots/images/traces/<role>.png``: per-joint traces (``dvc plots show``).

An evaluation can reuse another one's outputs (``evaluate(cfg, reuse_from=...)``) when that one
evaluated the same checkpoint (directory and manifest hash) by the same protocol, code and data:
the stage ``evaluate@last`` does so with ``evaluate@best`` when the best checkpoint is the last.
"""


from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_IMAGES

from vla_pipeline.checkpoint.io import (
    LoadedCheckpoint,
    compute_checkpoint_id,
    load_checkpoint,
    pretrained_dir_of,
    read_checkpoint_state,
    require_verified,
)
from vla_pipeline.checkpoint.layout import CONTRACT_FILE, MANIFEST_FILE
from vla_pipeline.data.cached import FrameCacheSource
from vla_pipeline.data.contract import Contract, load_contract
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import load_frame_cache
from vla_pipeline.data.sampler import resolve_num_workers
from vla_pipeline.errors import CheckpointError, ConfigError
from vla_pipeline.inference import predict_episodes
from vla_pipeline.media import EpisodeFigure, decode_video_frames, prefetch, save_video
from vla_pipeline.metrics import (
    Predictions,
    compute_episode_table,
    compute_executed,
    compute_metrics,
    pick_representative,
)
from vla_pipeline.norms import compute_split_hash, compute_split_id, load_split
from vla_pipeline.params import at_least, int_or_auto, param
from vla_pipeline.provenance import compute_dataset_fingerprint, compute_source_hash
from vla_pipeline.store import WANDB_DIR, resolve_store
from vla_pipeline.tracking import TrackingConfig, make_tracker

RANK_KEY = "action_mse_normalized"  # what best/median/worst episode means


TRACES_DIR = "live/plots/images/traces"  # where dvclive puts the trace PNGs (the stage's plots output)


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: Path
    dataset_root: Path
    out_dir: Path
    norms_dir: Path | None = None  # take the split from here instead of the checkpoint's own split.json
    stride: int | None = None  # replan every `stride` frames; None: the checkpoint's n_action_steps
    batch_size: int = 16
    noise_seed: int = 0
    device: str = "cpu"
    num_workers: int | str = 0  # "auto": sampler.resolve_num_workers
    saturation_margin: float = 0.01  # fraction of a joint's range counted as "at the limit"
    videos: bool = True
    wandb_mode: str = "offline"
    wandb_project: str = "vla-pipeline"
    wandb_dir: Path | None = None  # None: out_dir/wandb
    frame_cache: Path | None = None  # read camera frames from this decoded-frame cache instead of the videos
    store: Path | None = None  # where a frame cache's manifest points (base.store); None: auto

    def __post_init__(self) -> None:
        if self.stride is not None:
            at_least(self.stride, 1, "evaluate.stride")
        at_least(self.batch_size, 1, "evaluate.batch_size")
        if self.num_workers != "auto":
            at_least(self.num_workers, 0, "evaluate.num_workers")

    @classmethod
    def from_params(cls, p: dict, checkpoint: Path, out_dir: Path) -> EvaluateConfig:
        stride = param(p, "evaluate.stride")
        store = resolve_store(param(p, "base.store"))
        wandb_dir = param(p, "evaluate.wandb.dir")
        return cls(
            checkpoint=Path(checkpoint), dataset_root=param(p, "dataset.root", Path), out_dir=Path(out_dir),
            stride=None if stride is None else param(p, "evaluate.stride", int),
            batch_size=param(p, "evaluate.batch_size", int), noise_seed=param(p, "evaluate.noise_seed", int),
            device=param(p, "evaluate.device", str), num_workers=param(p, "evaluate.num_workers", int_or_auto),
            saturation_margin=param(p, "evaluate.saturation_margin", float),
            videos=param(p, "evaluate.videos", bool), wandb_mode=param(p, "evaluate.wandb.mode", str),
            wandb_project=param(p, "evaluate.wandb.project", str), wandb_dir=Path(wandb_dir) if wandb_dir else store / WANDB_DIR,
            frame_cache=param(p, "frame_cache.dir", Path) if param(p, "frame_cache.enable", bool) else None,
            store=store,
        )


def check_inputs(ckpt: LoadedCheckpoint, dataset_root: Path, split: dict) -> None:
    """The held-out episodes and the data must be the ones the checkpoint was trained against."""
    if ckpt.norm_stats["split_hash"] != compute_split_hash(split):
        raise CheckpointError(
            f"the episode split given for evaluation differs from the one {ckpt.directory} was trained with; "
            f"evaluating on it could score training episodes. Leave out --norms (the checkpoint's own split), "
            f"or pass the norms dir of that run"
        )
    if ckpt.norm_stats["dataset_fingerprint"] != compute_dataset_fingerprint(dataset_root):
        raise CheckpointError(f"{dataset_root} is not the dataset version {ckpt.directory} was trained on; "
                              f"evaluate with the dataset the checkpoint's norm_stats.json names")
    if not split["val"]:
        raise ConfigError(f"{ckpt.directory} was trained without validation episodes: nothing is held out "
                          f"to evaluate on (set norms.val_fraction or norms.val_episodes and retrain)")


def resolve_split(ckpt: LoadedCheckpoint, norms_dir: Path | None) -> dict:
    if norms_dir is not None:
        return load_split(norms_dir)
    if ckpt.split is None:
        raise CheckpointError(f"{ckpt.directory} has no split.json (saved before checkpoints carried their "
                              f"split); pass the norms dir it was trained with (--norms DIR)")
    return ckpt.split


def resolve_stride(stride: int | None, config) -> int:
    """The replanning interval; at most a chunk, so every frame has an executed action."""
    stride = config.n_action_steps if stride is None else stride
    if stride > config.chunk_size:
        raise ConfigError(f"evaluate.stride = {stride} exceeds the checkpoint's chunk_size {config.chunk_size}: "
                          f"frames between chunks would have no action. Use a stride <= {config.chunk_size}")
    return stride


def evaluate(cfg: EvaluateConfig, reuse_from: Path | None = None) -> dict:
    """Evaluate one checkpoint on its held-out episodes; returns (and writes) ``metrics.json``.

    ``reuse_from``: the output directory of another evaluation; when it evaluated the same checkpoint
    (same directory and manifest) by the same protocol with the same code and data, its results are
    copied instead of evaluating again (``reuse_evaluation``); otherwise this evaluates as usual."""
    if reuse_from is not None:
        protocol, why_not = find_reusable(cfg, Path(reuse_from))
        if protocol is not None:
            require_verified(pretrained_dir_of(Path(cfg.checkpoint)), "reuse the results of this checkpoint")
            print(f"{cfg.checkpoint} was evaluated by the same protocol in {reuse_from} "
                  f"(same checkpoint manifest, config, code and data): reusing its results, no second inference")
            return reuse_evaluation(cfg, Path(reuse_from), protocol)
        print(f"not reusing {reuse_from}: {why_not}; evaluating {cfg.checkpoint}")
    ckpt = load_checkpoint(cfg.checkpoint, device=cfg.device)
    split = resolve_split(ckpt, cfg.norms_dir)
    check_inputs(ckpt, cfg.dataset_root, split)
    contract = load_contract(ckpt.directory / CONTRACT_FILE)
    config = ckpt.policy.config
    stride = resolve_stride(cfg.stride, config)
    cache = None if cfg.frame_cache is None else load_frame_cache(
        cfg.frame_cache, ckpt.norm_stats["dataset_fingerprint"], tuple(config.image_resolution), cfg.store,
        rebuild_from=(cfg.dataset_root, ckpt.directory / CONTRACT_FILE))
    dataset = make_episode_dataset(cfg.dataset_root, contract, split["val"], config.chunk_size, cache)
    workers = resolve_num_workers(cfg.num_workers, cache is not None)
    preds = predict_episodes(ckpt, dataset, stride, cfg.batch_size, cfg.noise_seed, workers)
    stats, mode = ckpt.norm_stats["features"][ACTION], config.normalization_mapping["ACTION"].value
    joints = list(contract.joints)
    args = (stats, mode, joints, contract.ranges, stride, cfg.saturation_margin)
    metrics, table = compute_metrics(preds, *args), compute_episode_table(preds, *args)
    metrics["split_id"] = compute_split_id(split)  # equal split_id: evaluated on the same episodes
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocol = {**make_protocol(cfg, ckpt, stride, split), "media": compute_media_roles(table)}
    save_results(out, metrics, table, preds, protocol)
    tracker = make_tracker(TrackingConfig(
        live_dir=out / "live", wandb_dir=cfg.wandb_dir or out / "wandb", wandb_project=cfg.wandb_project,
        wandb_mode=cfg.wandb_mode, run_key=read_checkpoint_state(ckpt).get("run_key", ""), job_type="evaluate",
    ))
    try:
        tracker.log_config(protocol)
        tracker.log_summary(metrics)
        tracker.log_table("episodes", table, x="episode_index", y=RANK_KEY)
        save_media(tracker, out, dataset, preds, table, contract, stride, cfg.videos)
    finally:
        tracker.close()
    return metrics


def make_protocol(cfg: EvaluateConfig, ckpt: LoadedCheckpoint, stride: int, split: dict) -> dict:
    """What was evaluated and how: enough to reproduce the numbers."""
    config = ckpt.policy.config
    return {
        "checkpoint": str(ckpt.directory), "step": read_checkpoint_state(ckpt).get("step"),
        "dataset_root": str(cfg.dataset_root),
        "dataset_fingerprint": ckpt.norm_stats["dataset_fingerprint"], "val_episodes": split["val"],
        "stride": stride, "chunk_size": config.chunk_size, "n_action_steps": config.n_action_steps,
        "num_inference_steps": config.num_inference_steps, "noise_seed": cfg.noise_seed,
        "saturation_margin": cfg.saturation_margin, "rank_episodes_by": RANK_KEY,
        "checkpoint_manifest_sha256": compute_checkpoint_id(ckpt), "code_sha256": compute_source_hash(),
        "config": _config_doc(cfg),
    }


def _config_doc(cfg: EvaluateConfig) -> dict:
    """The config, less this machine's paths outside the repo (the store, W&B files)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k not in MACHINE_PATHS}


MACHINE_PATHS = {"store", "wandb_dir"}


# EvaluateConfig fields that change where results go or how fast they come, never what they are
NOT_PROTOCOL = {"out_dir", "num_workers", "wandb_mode", "wandb_project", "wandb_dir", "store"}


REUSED_FILES = ("metrics.json", "episodes.csv", "predictions.npz")


def find_reusable(cfg: EvaluateConfig, source: Path) -> tuple[dict | None, str]:
    """(``source``'s protocol, "") when the evaluation in ``source`` is the one ``cfg`` asks for: the same
    checkpoint directory and manifest, every protocol setting, this code and the dataset it names, with
    all its outputs present; else (None, why not)."""
    path = source / "protocol.json"
    if not path.is_file():
        return None, f"{path} not found"
    try:
        protocol = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path} is unreadable ({e})"
    if not isinstance(protocol, dict):
        return None, f"{path} is not an evaluation protocol"
    if Path(protocol.get("checkpoint", "")).resolve() != pretrained_dir_of(cfg.checkpoint).resolve():
        return None, f"it evaluated {protocol.get('checkpoint')}, not {pretrained_dir_of(cfg.checkpoint)}"
    checkpoint_id = compute_checkpoint_id(cfg.checkpoint)
    if checkpoint_id is None or protocol.get("checkpoint_manifest_sha256") != checkpoint_id:
        return None, (f"the checkpoint's {MANIFEST_FILE} is not the one it evaluated (or either is missing): "
                      f"the checkpoint changed since")
    if protocol.get("code_sha256") != compute_source_hash():
        return None, "another version of vla_pipeline produced it"
    mine, theirs = _config_doc(cfg), protocol.get("config", {})
    differ = sorted(k for k in mine.keys() | theirs.keys() if k not in NOT_PROTOCOL and mine.get(k) != theirs.get(k))
    if differ:
        return None, f"its evaluation settings differ: {', '.join(f'{k} {theirs.get(k)!r} vs {mine.get(k)!r}' for k in differ)}"
    missing = [name for name in REUSED_FILES if not (source / name).is_file()]
    pngs = sorted((source / TRACES_DIR).glob("*.png"))
    if not pngs:
        missing.append(f"{TRACES_DIR}/*.png")
    if cfg.videos and sorted(p.stem for p in (source / "videos").glob("*.mp4")) != [p.stem for p in pngs]:
        missing.append("videos/*.mp4 (one per trace PNG)")
    if missing:
        return None, f"its outputs are incomplete ({', '.join(missing)} missing)"
    if compute_dataset_fingerprint(cfg.dataset_root) != protocol.get("dataset_fingerprint"):
        return None, f"{cfg.dataset_root} is not the dataset version it evaluated"
    return protocol, ""


def reuse_evaluation(cfg: EvaluateConfig, source: Path, protocol: dict) -> dict:
    """``cfg.out_dir`` as a complete evaluation copied from ``source`` (``find_reusable`` said it is the
    same one): byte-identical metrics, episode table, predictions, trace PNGs and videos; the protocol
    says where it came from; dvclive and W&B get what ``evaluate`` logs."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in REUSED_FILES:
        shutil.copyfile(source / name, out / name)
    if cfg.videos:
        shutil.rmtree(out / "videos", ignore_errors=True)
        shutil.copytree(source / "videos", out / "videos")
    protocol = {**protocol, "config": _config_doc(cfg), "reused_from": str(source)}
    (out / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "episodes.csv", newline="") as f:
        table = [{k: v if k == "task" else _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    fps = load_contract(pretrained_dir_of(cfg.checkpoint) / CONTRACT_FILE).fps
    tracker = make_tracker(TrackingConfig(
        live_dir=out / "live", wandb_dir=cfg.wandb_dir or out / "wandb", wandb_project=cfg.wandb_project,
        wandb_mode=cfg.wandb_mode, run_key=read_checkpoint_state(cfg.checkpoint).get("run_key", ""),
        job_type="evaluate",
    ))
    try:
        tracker.log_config(protocol)
        tracker.log_summary(metrics)
        tracker.log_table("episodes", table, x="episode_index", y=RANK_KEY)
        for png in sorted((source / TRACES_DIR).glob("*.png")):
            tracker.log_image(f"traces/{png.stem}", png)
            if cfg.videos:
                tracker.log_video(f"videos/{png.stem}", out / "videos" / f"{png.stem}.mp4", fps)
    finally:
        tracker.close()
    return metrics


def _number(text: str):
    """A value of episodes.csv as ``save_results`` wrote it: int, float or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def save_results(out: Path, metrics: dict, table: list[dict], preds: Predictions, protocol: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    with open(out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()} for r in table)
    np.savez_compressed(out / "predictions.npz", pred=preds.pred, target=preds.target, pad=preds.pad,
                        state=preds.state, episode=preds.episode, frame=preds.frame, task=np.asarray(preds.task))


def compute_media_roles(table: list[dict]) -> dict[str, int]:
    """The episode behind each media file, by role (``best``, ``median``, ``worst``; protocol.json's
    ``media``). Files are named by role, so a new evaluation replaces them instead of adding to them; with
    fewer than three episodes the median is the best one and has no files of its own."""
    roles = pick_representative(table, RANK_KEY)
    return {role: ep for role, ep in roles.items() if role == "best" or ep != roles["best"]}


def save_media(tracker, out: Path, dataset, preds: Predictions, table: list[dict], contract: Contract,
               stride: int, videos: bool) -> None:
    """Per-joint traces (PNG) and a video (MP4) of the best, median and worst episode."""
    executed = compute_executed(preds, stride)
    by_episode = {r["episode_index"]: r for r in table}
    joints = list(contract.joints)
    roles = compute_media_roles(table)
    shapes = camera_shapes(dataset, roles["best"]) if videos else {}
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
    features = dataset.dataset.meta.info["features"]
    return all(features[key]["dtype"] == "video" for key in dataset.contract.cameras.values())


def camera_shapes(dataset, episode: int) -> dict[str, tuple[int, int]]:
    """(h, w) of each camera's frames as ``load_media_frames`` reads them (policy camera names)."""
    cameras = dataset.contract.cameras
    if _decodes_videos(dataset):
        features = dataset.dataset.meta.info["features"]
        return {name: tuple(features[key]["shape"][:2]) for name, key in cameras.items()}
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
