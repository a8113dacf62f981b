"""Where a run lives: its directory in the store (keyed by the run key, so every copy of the repo and
every DVC entry point finds it again), the hard-linked best/last checkpoints published into the
stage's output, and the move of checkpoints found in the output that the store lacks."""


from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINT_MANIFEST_FILE,
    CHECKPOINTS_DIR,
    LAST_FILE,
    LIVE_DIR,
    list_checkpoints,
    read_pointer,
    read_run_state,
    write_pointer,
)
from vla_pipeline.phases import timed
from vla_pipeline.store import file_lock, replace_tree, run_dir_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlace:
    """Where a run writes its checkpoints and live metrics, and where they are published.

    Without a store (library use, ``vla train --out``) the run's directory is ``out_dir`` itself. With a
    store (the train stage) it is ``<store>/runs/<run key>``, which DVC never resets, and ``out_dir`` /
    ``live_dir`` (the stage's DVC outputs) receive the last and best checkpoints and a copy of the live
    metrics after every save and at the end."""

    run_dir: Path
    live_dir: Path
    out_dir: Path | None = None
    published_live_dir: Path | None = None

    @classmethod
    def make(cls, out_dir: Path, live_dir: Path, store: Path | None, run_key: str) -> RunPlace:
        if store is None:
            return cls(Path(out_dir), Path(live_dir))
        home = run_dir_of(store, run_key)
        return cls(home, home / LIVE_DIR, Path(out_dir), Path(live_dir))

    def lock(self, run_key: str):
        """Only one process trains a run at a time (two experiments with equal params would share it)."""
        return file_lock(self.run_dir / ".lock", f"training run {run_key[:16]} in {self.run_dir}", wait=False)

    def publish(self) -> None:
        if self.out_dir is None:
            return
        with timed("copying", f"publishing {self.run_dir} to {self.out_dir}"):
            publish(self.run_dir, self.out_dir)
            if self.live_dir.is_dir():
                replace_tree(self.live_dir, self.published_live_dir, link=False)  # dvclive appends in place


def publish(run_dir: Path, out_dir: Path) -> None:
    """Make ``out_dir`` (the train stage's DVC output) hold the run's last and best checkpoints and their
    pointers, laid out as in ``run_dir``: hard links (or copies) of the store's files, each step directory
    replaced atomically, published steps that are neither last nor best removed. The store keeps the
    run's own checkpoints (and retention decides there)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    pointers = {name: read_pointer(run_dir, name) for name in (LAST_FILE, BEST_FILE)}
    wanted = {doc["path"] for doc in pointers.values() if doc is not None}
    for rel in sorted(wanted):
        src, dst = run_dir / rel, out_dir / rel
        if not (dst / CHECKPOINT_MANIFEST_FILE).is_file() or (dst / CHECKPOINT_MANIFEST_FILE).read_bytes() != (src / CHECKPOINT_MANIFEST_FILE).read_bytes():
            replace_tree(src, dst)
    root = out_dir / CHECKPOINTS_DIR
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if f"{CHECKPOINTS_DIR}/{path.name}" not in wanted:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name, doc in pointers.items():
        if doc is None:
            (out_dir / name).unlink(missing_ok=True)
        else:
            write_pointer(out_dir, name, out_dir / doc["path"], **{k: v for k, v in doc.items() if k != "path"})


def move_aside(out_dir: Path, store: Path) -> list[Path]:
    """Checkpoints found in ``out_dir`` that the store does not hold (a run from before the store, or a
    store that was cleaned) move into the store under their own run key, never deleted: a run with that
    key resumes from them. Published copies of runs the store holds stay (publishing replaces them).
    Returns the new locations (each is printed)."""
    moved = []
    for step_dir in list_checkpoints(out_dir):
        try:
            key = str(read_run_state(step_dir)["run_key"])
        except (OSError, ValueError, KeyError):
            key = "unknown-run"
        dest = run_dir_of(store, key) / CHECKPOINTS_DIR / step_dir.name
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(step_dir), str(dest))
        log.info(f"moved checkpoint {step_dir} (its run is not in the store) to {dest}; it is kept there")
        moved.append(dest)
    return moved
