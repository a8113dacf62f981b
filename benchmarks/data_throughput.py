"""Training data path: samples/s the training dataloader delivers, LeRobot's own path against ours.

For each dataset (the demo at 96x128, and a 640x480 two-camera dataset written by the same demo
generator) it times, with the same batch size, workers and shuffled order:

* ``lerobot``: ``LeRobotDataset`` with the action chunk as ``delta_timestamps`` in a DataLoader
  configured as ``lerobot_train`` configures it (video backend ``pyav``: LeRobot's default,
  torchcodec, needs system FFmpeg libraries that this machine lacks);
* ``ours, decode``: the train stage's loader (``ArmOnlyDataset`` over the same LeRobotDataset);
* ``ours, cache``: the train stage's loader over the decoded-frame cache (``frame_cache.enable``).

Each path runs with 0 and with ``--num-workers`` loader workers (decoding wants workers; the cache
is faster in-process, where no batch crosses a process boundary), and the speed-up compares each
path's best. It also reports the cache's build time and size on disk, and the memory of the loading
processes (proportional set size of main + workers, so shared pages count once).

    python benchmarks/data_throughput.py [--batches 30] [--batch-size 8] [--num-workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.demo import DemoConfig, make_demo_dataset
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import FrameCacheConfig, load_frame_cache, save_frame_cache
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.data.metadata import VIDEO_BACKEND
from vla_pipeline.data.sampler import make_loader
from vla_pipeline.data.tables import load_info
from vla_pipeline.provenance import compute_dataset_fingerprint

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "lekiwi_arm.yaml"
CHUNK = 50  # Pi0.5's default chunk_size


def pss_mib() -> float:
    """Proportional set size of this process and its children (loader workers)."""
    me = psutil.Process()
    return sum(p.memory_full_info().pss for p in [me, *me.children(recursive=True)]) / 2**20


def time_batches(batches, n: int) -> tuple[float, float]:
    """(samples/s over ``n`` batches after 2 warm-up batches, peak PSS in MiB while loading)."""
    for _ in range(2):
        next(batches)
    peak, samples = 0.0, 0
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(batches)
        samples += len(batch["task"])
        if samples % (8 * len(batch["task"])) == 0:
            peak = max(peak, pss_mib())
    rate = samples / (time.perf_counter() - t0)
    return rate, max(peak, pss_mib())


def lerobot_loader(root: Path, batch_size: int, num_workers: int):
    fps = load_info(root)["fps"]
    dataset = LeRobotDataset(repo_id=f"local/{root.name}", root=root,
                             delta_timestamps={"action": [i / fps for i in range(CHUNK)]}, video_backend=VIDEO_BACKEND)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         drop_last=False, prefetch_factor=2 if num_workers else None,
                                         generator=torch.Generator().manual_seed(0))
    while True:
        yield from loader


def bench(name: str, root: Path, work: Path, args) -> None:
    contract = load_contract(CONTRACT)
    episodes = list(range(load_info(root)["total_episodes"]))
    t0 = time.perf_counter()
    cache_dir = save_frame_cache(FrameCacheConfig(root, CONTRACT, work / f"cache_{name}",
                                                  resolution=tuple(args.resolution), num_workers=args.num_workers))
    build_s = time.perf_counter() - t0
    cache = load_frame_cache(cache_dir, compute_dataset_fingerprint(root), tuple(args.resolution))
    size_mib = sum(f.stat().st_size for f in cache_dir.iterdir()) / 2**20
    paths = {
        "lerobot (LeRobotDataset, pyav)": lambda w: lerobot_loader(root, args.batch_size, w),
        "ours, decode": lambda w: make_loader(make_dataset(root, contract, episodes, CHUNK), args.batch_size, 0, w),
        "ours, cache": lambda w: make_loader(make_episode_dataset(root, contract, episodes, CHUNK, cache),
                                            args.batch_size, 0, w),
    }
    results = {(label, w): time_batches(make(w), args.batches) for label, make in paths.items()
               for w in sorted({0, args.num_workers})}
    best = {label: max(rate for (lab, _), (rate, _) in results.items() if lab == label) for label in paths}
    base = best["lerobot (LeRobotDataset, pyav)"]
    frames = load_info(root)["total_frames"]
    print(f"\n{name}: {frames} frames, 2 cameras; cache {size_mib:.1f} MiB on disk "
          f"({size_mib * 2**20 / frames / 2:,.0f} B per camera frame at {tuple(args.resolution)}), built in {build_s:.1f} s")
    for (label, workers), (rate, peak) in results.items():
        print(f"  {label:<32} {workers} workers {rate:8.1f} samples/s  peak PSS {peak:,.0f} MiB")
    for label, rate in best.items():
        print(f"  best {label:<27} {rate:8.1f} samples/s  x{rate / base:5.1f} vs LeRobot's best")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per path (after 2 warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--resolution", type=int, nargs=2, default=[224, 224], help="cache resize target (Pi0.5's)")
    parser.add_argument("--large-episodes", type=int, default=6, help="episodes of the 640x480 dataset")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; batch {args.batch_size}, "
          f"{args.num_workers} workers, chunk {CHUNK}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = make_demo_dataset(DemoConfig(root=work / "demo"))
        bench("demo 96x128", demo, work, args)
        large = make_demo_dataset(DemoConfig(root=work / "large", num_episodes=args.large_episodes, min_length=40,
                                             max_length=60, image_height=480, image_width=640))
        bench("640x480", large, work, args)


if __name__ == "__main__":
    main()
