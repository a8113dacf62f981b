"""Validation's dry run: how long it adds to `vla validate`, on the demo and on a 640x480 dataset.

For each dataset (the demo as params.yaml's `demo:` section writes it, 96x128; and a two-camera
640x480 dataset written by the same generator) it runs the validate stage's checks with and without
the dry run, for the demo's run shape (params.yaml: tiny policy at 112x112, frame cache on) and for a
full-size run's shape (224x224, what `vla validate` without a params file rehearses), and prints the
wall time of each and the dry run's own seconds and frames from the report.

    python benchmarks/dry_run.py [--repeats 3]

Run it alone: two torch processes on 2 cores slow each other 20-40x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from vla_pipeline.data.demo import DemoConfig, make_demo_dataset
from vla_pipeline.quiet import quiet_third_party
from vla_pipeline.train.dry_run import DryRunConfig, make_dry_run_check
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

REPO = Path(__file__).resolve().parents[1]


def time_validate(cfg: ValidateConfig, dry_run) -> tuple[float, dict]:
    started = time.perf_counter()
    validate_dataset(cfg, dry_run)
    seconds = time.perf_counter() - started
    return seconds, json.loads(Path(cfg.report_path).read_text())["checks"].get("dry_run", {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_third_party()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base = DemoConfig.from_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        datasets["demo 96x128"] = make_demo_dataset(replace(base, root=Path(tmp) / "demo"))
        datasets["640x480"] = make_demo_dataset(replace(base, root=Path(tmp) / "vga", image_height=480, image_width=640,
                                                        num_episodes=8))
        shapes = {"demo run (tiny, 112x112, cache on)": DryRunConfig.from_params(params),
                  "full-size shape (224x224, cache on)": DryRunConfig.full_size(params["policy"]["chunk_size"])}
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        for name, root in datasets.items():
            cfg = ValidateConfig(root, REPO / params["dataset"]["contract"], Path(tmp) / "report.json",
                                 min_episode_length=params["policy"]["chunk_size"])
            without = min(time_validate(cfg, None)[0] for _ in range(args.repeats))
            print(f"{name}: validate without the dry run {without:.2f} s (best of {args.repeats})")
            for shape, dry_cfg in shapes.items():
                runs = [time_validate(cfg, make_dry_run_check(dry_cfg)) for _ in range(args.repeats)]
                best = min(runs, key=lambda r: r[0])
                print(f"  + dry run, {shape}: validate {best[0]:.2f} s, dry run {best[1].get('seconds')} s "
                      f"for {best[1].get('frames')} frames ({best[1].get('status')})")


if __name__ == "__main__":
    main()
