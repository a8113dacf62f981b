"""Shared fixtures: a tiny demo dataset, the shipped contract, the tiny policy params, and one
short end-to-end run (validate -> norms -> train) that several test modules reuse."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import vla_pipeline  # noqa: F401  (first: sets the offline defaults before any HF import)

from procs import run_bounded

# under pytest-xdist (make test: -n logical), each worker and what it starts use their share of the cores
# (as cores.py splits them between training processes): N workers each taking every core collapse
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and not os.environ.get("VLA_THREADS"):
    from vla_pipeline.cores import available_cores, compute_share

    os.environ["OMP_NUM_THREADS"] = str(compute_share(available_cores(), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# the store (base.store: auto) of every test and of the processes tests start: never the user's own
_STORE = tempfile.mkdtemp(prefix="vla-test-store-")
os.environ["VLA_STORE"] = _STORE
atexit.register(shutil.rmtree, _STORE, True)

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
CONTRACT = REPO / "contracts" / "lekiwi_arm.yaml"


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """6 short episodes at 32x40: small enough for every test, real LeRobot v3.0 on disk."""
    from vla_pipeline.data.demo import DemoConfig, make_demo_dataset

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
    from vla_pipeline.train.config import TrainConfig

    values = dict(
        dataset_root=dataset, contract_path=CONTRACT, norms_dir=work / "norms",
        validation_report=work / "report.json", out_dir=work / "train", live_dir=work / "live",
        wandb_dir=work / "wandb", steps=4, batch_size=4, warmup_steps=1, decay_steps=4, num_workers=0,
        log_every=2, frame_cache_dir=None,  # the videos (tests/data/test_frame_cache.py covers the cache)
        runs_in_store=False,  # the run's directory is out_dir (tests/test_store.py covers the store)
        preflight_report=None,  # tests/test_tracking.py covers logging the preflight report
    )
    values.update(overrides)
    return TrainConfig.from_params(params, **values)


@pytest.fixture(scope="session")
def tiny_run(params, demo_dataset, tmp_path_factory) -> Run:
    """validate -> norms -> 4 train steps of the tiny Pi0.5, as the DVC stages run them."""
    from vla_pipeline.norms import NormsConfig, save_norm_stats
    from vla_pipeline.train.trainer import train
    from vla_pipeline.validate.config import ValidateConfig
    from vla_pipeline.validate.run import validate_dataset

    work = tmp_path_factory.mktemp("run")
    validate_dataset(ValidateConfig(demo_dataset, CONTRACT, work / "report.json"))
    # split seed 2: episodes 0 and 5 of 6 validate (the stable split holds out each episode by its own draw)
    save_norm_stats(NormsConfig(demo_dataset, CONTRACT, work / "norms", val_fraction=0.34, seed=2))
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
    p["frame_cache"]["enable"] = False  # the videos (tests/data/test_frame_cache.py covers the cache)
    p["preflight"]["report"] = str(work / "preflight" / "report.json")  # none unless a test writes one
    for key, value in train.items():
        if key.startswith("wandb_"):
            p["train"]["wandb"][key.removeprefix("wandb_")] = value
        elif isinstance(value, dict):  # a nested section (peft, ema): the given keys only
            p["train"][key] = {**p["train"][key], **value}
        else:
            p["train"][key] = value
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return work / "params.yaml"


def vla(*args: str, env: dict | None = None, timeout: int = 600):
    """Run the `vla` CLI in a fresh process; returns the CompletedProcess."""
    import sys

    return run_bounded([sys.executable, "-m", "vla_pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def with_faults(env: dict, **variables: str) -> dict:
    """``env`` with ``variables`` (``VLA_TEST_*``) and tests/inject/ first on ``PYTHONPATH``: its
    sitecustomize.py puts those faults into every Python process started with it."""
    inject = Path(__file__).parent / "inject"
    return {**env, **variables, "PYTHONPATH": os.pathsep.join(filter(None, [str(inject), env.get("PYTHONPATH")]))}


def replayable_seed() -> int:
    """A fresh seed for a randomised test, or ``VLA_TEST_SEED`` to replay one that failed (tests
    put the seed in every assertion message)."""
    import random

    value = os.environ.get("VLA_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


def run_killed_before_step(cmd: list[str], step: int, env: dict | None = None, **popen) -> None:
    """Run ``cmd`` and SIGKILL its whole process group exactly when its training loop is about to run
    ``step`` (tests/inject/sitecustomize.py): no polling, the same kill point on every replay."""
    import signal
    import subprocess

    env = with_faults(dict(os.environ if env is None else env), VLA_TEST_SIGKILL_AT_STEP=str(step))
    proc = run_bounded(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=900, **popen)
    assert proc.returncode == -signal.SIGKILL, (f"{cmd[0]} was to be killed before step {step} but exited with "
                                                f"{proc.returncode}:\n{proc.stderr[-2000:]}")


# the longest modules first (make test's pytest-xdist hands out whole files in collection order, with
# --no-loadscope-reorder): one worker starts the DVC workflows while the other takes the short files,
# instead of the longest file starting last and running alone (docs/testing.md)
LONGEST_FIRST = ("tests/e2e/test_pipeline.py", "tests/e2e/test_resume.py", "tests/e2e/test_cli_workspace.py",
                 "tests/e2e/test_params_workspace.py", "tests/preflight/test_preflight.py",
                 "tests/train/test_determinism.py", "tests/deploy/test_messages.py", "tests/train/test_runtime.py",
                 "tests/preflight/test_probe.py", "tests/e2e/test_variants.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected
