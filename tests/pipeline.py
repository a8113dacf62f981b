"""The pipeline's stages run as DVC runs them (each stage script's ``main(params)``), in this process, on
params.yaml pointed at a dataset and a work directory and shrunk to 2 training steps."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from procs import run_bounded

REPO = Path(__file__).resolve().parents[1]
STAGES = ("validate", "norms", "frame_cache", "train", "evaluate")
TRACKED_DIRS = ("src", "stages", "contracts", ".dvc")
TRACKED_FILES = ("dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore")
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def shrink(params: dict) -> dict:
    """The demo at a size a test reproduces in about a minute: 6 short episodes, 6 training steps."""
    params["demo"].update(num_episodes=6, min_length=20, max_length=32, image_height=32, image_width=40)
    params["norms"].update(val_fraction=0.34, split_seed=2)  # episodes 0 and 5 of 6 validate
    params["train"].update(steps=6, batch_size=4, warmup_steps=1, decay_steps=6, num_workers=0, log_every=2,
                           val_samples=8)
    params["evaluate"]["stride"] = 4
    return params


def make_workspace(root: Path, edit: Callable[[dict], dict] | None = shrink) -> Path:
    """A git copy of this repository's DVC project at ``root`` (what its stages need: the package, stage
    scripts, contracts, DVC config, dvc.yaml, params.yaml), params.yaml passed through ``edit``, committed."""
    root.mkdir(parents=True)
    for d in TRACKED_DIRS:
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp"))
    for f in TRACKED_FILES:
        shutil.copy(REPO / f, root / f)
    if edit is not None:
        params = edit(yaml.safe_load((root / "params.yaml").read_text()))
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_all(root, "init", init=True)
    return root


def commit_all(root: Path, message: str, init: bool = False) -> None:
    """``git add -A && git commit`` in ``root`` (``git init`` first with ``init``)."""
    for cmd in ([["git", "init", "-q"]] if init else []) + [[*GIT, "add", "-A"], [*GIT, "commit", "-qm", message]]:
        result = run_bounded(cmd, cwd=root, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(cmd)} failed in {root}:\n{result.stdout}\n{result.stderr}"


def load_stage(name: str):
    """stages/<name>.py as a module (its `main(params)` is what `dvc repro` runs)."""
    sys.path.insert(0, str(REPO / "stages"))
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_params(root: Path, work: Path, cache: bool, exclude: list[int], contract: Path | None = None) -> dict:
    """params.yaml pointed at ``root`` and ``work``, shrunk to 2 training steps."""
    p = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    p["dataset"].update(root=str(root), contract=str(contract or REPO / "contracts" / "so101_arm.yaml"),
                      exclude_episodes=exclude)
    p["validate"]["report"] = str(work / "validation" / "report.json")
    p["norms"].update(out_dir=str(work / "norms"), val_fraction=0.25)
    p["frame_cache"].update(enable=cache, dir=str(work / "frame_cache"), num_workers=0)
    p["train"].update(out_dir=str(work / "train"), live_dir=str(work / "train_live"), steps=2, batch_size=4,
                      warmup_steps=1, decay_steps=2, log_every=1, save_every=0, eval_every=0, val_samples=4)
    p["train"]["wandb"].update(mode="disabled", dir=str(work / "wandb"))
    p["evaluate"].update(out_dir=str(work / "eval"))
    p["evaluate"]["wandb"].update(mode="disabled", dir=str(work / "wandb"))
    return p


def run_stages(params: dict, monkeypatch) -> None:
    for name in STAGES[:-1]:
        load_stage(name).main(params)
    monkeypatch.setattr(sys, "argv", ["stages/evaluate.py", "best"])
    load_stage("evaluate").main(params)
