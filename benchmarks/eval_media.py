"""Evaluation media cost: how much of one full ``evaluate()`` goes to the trace PNGs and the MP4s
of the best, median and worst episode, against inference and metrics, at a real camera size.

Writes a demo dataset with LeRobot's writer at 640x480 (two AV1 cameras; LeRobot encodes at about
11 frames/s on 2 cores, so the default is 6 episodes of 60 frames), freezes its stats with half the
episodes held out (so best, median and worst are three different episodes), trains the tiny policy
for 2 steps (a real checkpoint, random init, no hub) and times ``evaluate()`` as the stage runs it
(videos on; W&B off unless --wandb), split by wrapping the functions it calls:

* inference: ``predict_episodes`` (decoding the queried frames, processors, chunked inference);
* media: ``save_media`` as a whole; in it the figures and trace PNGs, and the MP4s (camera frames,
  drawing, H.264 encoding; after this change these three run in overlapping threads);
* the rest: loading the checkpoint, checks, metrics, result files, tracker start and close.

The media share depends on how many frames are drawn (3 episodes) per frame evaluated: --stride 1
(the default here) evaluates every held-out frame, 1 drawn frame per evaluated frame with the 3
held-out episodes all drawn; the evaluation stride 10 of the checkpoint (--stride 10) makes it 10.
A real dataset holds out many more episodes than the 3 drawn (the reported 6.5-minute evaluation
drew ~0.5 frame per evaluated one).

    python benchmarks/eval_media.py                       # 640x480, videos decoded (no frame cache)
    python benchmarks/eval_media.py --stride 10           # the checkpoint's stride: 10 drawn per evaluated
    python benchmarks/eval_media.py --frame-cache         # camera frames from the (resized) frame cache
    python benchmarks/eval_media.py --wandb offline       # W&B offline too, as params.yaml's default
    python benchmarks/eval_media.py --work /tmp/media     # keep (and next time reuse) dataset and checkpoint
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

import vla_pipeline.eval.episode_media as episode_media
import vla_pipeline.eval.media as media
import vla_pipeline.eval.run as ev
from vla_pipeline.checkpoint.layout import LAST_FILE, find_last
from vla_pipeline.data.demo import DemoConfig, make_demo_dataset
from vla_pipeline.data.frame_cache import FrameCacheConfig, save_frame_cache

from _checkpoint import CONTRACT, REPO, make_checkpoint

# (part, module, name in it) timed at call time; names a version of the code lacks are skipped
PARTS = [
    ("inference", ev, "predict_episodes"),
    ("media", ev, "save_media"),
    ("media: figures and trace PNGs", media, "save_trace_plot"),  # before: one figure per PNG, another per video
    ("media: figures and trace PNGs", media, "EpisodeFigure.show"),  # after: one figure, drawn once per episode
    ("media: figures and trace PNGs", media, "EpisodeFigure.save_traces"),
    ("media: figures and trace PNGs", episode_media, "EpisodeFigure"),
]
MP4 = "media: MP4s (camera frames, drawing, H.264)"  # the rest of the media time
REST = "rest (checkpoint, metrics, files, tracker)"


def make_checkpoint_at_size(work: Path, args) -> tuple[Path, Path]:
    root = make_demo_dataset(DemoConfig(root=work / "demo", num_episodes=args.episodes, min_length=args.length,
                                        max_length=args.length, image_height=args.height, image_width=args.width))
    return make_checkpoint(root, work, args.val_fraction), root


def timed(times: dict, part: str, fn):
    """``fn`` adding its seconds to ``times[part]``; a generator's time is counted as it is consumed."""
    def consume(gen):
        while True:
            t0 = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                return
            finally:
                times[part] += time.perf_counter() - t0
            yield item

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            result = fn(*a, **kw)
        finally:
            times[part] += time.perf_counter() - t0
        return consume(result) if inspect.isgenerator(result) else result
    return wrapper


def run_once(cfg: ev.EvaluateConfig) -> dict[str, float]:
    """Seconds of one ``evaluate(cfg)`` in total and per part."""
    times: dict[str, float] = defaultdict(float)
    patched = []  # (owner, attribute, original)
    for part, module, name in PARTS:
        owner, *path = [module, *name.split(".")]
        for attr in path[:-1]:
            owner = getattr(owner, attr, None)
        if owner is not None and hasattr(owner, path[-1]):
            original = getattr(owner, path[-1])
            patched.append((owner, path[-1], original))
            setattr(owner, path[-1], timed(times, part, original))
    try:
        t0 = time.perf_counter()
        ev.evaluate(cfg)
        times["total"] = time.perf_counter() - t0
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)
    times[MP4] = times["media"] - times["media: figures and trace PNGs"]
    times[REST] = times["total"] - times["inference"] - times["media"]
    return times


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return f"{platform.machine()} {platform.processor() or 'CPU'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--length", type=int, default=60, help="frames per episode")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--val-fraction", type=float, default=0.5, help="held-out share of the episodes")
    parser.add_argument("--stride", type=int, default=1, help="evaluate.stride (0: the checkpoint's, 10)")
    parser.add_argument("--num-workers", default="auto", help="evaluate.num_workers")
    parser.add_argument("--wandb", default="disabled", choices=["disabled", "offline"])
    parser.add_argument("--frame-cache", action="store_true",
                        help="camera frames from the frame cache, resized for the policy as the stage builds it")
    parser.add_argument("--repeat", type=int, default=2, help="timed evaluations (the first also warms up)")
    parser.add_argument("--work", help="keep the dataset and checkpoint here and reuse them on the next run "
                                       "(default: a temporary directory); the evaluations go to <work>/eval<i>")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t0 = time.perf_counter()
        if args.work and (work / "train" / LAST_FILE).is_file():  # made by an earlier run with --work
            checkpoint, root = find_last(work / "train", LAST_FILE), work / "demo"
        else:
            checkpoint, root = make_checkpoint_at_size(work, args)
        cache = None
        if args.frame_cache:
            size = yaml.safe_load((REPO / "params.yaml").read_text())["policy"]["dims"]["vision"]["image_size"]
            cache = save_frame_cache(FrameCacheConfig(root, CONTRACT, work / "cache", resolution=(size, size)))
        print(f"dataset and checkpoint in {time.perf_counter() - t0:.0f} s")
        runs = []
        for i in range(args.repeat):
            cfg = ev.EvaluateConfig(
                checkpoint=checkpoint, dataset_root=root, out_dir=work / f"eval{i}", stride=args.stride or None,
                num_workers=args.num_workers if args.num_workers == "auto" else int(args.num_workers),
                videos=True, wandb_mode=args.wandb, wandb_dir=work / "wandb", frame_cache=cache,
            )
            runs.append(run_once(cfg))
        protocol = yaml.safe_load((work / "eval0" / "protocol.json").read_text())
        n_frames = args.length * len(protocol["val_episodes"])
        videos = sorted((work / "eval0" / "videos").glob("*.mp4"))
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    print(f"\n{machine}; tiny Pi0.5; {args.width}x{args.height}, 2 cameras, "
          f"{'frame cache' if cache else 'videos decoded'}, W&B {args.wandb}")
    evaluated = -(-args.length // protocol["stride"]) * len(protocol["val_episodes"])
    print(f"held-out: {len(protocol['val_episodes'])} episodes x {args.length} frames = {n_frames} frames, "
          f"stride {protocol['stride']}: {evaluated} evaluated; media: {len(videos)} episodes drawn "
          f"({args.length * len(videos)} MP4 frames, {args.length * len(videos) / evaluated:.1f} per evaluated frame)")
    parts = ["inference", "media", "media: figures and trace PNGs", MP4, REST, "total"]
    header = f"{'part':<46}" + "".join(f"{f'run {i + 1} s':>10}{'%':>7}" for i in range(len(runs)))
    print(header + "\n" + "-" * len(header))
    for part in parts:
        print(f"{part:<46}" + "".join(f"{r[part]:>10.2f}{100 * r[part] / r['total']:>6.1f}%" for r in runs))
    shares = sorted(100 * r["media"] / r["total"] for r in runs)
    print(f"\nmedia share of the evaluation: median {shares[len(shares) // 2]:.1f}% "
          f"(runs: {', '.join(f'{x:.1f}%' for x in shares)}); media {min(r['media'] for r in runs):.2f} s at best")


if __name__ == "__main__":
    main()
