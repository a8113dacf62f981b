"""`dvc repro` end to end on generated format variants (tests/variants.py), frame cache on and off.

For each of ``--count`` variants drawn from ``--seed`` (spread over the drawn list: quirks alone and
combined; variants whose refusal is expected are skipped) it copies this repository's
tracked files into a fresh git + DVC workspace, writes the variant's dataset into ``data/variant``
(a v2.1 one is converted with ``vla convert``), writes its contract with ``vla contract init``, points
params.yaml at both (train shrunk to a few steps), and runs ``dvc repro`` twice: with
``frame_cache.enable`` true, then false (``dvc exp run -S``-style params edit, so only the stages that
read it re-run). It prints one line per run: the variant, the cache setting, the wall time, the dry
run's status and the held-out action MSE of evaluate@best, and exits 1 if any run failed.

    python benchmarks/variants_repro.py [--count 8] [--seed 2712] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pipeline import make_workspace  # noqa: E402  (the tests' workspace copy)
from variants import draw_variants, write_variant  # noqa: E402  (the tests' generator)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def point_params(root: Path, contract: Path, cache: bool) -> None:
    path = root / "params.yaml"
    p = yaml.safe_load(path.read_text())
    p["dataset"].update(root="data/variant", contract=str(contract.relative_to(root)), exclude_episodes=[])
    p["demo"].update(num_episodes=4, min_length=16, max_length=20, image_height=24, image_width=32)
    p["norms"]["val_fraction"] = 0.25
    p["frame_cache"].update(enable=cache, num_workers=0)
    p["train"].update(steps=4, batch_size=4, warmup_steps=1, decay_steps=4, num_workers=0, log_every=2, val_samples=4)
    for section in ("train", "evaluate"):
        p[section]["wandb"]["mode"] = "disabled"
    p["evaluate"]["videos"] = False
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def repro_variant(index: int, variant, work: Path) -> list[str]:
    root = work / f"v{index:03d}"
    make_workspace(root, edit=None)
    data = root / "data" / "variant"
    recorded = write_variant(root / "data" / ("recorded" if variant.version == "v2.1" else "variant"), variant)
    vla = str(Path(sys.executable).parent / "vla")
    if variant.version == "v2.1":
        done = run([vla, "convert", str(recorded), "--out", str(data)], root)
        if done.returncode:
            return [f"{index:3d} {variant.name}: vla convert failed: {done.stderr.strip()[-400:]}"]
    contract = root / "contracts" / "variant.yaml"
    joints = ["--joints", "right.*"] if variant.bimanual else []
    done = run([vla, "contract", "init", str(data), "--out", str(contract), *joints], root)
    if done.returncode:
        return [f"{index:3d} {variant.name}: vla contract init failed: {done.stderr.strip()[-400:]}"]
    lines = []
    for cache in (True, False):
        point_params(root, contract, cache)
        started = time.perf_counter()
        done = run([str(Path(sys.executable).parent / "dvc"), "repro"], root)
        seconds = time.perf_counter() - started
        if done.returncode:
            errors = [line for line in (done.stderr + done.stdout).splitlines() if "ERROR" in line or "error:" in line]
            lines.append(f"{index:3d} {variant.name} cache={cache}: FAILED after {seconds:.0f} s: "
                         f"{' | '.join(errors)[-600:]}")
            continue
        report = json.loads((root / "artifacts/validation/report.json").read_text())
        metrics = json.loads((root / "artifacts/eval/best/metrics.json").read_text())
        lines.append(f"{index:3d} {variant.name} cache={cache}: ok in {seconds:.0f} s, dry run "
                     f"{report['checks']['dry_run']['status']} ({report['checks']['dry_run']['seconds']} s), "
                     f"action_mse {metrics['action_mse']:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2712)
    parser.add_argument("--keep", type=Path, help="work in this directory and leave it (default: a temporary one)")
    args = parser.parse_args()
    pool = [(i, v) for i, v in enumerate(draw_variants(5 * args.count, args.seed)) if v.expected_refusal() is None]
    variants = pool[:: max(1, len(pool) // args.count)][: args.count]  # quirks alone and combined, spread out
    work = args.keep or Path(tempfile.mkdtemp(prefix="vla-variants-repro-"))
    started, failed = time.perf_counter(), 0
    print(f"{len(variants)} variants of seed {args.seed}, dvc repro with the frame cache on, then off; work: {work}")
    for index, variant in variants:
        for line in repro_variant(index, variant, work):
            failed += "FAILED" in line or "failed:" in line
            print(line, flush=True)
    print(f"{2 * len(variants) - failed} of {2 * len(variants)} runs ok in {time.perf_counter() - started:.0f} s")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
