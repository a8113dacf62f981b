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
import logging
from pathlib import Path

import numpy as np
from lerobot.utils.constants import ACTION

from vla_pipeline.checkpoint.io import (
    load_checkpoint,
    pretrained_dir_of,
    read_checkpoint_state,
    require_verified,
)
from vla_pipeline.checkpoint.layout import CONTRACT_FILE
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import load_frame_cache
from vla_pipeline.data.sampler import resolve_num_workers
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.eval.episode_media import compute_media_roles, save_media
from vla_pipeline.eval.inference import predict_episodes
from vla_pipeline.eval.metrics import (
    Predictions,
    compute_episode_table,
    compute_metrics,
)
from vla_pipeline.eval.protocol import RANK_KEY, check_inputs, make_protocol, resolve_split, resolve_stride
from vla_pipeline.eval.reuse import find_reusable, reuse_evaluation
from vla_pipeline.norms import compute_split_id
from vla_pipeline.tracking import TrackingConfig, make_tracker

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig, reuse_from: Path | None = None) -> dict:
    """Evaluate one checkpoint on its held-out episodes; returns (and writes) ``metrics.json``.

    ``reuse_from``: the output directory of another evaluation; when it evaluated the same checkpoint
    (same directory and manifest) by the same protocol with the same code and data, its results are
    copied instead of evaluating again (``reuse_evaluation``); otherwise this evaluates as usual."""
    if reuse_from is not None:
        protocol, why_not = find_reusable(cfg, Path(reuse_from))
        if protocol is not None:
            require_verified(pretrained_dir_of(Path(cfg.checkpoint)), "reuse the results of this checkpoint")
            log.info("%s was evaluated by the same protocol in %s (same checkpoint manifest, config, code and "
                     "data): reusing its results, no second inference", cfg.checkpoint, reuse_from)
            return reuse_evaluation(cfg, Path(reuse_from), protocol)
        log.info("not reusing %s: %s; evaluating %s", reuse_from, why_not, cfg.checkpoint)
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
    args, kwargs = (stats, mode, joints, contract.ranges), {"stride": stride, "margin": cfg.saturation_margin}
    metrics, table = compute_metrics(preds, *args, **kwargs), compute_episode_table(preds, *args, **kwargs)
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
        save_media(tracker, out, dataset, preds, table, contract, stride=stride, videos=cfg.videos)
    finally:
        tracker.close()
    return metrics


def save_results(out: Path, metrics: dict, table: list[dict], preds: Predictions, protocol: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    with open(out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()} for r in table)
    np.savez_compressed(out / "predictions.npz", pred=preds.pred, target=preds.target, pad=preds.pad,
                        state=preds.state, episode=preds.episode, frame=preds.frame, task=np.asarray(preds.task))


def format_summary(metrics: dict, checkpoint: Path, out: Path, videos: bool = True) -> str:
    """A few lines for the terminal: what was evaluated, the headline metrics against holding the current
    joint positions, and where everything is (every metric is in ``metrics.json``, not on screen)."""
    out = Path(out)
    mse, hold, mean = metrics["action_mse"], metrics["baseline_hold_mse"], metrics["baseline_mean_mse"]
    verdict = (f"{mse / hold:.2f}x the hold baseline: the policy beats holding still" if mse < hold
               else "the policy does NOT beat holding the current joint positions") if hold > 0 else "hold baseline 0"
    joints = metrics.get("joints") or {}
    worst = max(joints, key=lambda j: joints[j]["rmse"]) if joints else None
    media = f"{out / 'videos'} (best/median/worst episode), " if videos else ""
    return "\n".join([
        f"evaluated {checkpoint} on {metrics['n_episodes']} held-out episodes ({metrics['n_frames']} frames, "
        f"split_id {metrics.get('split_id')})",
        f"action MSE {mse:.5g} vs {hold:.5g} holding the current joint positions, {mean:.5g} the mean action "
        f"({verdict}); normalized {metrics['action_mse_normalized']:.4g} vs {metrics['baseline_hold_mse_normalized']:.4g}",
        *([f"largest error: {worst} (RMSE {joints[worst]['rmse']:.4g}); actions outside the contract's ranges: "
           f"{metrics['saturation']['clip_count']}"] if worst else []),
        f"every metric: {out / 'metrics.json'}; per episode: {out / 'episodes.csv'}; media: {media}"
        f"{out / 'live' / 'plots' / 'images' / 'traces'} (traces)",
    ])

