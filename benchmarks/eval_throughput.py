"""Evaluation throughput: evaluated frames/s of the offline protocol (video decoding or the
decoded-frame cache, the checkpoint's processors, LeRobot's chunked inference, postprocessing),
for several batch sizes; and the latency of one action chunk at batch 1 (what the robot waits for
when ``select_action`` replans: preprocessor, ``predict_action_chunk``, postprocessor).

Writes a demo dataset (LeRobot's writer, the demo's 96x128 cameras), freezes its stats, trains
the policy for 2 steps (a real checkpoint of the chosen size; random init, no hub) and times
`predict_episodes` on the held-out episodes at every frame (stride 1) after one warm-up pass.

    python benchmarks/eval_throughput.py                                 # tiny, CPU
    python benchmarks/eval_throughput.py --size full --device cuda       # full size on a GPU
    python benchmarks/eval_throughput.py --frame-cache                   # also through the frame cache
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION

from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.demo import DemoConfig, make_demo_dataset
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import FrameCacheConfig, load_frame_cache, save_frame_cache
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.eval.inference import predict_episodes
from vla_pipeline.provenance import compute_dataset_fingerprint

from _checkpoint import CONTRACT, make_checkpoint


def make_demo_checkpoint(work: Path, size: str, device: str, episodes: int) -> tuple[Path, Path]:
    root = make_demo_dataset(DemoConfig(root=work / "demo", num_episodes=episodes))
    return make_checkpoint(root, work, 0.25, size, device), root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--episodes", type=int, default=8, help="demo episodes (a quarter held out)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--latency-samples", type=int, default=30, help="batch-1 chunks timed for the latency")
    parser.add_argument("--frame-cache", action="store_true", help="also time evaluation through the frame cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, root = make_demo_checkpoint(Path(tmp), args.size, args.device, args.episodes)
        ckpt = load_checkpoint(checkpoint, device=args.device)
        dataset = make_dataset(root, load_contract(CONTRACT), ckpt.split["val"], ckpt.policy.config.chunk_size)
        predict_episodes(ckpt, dataset, 1, max(args.batch_sizes), 0, args.num_workers)  # warm-up
        device = torch.cuda.get_device_name() if args.device != "cpu" else f"{platform.processor() or 'CPU'}, " \
                                                                             f"{torch.get_num_threads()} threads"
        print(f"{args.size} Pi0.5 on {device}; {len(dataset)} held-out frames, stride 1")
        datasets = {"videos": dataset}
        if args.frame_cache:
            resolution = tuple(ckpt.policy.config.image_resolution)
            cache = save_frame_cache(FrameCacheConfig(root, CONTRACT, Path(tmp) / "cache", resolution=resolution))
            loaded = load_frame_cache(cache, compute_dataset_fingerprint(root), resolution)
            datasets["frame cache"] = make_episode_dataset(root, load_contract(CONTRACT), ckpt.split["val"],
                                                           ckpt.policy.config.chunk_size, loaded)
        for source, data in datasets.items():
            for batch_size in args.batch_sizes:
                t0 = time.perf_counter()
                preds = predict_episodes(ckpt, data, 1, batch_size, 0, args.num_workers)
                seconds = time.perf_counter() - t0
                print(f"{source}, batch {batch_size:>3}: {len(preds.pred)} frames in {seconds:.1f} s = "
                      f"{len(preds.pred) / seconds:.1f} evaluated frames/s")
        latencies = chunk_latencies(ckpt, dataset, args.latency_samples, args.device)
        print(f"one action chunk at batch 1 ({ckpt.policy.config.chunk_size} actions, "
              f"{ckpt.policy.config.num_inference_steps} denoising steps): median {np.median(latencies) * 1e3:.1f} ms, "
              f"p90 {np.percentile(latencies, 90) * 1e3:.1f} ms over {len(latencies)} frames")


@torch.no_grad()
def chunk_latencies(ckpt, dataset, samples: int, device: str) -> list[float]:
    """Seconds per chunk at batch 1: the frame already decoded (the robot's camera gives it), then
    the checkpoint's preprocessor, ``predict_action_chunk`` and postprocessor, as ``select_action``."""
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    positions = np.linspace(0, len(dataset) - 1, samples + 1).round().astype(int)
    out = []
    for i, pos in enumerate(positions):
        item = dataset[int(pos)]
        obs = {k: (v[None] if isinstance(v, torch.Tensor) else [v]) for k, v in item.items() if k != ACTION}
        sync()
        t0 = time.perf_counter()
        ckpt.postprocessor(ckpt.policy.predict_action_chunk(ckpt.preprocessor(obs)))
        sync()
        if i:  # the first is a warm-up
            out.append(time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    main()
