"""What identifies a run and its inputs: file and dataset hashes, the contract hash, the code
identity (the files a stage's entry module imports) and run key, and the environment a run records
(package versions, git commit, GPUs)."""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import subprocess
from pathlib import Path

import vla_pipeline
from vla_pipeline.phases import timed

PACKAGE_ROOT = Path(vla_pipeline.__file__).resolve().parent
TRAIN_ENTRY = "vla_pipeline.train.trainer"  # what the train stage and `vla train` run: the run key's code
EVAL_ENTRY = "vla_pipeline.eval.run"  # what evaluate runs: protocol.json's code identity

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
    meta and video files wherever info.json's templates put them. Computed once per process for a
    dataset whose files (paths, sizes, modification times, inodes) have not changed since: train,
    norms and evaluate ask for it several times, and at 50 GB of video each hash costs minutes. Below
    ``FINGERPRINT_MEMO_BYTES`` it is hashed each time (milliseconds; a file rewritten within the file
    system's timestamp granularity could otherwise keep a stale answer)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts) and p.is_file())
    listing = tuple((p.relative_to(root).as_posix(), *_stat_key(p)) for p in files)
    key = (str(root.resolve()), listing)
    if key not in _FINGERPRINTS or sum(entry[1] for entry in listing) < FINGERPRINT_MEMO_BYTES:
        with timed("hashing", f"dataset fingerprint of {root}"):
            digest = hashlib.sha256()
            for path in files:
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(bytes.fromhex(sha256_file(path)))
        _FINGERPRINTS.clear()  # one dataset per process is the common case: keep the memory bounded
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple, str] = {}
FINGERPRINT_MEMO_BYTES = 64 << 20


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()  # ctime too: `touch -r` or `cp -p` can restore an mtime, nothing restores a ctime
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


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


def resolve_module_files(dotted: str, root: Path = PACKAGE_ROOT) -> list[Path]:
    """The files importing ``dotted`` (a ``vla_pipeline`` module) runs: every package ``__init__.py`` on
    the way, then the module (or the package's ``__init__.py``); empty when ``dotted`` names no module
    (a name defined in one, whose module is listed apart)."""
    parts = dotted.split(".")[1:]
    files = [root / "__init__.py"]
    for i in range(1, len(parts) + 1):
        here = root.joinpath(*parts[:i])
        if here.is_dir():
            files.append(here / "__init__.py")
        elif here.with_suffix(".py").is_file():
            files.append(here.with_suffix(".py"))
        else:
            return [] if i == len(parts) and i > 1 else files[:-1] if i > 1 else []
    return files


def find_imported_files(path: Path, seen: set[Path] | None = None, root: Path = PACKAGE_ROOT) -> set[Path]:
    """The project files ``path`` imports, transitively (imports inside functions too), with the
    packages' ``__init__.py`` files and helpers beside a stage script (``_params.py``). Read from the
    source (ast), so the answer does not depend on what happened to be imported at run time."""
    seen = {root / "__init__.py"} if seen is None else seen
    for node in ast.walk(ast.parse(Path(path).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # a name may be a module
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            local = Path(path).parent / f"{name}.py"
            if local.is_file() and local not in seen:
                seen.add(local)
                find_imported_files(local, seen, root)
            if name != "vla_pipeline" and not name.startswith("vla_pipeline."):
                continue
            for target in resolve_module_files(name, root):
                if target not in seen:
                    seen.add(target)
                    find_imported_files(target, seen, root)
    return seen


def compute_code_identity(entry: str, root: Path | None = None) -> str:
    """sha256 over the package files ``entry`` imports (path and bytes): the code a stage runs. An edit
    to a module the entry never imports (a docstring in ``deploy/``) keeps the identity, so it neither
    restarts a training run nor changes what a fresh clone's ``make demo`` writes; any edit to a module
    it does import makes a new run, never a resumed one. ``root``: the package directory (this one)."""
    root = PACKAGE_ROOT if root is None else Path(root)
    own = resolve_module_files(entry, root)  # the entry module itself and its packages
    files = set(own) | find_imported_files(own[-1], None, root)
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def compute_run_key(config: dict, stats_doc: dict, versions: dict, code: str | None = None) -> str:
    """The run's identity: resolved config minus bookkeeping, frozen stats, dataset, the code train
    runs (``code``: its import graph's identity, computed here when not given) and versions."""
    identity = {
        "config": {k: v for k, v in config.items() if k not in RUN_KEY_IGNORED_KEYS},
        "stats": stats_doc["features"], "dataset_fingerprint": stats_doc["dataset_fingerprint"],
        "source": compute_code_identity(TRAIN_ENTRY) if code is None else code, "versions": versions,
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
