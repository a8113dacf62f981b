"""The store: what must outlive a workspace, shared by every experiment on this machine.

DVC resets its outputs to ``dvc.lock`` before ``dvc exp run`` and runs ``--temp``/``--queue``
experiments in a temporary copy of the repository that it deletes afterwards. What a killed run
resumes from, the W&B files of an experiment and the decoded-frame cache therefore live outside the
workspace, in one directory (``base.store``; ``auto``: ``$VLA_STORE``, else ``~/.cache/vla-pipeline``):

* ``runs/<run key>/``: one training run's checkpoints, pointers and live metrics, keyed by its run key
  (config, stats, code, versions), so the same command finds its run again from any copy;
* ``frame_cache/<entry>/``: decoded frames, keyed by dataset fingerprint, resolution and exclusions;
* ``wandb/``: W&B run files (``wandb sync <store>/wandb/wandb/offline-run-*``).

The workspace's DVC outputs hold what a run produces (``artifacts/train``: the best and last
checkpoints and their pointers), published from the store (hard links where the file system allows).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from vla_pipeline.errors import ConfigError
from vla_pipeline.logs import STDERR

log = logging.getLogger(__name__)

STORE_ENV = "VLA_STORE"
RUNS_DIR = "runs"
FRAME_CACHE_DIR = "frame_cache"
WANDB_DIR = "wandb"
RUN_KEY_CHARS = 16  # of the run key's sha256 hex: the run's directory name


def resolve_store(value: str | Path | None) -> Path:
    """``base.store``: a directory, or ``auto`` (null): ``$VLA_STORE``, else ``$XDG_CACHE_HOME`` (or
    ``~/.cache``) ``/vla-pipeline``. Absolute, so every process and every copy of the repo agrees."""
    if value is not None and str(value) not in ("", "auto"):
        return Path(value).expanduser().resolve()
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "vla-pipeline").resolve()


def run_dir_of(store: Path, run_key: str) -> Path:
    return Path(store) / RUNS_DIR / run_key[:RUN_KEY_CHARS]


@contextlib.contextmanager
def file_lock(path: Path, what: str, wait: bool = True) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) for ``what``; ``wait``: block until it is free (saying so),
    else refuse at once. The lock goes with the process, also when it is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if not wait:
                raise ConfigError(f"another process holds {path} ({what}); wait for it to finish, or change a "
                                  f"param so that this is a different run") from None
            log.info(f"waiting for another process to finish {what} (lock {path})", extra=STDERR)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def link_or_copy_tree(src: Path, dst: Path, link: bool = True) -> None:
    """``dst`` (new) with ``src``'s files: hard links where the file system allows, copies elsewhere.
    Checkpoint files are never modified in place (written to a new directory, then renamed), so a link
    is as safe as a copy."""
    for path in sorted(Path(src).rglob("*")):
        target = Path(dst) / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(path, target)
                continue
            except OSError:  # another file system: copy
                pass
        shutil.copy2(path, target)


def replace_tree(src: Path, dst: Path, link: bool = True) -> None:
    """``dst`` becomes a link/copy of ``src``, atomically (a ``.tmp`` sibling renamed into place)."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    link_or_copy_tree(src, tmp, link)
    if dst.exists():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    else:
        os.replace(tmp, dst)
