"""The checkpointer decides when to evaluate and save, writes each checkpoint atomically (a
``.tmp`` directory, a manifest of hashes, then a rename), keeps the last / best pointers and
applies the retention rule: the last, the best and the newest ``keep_last`` periodic checkpoints."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vla_pipeline.checkpoint import (
    BEST_FILE,
    LAST_FILE,
    MANIFEST_FILE,
    read_pointer,
    write_manifest,
    write_pointer,
)
from vla_pipeline.resume import CHECKPOINTS_DIR, list_checkpoints, read_run_state
from vla_pipeline.store import file_lock, replace_tree, run_dir_of

LIVE_DIR = "live"


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
        publish(self.run_dir, self.out_dir)
        if self.live_dir.is_dir():
            replace_tree(self.live_dir, self.published_live_dir, link=False)  # dvclive appends in place


@dataclass
class Checkpointer:
    run_dir: Path
    total_steps: int
    save_every: int  # 0: only the last step (plus new bests)
    eval_every: int  # 0: only the last step
    keep_last: int  # newest periodic checkpoints kept besides best and last; 0: every checkpoint
    is_main: bool = True
    barrier: Callable[[], None] = field(default=lambda: None)
    best: dict | None = None  # {"step", "val_loss"} of the best checkpoint so far
    step: int = 0  # the step the loop is running (for the Ctrl-C message)
    publish: Callable[[], None] | None = None  # after each save (process 0): RunPlace.publish

    def should_eval(self, step: int) -> bool:
        return step == self.total_steps or (self.eval_every > 0 and step % self.eval_every == 0)

    def is_new_best(self, val_loss: float | None) -> bool:
        return val_loss is not None and (self.best is None or val_loss < self.best["val_loss"])

    def should_save(self, step: int, val_loss: float | None) -> bool:
        periodic = self.save_every > 0 and step % self.save_every == 0
        return step == self.total_steps or periodic or self.is_new_best(val_loss)

    def save(self, step: int, val_loss: float | None, write: Callable[[Path, dict | None], None]) -> Path:
        """``write(tmp_dir, best)`` fills the checkpoint (every process calls it; process 0 writes the
        model); returns the finished step directory."""
        root = Path(self.run_dir) / CHECKPOINTS_DIR
        final, tmp = root / f"{step:06d}", root / f"{step:06d}.tmp"
        if self.is_new_best(val_loss):
            self.best = {"step": step, "val_loss": val_loss}
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp, self.best)
        self.barrier()
        if self.is_main:
            write_manifest(tmp)
            if final.exists():  # a re-save of the same step (resumed run): keep a complete one at all times
                old = root / f"{step:06d}.old"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            write_pointer(self.run_dir, LAST_FILE, final, step=step, val_loss=val_loss)
            if self.best is not None and self.best["step"] == step:
                write_pointer(self.run_dir, BEST_FILE, final, **self.best)
            self.apply_retention()
            if self.publish is not None:
                self.publish()
        self.barrier()
        return final

    def apply_retention(self) -> None:
        """Delete the checkpoints ``retained_steps`` does not keep (process 0, after each finished save:
        the newest checkpoint, the one a killed run resumes from, is always kept)."""
        if self.keep_last <= 0:
            return
        steps = list_checkpoints(self.run_dir)
        keep = retained_steps([int(s.name) for s in steps], None if self.best is None else self.best["step"],
                              self.save_every, self.keep_last)
        for step_dir in steps:
            if int(step_dir.name) not in keep:
                shutil.rmtree(step_dir)


def retained_steps(steps: list[int], best: int | None, save_every: int, keep_last: int) -> set[int]:
    """Of the checkpoint steps on disk: the last (newest), the best, and the newest ``keep_last``
    periodic ones (multiples of ``save_every``; a periodic last one counts among them). A best that a
    lower validation loss superseded is deleted unless it is periodic and recent enough. ``keep_last``
    0 keeps everything; ``save_every`` 0 has no periodic checkpoints: the last and the best remain."""
    if keep_last <= 0 or not steps:
        return set(steps)
    periodic = sorted((s for s in steps if save_every > 0 and s % save_every == 0), reverse=True)
    return {max(steps), *periodic[:keep_last], *([best] if best in steps else [])}


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
        if not (dst / MANIFEST_FILE).is_file() or (dst / MANIFEST_FILE).read_bytes() != (src / MANIFEST_FILE).read_bytes():
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
        print(f"moved checkpoint {step_dir} (its run is not in the store) to {dest}; it is kept there")
        moved.append(dest)
    return moved
