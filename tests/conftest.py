"""Shared fixtures: a tiny demo dataset, the shipped contract, the tiny policy params, and one
short end-to-end run (validate -> norms -> train) that several test modules reuse."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import vla_pipeline  # noqa: F401  (first: sets the offline defaults before any HF import)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
CONTRACT = REPO / "contracts" / "lekiwi_arm.yaml"


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """6 short episodes at 32x40: small enough for every test, real LeRobot v3.0 on disk."""
    from vla_pipeline.demo import DemoConfig, make_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    return make_demo_dataset(
        DemoConfig(root=root, num_episodes=6, min_length=20, max_length=32, image_height=32, image_width=40)
    )


@dataclass(frozen=True)
class Run:
    dataset: Path
    report: Path
    norms: Path
    train: Path
    live: Path
    checkpoint: Path


def make_train_config(params: dict, dataset: Path, work: Path, **overrides):
    """params.yaml's train config, shrunk (4 steps, batch 4) and pointed at ``work``."""
    from vla_pipeline.train import TrainConfig

    values = dict(
        dataset_root=dataset, contract_path=CONTRACT, norms_dir=work / "norms",
        validation_report=work / "report.json", out_dir=work / "train", live_dir=work / "live",
        wandb_dir=work / "wandb", steps=4, batch_size=4, warmup_steps=1, decay_steps=4, num_workers=0,
        log_every=2, frame_cache_dir=None,  # the videos (tests/test_frame_cache.py covers the cache)
    )
    values.update(overrides)
    return TrainConfig.from_params(params, **values)


@pytest.fixture(scope="session")
def tiny_run(params, demo_dataset, tmp_path_factory) -> Run:
    """validate -> norms -> 4 train steps of the tiny Pi0.5, as the DVC stages run them."""
    from vla_pipeline.norms import NormsConfig, save_norm_stats
    from vla_pipeline.train import train
    from vla_pipeline.validate import ValidateConfig, validate_dataset

    work = tmp_path_factory.mktemp("run")
    validate_dataset(ValidateConfig(demo_dataset, CONTRACT, work / "report.json"))
    save_norm_stats(NormsConfig(demo_dataset, CONTRACT, work / "norms", val_fraction=0.34))
    cfg = make_train_config(params, demo_dataset, work)
    checkpoint = train(cfg)
    return Run(demo_dataset, work / "report.json", work / "norms", work / "train", work / "live", checkpoint)


def write_train_params(params: dict, run: Run, work: Path, **train) -> Path:
    """A params.yaml for `vla train` on the tiny run's dataset and stats, writing under ``work``."""
    import copy

    p = copy.deepcopy(params)
    p["dataset"]["root"] = str(run.dataset)
    p["dataset"]["contract"] = str(CONTRACT)
    p["validate"]["report"] = str(run.report)
    p["norms"]["out_dir"] = str(run.norms)
    p["train"].update(out_dir=str(work / "train"), live_dir=str(work / "live"), steps=4, batch_size=4,
                      warmup_steps=1, decay_steps=4, num_workers=0, log_every=2, val_samples=8)
    p["train"]["wandb"].update(dir=str(work / "wandb"), mode="disabled")
    p["frame_cache"]["enable"] = False  # the videos (tests/test_frame_cache.py covers the cache)
    for key, value in train.items():
        if key.startswith("wandb_"):
            p["train"]["wandb"][key.removeprefix("wandb_")] = value
        else:
            p["train"][key] = value
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return work / "params.yaml"


def vla(*args: str, env: dict | None = None, timeout: int = 600):
    """Run the `vla` CLI in a fresh process; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vla_pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def kill_when_logged(cmd: list[str], live_dir: Path, step: int, **popen) -> None:
    """Start ``cmd`` and SIGKILL its whole process group as soon as dvclive in ``live_dir`` shows
    ``step`` (the lr is logged every step)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **popen)
    lr = Path(live_dir) / "plots" / "metrics" / "train" / "lr.tsv"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if lr.is_file() and len(lr.read_text().splitlines()) - 1 >= step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed at step {step}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
