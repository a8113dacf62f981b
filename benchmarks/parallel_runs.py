"""Two queued demo experiments on this machine: `dvc queue start --jobs 1` vs `--jobs 2`, with the core
share (cores.py) and without it (``VLA_THREADS`` set to every core: each process takes the whole
machine, as before the share existed).

It copies this repository's tracked files into a fresh git + DVC workspace, shrinks the demo's
training to ``--steps`` steps (the rest of params.yaml as shipped), runs ``dvc repro`` once (the
baseline: validate, norms, frame cache, preflight, train, evaluate), then for each mode queues two
experiments that differ in ``train.lr`` (train and evaluate re-run) and times ``dvc queue start`` to
the last experiment's end. Each mode is capped at ``--cap-s`` seconds (reported as stopped). It
prints one line per mode and writes benchmarks/results/parallel_runs_<date>.json.

Run it alone: another heavy process on the machine changes every figure.

    python benchmarks/parallel_runs.py [--steps 300] [--modes jobs1,jobs2,jobs2-noshare] [--cap-s 1500]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pipeline import make_workspace  # noqa: E402  (the tests' workspace copy)

MODES = {"jobs1": (1, {}), "jobs2": (2, {}), "jobs2-noshare": (2, {"VLA_THREADS": str(os.cpu_count() or 1)})}


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "VLA_THREADS")}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1", **extra}


def run(cmd: list[str], cwd: Path, extra: dict | None = None, timeout: float = 3600) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=_env(extra or {}), capture_output=True, text=True, timeout=timeout,
                            start_new_session=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def make_steps_workspace(root: Path, steps: int) -> None:
    def edit(params: dict) -> dict:
        params["train"].update(steps=steps, decay_steps=steps)
        return params
    make_workspace(root, edit)


def time_mode(root: Path, mode: str, cap_s: float) -> dict:
    jobs, extra = MODES[mode]
    names = [f"{mode}-a", f"{mode}-b"]
    k = list(MODES).index(mode)  # learning rates of their own: DVC's run cache would restore another mode's run
    for name, lr in zip(names, (f"{1 + k}.0e-3", f"{1 + k}.5e-3"), strict=True):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}"], root, extra)
    start = time.monotonic()
    subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=root, env=_env(extra), timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # the workers inherit a pipe
    status, stopped = "", False
    try:
        while True:
            status = run(["dvc", "queue", "status"], root)
            if not any(word in status for word in ("Queued", "Running")):
                break
            if time.monotonic() - start > cap_s:
                stopped = True
                break
            time.sleep(2)
    finally:
        wall = time.monotonic() - start
        run(["dvc", "queue", "stop", "--kill"], root, timeout=300)
    ok = sum(line.split()[-1] == "Success" for line in status.splitlines() if any(n in line for n in names))
    rates = []
    for name in names:
        log = run(["dvc", "queue", "logs", name], root) if not stopped else ""
        rates += [float(r) for r in re.findall(r"([\d.]+)step/s, loss", log)[-1:]]  # tqdm's last rate of train
    return {"mode": mode, "jobs": jobs, "env": extra, "wall_s": round(wall, 1), "succeeded": ok, "stopped": stopped,
            "train_steps_per_s": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modes", default="jobs1,jobs2,jobs2-noshare")
    parser.add_argument("--cap-s", type=float, default=1500)
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="vla-parallel-")) / "ws"
    try:
        make_steps_workspace(root, args.steps)
        t0 = time.monotonic()
        run(["dvc", "repro"], root)
        print(f"baseline dvc repro: {time.monotonic() - t0:.0f} s", flush=True)
        results = []
        for mode in args.modes.split(","):
            results.append(time_mode(root, mode, args.cap_s))
            r = results[-1]
            print(f"{mode:>14}: {r['wall_s']:7.1f} s for 2 experiments ({r['succeeded']}/2 succeeded"
                  f"{', stopped at the cap' if r['stopped'] else ''}); train steps/s {r['train_steps_per_s']}",
                  flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root.parent, ignore_errors=True)
    out = REPO / "benchmarks" / "results" / f"parallel_runs_{datetime.date.today()}.json"
    out.write_text(json.dumps({"cores": os.cpu_count(), "steps": args.steps, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
