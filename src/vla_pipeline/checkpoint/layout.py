"""The one layout of a training run on disk, with every file and directory name:

``<run>/checkpoints/<step:06d>/pretrained_model/`` (LeRobot's layout plus the tokenizer, contract,
frozen stats, split, resolved config, versions and a manifest of sizes and sha256), beside it
``training_state/`` (optimizer, scheduler, RNG, ``run_state.json``; with ``train.ema`` the EMA and the
raw trainable weights, as ``pretrained_model`` then holds the EMA ones), and the pointers
``<run>/last_checkpoint.json`` and ``best_checkpoint.json``; live metrics in ``<run>/live``."""


from __future__ import annotations

import json
import os
from pathlib import Path

from vla_pipeline.errors import CheckpointError, read_json_artifact

CHECKPOINTS_DIR = "checkpoints"  # <run>/checkpoints/<step:06d>/
SET_ASIDE_DIR = "set_aside"  # <run>/set_aside/<when>/<step>: checkpoints a new or resumed run does not use, kept
PRETRAINED_DIR = "pretrained_model"
TOKENIZER_DIR = "tokenizer"
CONTRACT_FILE = "contract.yaml"
CHECKPOINT_STATS_FILE = "norm_stats.json"
CHECKPOINT_SPLIT_FILE = "split.json"
TRAIN_CONFIG_FILE = "train_config.json"
LAST_FILE = "last_checkpoint.json"
BEST_FILE = "best_checkpoint.json"
CHECKPOINT_MANIFEST_FILE = "manifest.json"
VERSIONS_FILE = "versions.json"
TRAINING_STATE_DIR = "training_state"
RUN_STATE_FILE = "run_state.json"
ADAPTER_DIR = "adapter"  # <step>/adapter/: the LoRA adapter in PEFT's format (train.peft)
EMA_FILE = "ema.safetensors"  # training_state/: the EMA of the trainable weights (train.ema)
RAW_WEIGHTS_FILE = "raw_weights.safetensors"  # training_state/: the trainable weights, when pretrained_model holds others
LIVE_DIR = "live"


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file (not a link) of at most ``limit`` bytes: a checkpoint's JSON
    is read whole only after its size is known."""
    path = Path(path)
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link: a checkpoint holds regular files only")
    if not path.is_file():
        raise CheckpointError(f"{path} not found (or not a regular file)")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path} is larger than the {limit} bytes such a file may have (not a file we wrote)")
    return data


def write_atomic(path: Path, text: str) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_pointer(run_dir: Path, name: str, checkpoint_dir: Path, **extra) -> None:
    """``last_checkpoint.json`` / ``best_checkpoint.json``: which step directory, replaced atomically."""
    doc = {"path": str(Path(checkpoint_dir).relative_to(run_dir)), **extra}
    write_atomic(Path(run_dir) / name, json.dumps(doc, indent=2) + "\n")


def read_pointer(run_dir: Path, name: str) -> dict | None:
    path = Path(run_dir) / name
    return read_json_artifact(path, "train", ("path",)) if path.is_file() else None


def find_last(run_dir: Path, name: str = LAST_FILE) -> Path:
    """The ``pretrained_model`` directory of the run's last (or best) checkpoint."""
    doc = read_pointer(run_dir, name)
    if doc is None:
        raise CheckpointError(f"{Path(run_dir) / name} not found: no finished checkpoint in {run_dir}; "
                              f"run the train stage first")
    return Path(run_dir) / doc["path"] / PRETRAINED_DIR


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished-looking step directories (``000500``), newest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    steps = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return sorted(steps, key=lambda p: int(p.name), reverse=True)


def read_run_state(step_dir: Path) -> dict:
    return read_json_artifact(Path(step_dir) / TRAINING_STATE_DIR / RUN_STATE_FILE, "train")
