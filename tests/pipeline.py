"""The pipeline's stages run as DVC runs them (each stage script's ``main(params)``), in this process, on
params.yaml pointed at a dataset and a work directory and shrunk to 2 training steps."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("validate", "norms", "frame_cache", "train", "evaluate")


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
