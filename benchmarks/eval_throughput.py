"""Evaluation throughput: evaluated frames/s of the offline protocol (video decoding, the
checkpoint's processors, LeRobot's chunked inference, postprocessing), for several batch sizes.

Writes a demo dataset (LeRobot's writer, the demo's 96x128 cameras), freezes its stats, trains
the policy for 2 steps (a real checkpoint of the chosen size; random init, no hub) and times
`predict_episodes` on the held-out episodes at every frame (stride 1) after one warm-up pass.

    python benchmarks/eval_throughput.py                                 # tiny, CPU
    python benchmarks/eval_throughput.py --size full --device cuda       # full size on a GPU
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from vla_pipeline.checkpoint import load_checkpoint
from vla_pipeline.contract import load_contract
from vla_pipeline.data import make_dataset
from vla_pipeline.demo import DemoConfig, make_demo_dataset
from vla_pipeline.inference import predict_episodes
from vla_pipeline.norms import NormsConfig, save_norm_stats
from vla_pipeline.train import TrainConfig, train
from vla_pipeline.validate import ValidateConfig, validate_dataset

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "lekiwi_arm.yaml"


def make_checkpoint(work: Path, size: str, device: str, episodes: int) -> tuple[Path, Path]:
    root = make_demo_dataset(DemoConfig(root=work / "demo", num_episodes=episodes))
    validate_dataset(ValidateConfig(root, CONTRACT, work / "report.json"))
    save_norm_stats(NormsConfig(root, CONTRACT, work / "norms", val_fraction=0.25))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["policy"]["size"] = size
    params["train"]["device"] = device
    cfg = TrainConfig.from_params(
        params, dataset_root=root, contract_path=CONTRACT, norms_dir=work / "norms",
        validation_report=work / "report.json", out_dir=work / "train", live_dir=work / "live",
        wandb_dir=work / "wandb", steps=2, batch_size=2, warmup_steps=1, decay_steps=2, num_workers=0,
        wandb_mode="disabled",
    )
    return train(cfg), root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--episodes", type=int, default=8, help="demo episodes (a quarter held out)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, root = make_checkpoint(Path(tmp), args.size, args.device, args.episodes)
        ckpt = load_checkpoint(checkpoint, device=args.device)
        dataset = make_dataset(root, load_contract(CONTRACT), ckpt.split["val"], ckpt.policy.config.chunk_size)
        predict_episodes(ckpt, dataset, 1, max(args.batch_sizes), 0, args.num_workers)  # warm-up
        device = torch.cuda.get_device_name() if args.device != "cpu" else f"{platform.processor() or 'CPU'}, " \
                                                                             f"{torch.get_num_threads()} threads"
        print(f"{args.size} Pi0.5 on {device}; {len(dataset)} held-out frames, stride 1")
        for batch_size in args.batch_sizes:
            t0 = time.perf_counter()
            preds = predict_episodes(ckpt, dataset, 1, batch_size, 0, args.num_workers)
            seconds = time.perf_counter() - t0
            print(f"batch {batch_size:>3}: {len(preds.pred)} frames in {seconds:.1f} s = "
                  f"{len(preds.pred) / seconds:.1f} evaluated frames/s")


if __name__ == "__main__":
    main()
