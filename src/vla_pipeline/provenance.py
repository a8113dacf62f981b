"""What identifies a run and its inputs: file and dataset hashes, the contract hash, the source
hash and run key, and the environment a run records (package versions, git commit, GPUs)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path

import vla_pipeline

# keys that change how a run is recorded, never what it computes
RUN_KEY_IGNORED_KEYS = {
    "out_dir", "live_dir", "wandb_dir", "wandb_project", "wandb_mode", "wandb_init_timeout", "wandb_log_checkpoints",
    "log_every", "save_every", "eval_every", "keep_last", "num_workers", "resume", "pin_memory", "prefetch_factor",
    "store", "runs_in_store", "preflight_report",
}


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 16 MiB blocks (videos and checkpoints never sit in memory whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def compute_dataset_fingerprint(root: Path) -> str:
    """sha256 over every file of the dataset (path and content), hidden directories aside: the data,
    meta and video files wherever info.json's templates put them."""
    root = Path(root)
    digest = hashlib.sha256()
    files = [p for p in root.rglob("*") if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    for path in sorted(files):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def compute_contract_hash(path: Path) -> str:
    return sha256_file(Path(path))


def compute_split_hash(split: dict[str, list[int]]) -> str:
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()


def find_data_mismatch(recorded: dict, dataset_root: Path | None = None, *, fingerprint: str | None = None,
                       contract_path: Path | None = None, split: dict | None = None) -> str | None:
    """What a derived file (norms stats, a validation report, a frame-cache manifest, a checkpoint's
    stats) was made from against the data at hand: the first of ``"split"``, ``"dataset"`` and
    ``"contract"`` that differs, else None. Only what ``recorded`` holds (``split_hash``,
    ``dataset_fingerprint``, ``contract_hash``) and the caller gives is compared; ``fingerprint`` spares
    hashing ``dataset_root`` again when the caller knows it. Each caller says what to do about it."""
    if split is not None and "split_hash" in recorded and recorded["split_hash"] != compute_split_hash(split):
        return "split"
    if "dataset_fingerprint" in recorded and (fingerprint is not None or dataset_root is not None):
        current = fingerprint if fingerprint is not None else compute_dataset_fingerprint(dataset_root)
        if recorded["dataset_fingerprint"] != current:
            return "dataset"
    if contract_path is not None and "contract_hash" in recorded and \
            recorded["contract_hash"] != compute_contract_hash(contract_path):
        return "contract"
    return None


def compute_source_hash() -> str:
    """sha256 over this package's Python sources: a code change makes a new run, never a resumed one."""
    root = Path(vla_pipeline.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def compute_run_key(config: dict, stats_doc: dict, versions: dict) -> str:
    """The run's identity: resolved config minus bookkeeping, frozen stats, dataset, code and versions."""
    identity = {
        "config": {k: v for k, v in config.items() if k not in RUN_KEY_IGNORED_KEYS},
        "stats": stats_doc["features"], "dataset_fingerprint": stats_doc["dataset_fingerprint"],
        "source": compute_source_hash(), "versions": versions,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def collect_versions() -> dict[str, str | None]:
    """Package versions a checkpoint was trained with (fixed by the lock file, so reproducible)."""
    import lerobot
    import torch
    import transformers

    return {"vla_pipeline": vla_pipeline.__version__, "lerobot": lerobot.__version__,
            "transformers": transformers.__version__, "torch": str(torch.__version__), "cuda": torch.version.cuda,
            "hip": torch.version.hip, "python": platform.python_version()}


def collect_git(root: Path | None = None) -> dict:
    """The code commit and whether the working tree differs from it (``unknown`` outside git)."""
    root = Path.cwd() if root is None else Path(root)

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def collect_gpus() -> dict:
    """GPU names and the CUDA or ROCm (HIP) version torch was built with."""
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"gpus": names, "cuda": torch.version.cuda, "rocm_hip": torch.version.hip}
