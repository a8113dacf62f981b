"""The checkpointer decides when to evaluate and save, writes each checkpoint atomically (a
``.tmp`` directory, a manifest of hashes, then a rename), keeps the last / best pointers and
deletes periodic checkpoints beyond the retention count (never the best or the last)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vla_pipeline.checkpoint import BEST_FILE, LAST_FILE, write_manifest, write_pointer
from vla_pipeline.resume import CHECKPOINTS_DIR, list_checkpoints


@dataclass
class Checkpointer:
    run_dir: Path
    total_steps: int
    save_every: int  # 0: only the last step (plus new bests)
    eval_every: int  # 0: only the last step
    keep_last: int  # periodic checkpoints kept besides best and last; 0: all
    is_main: bool = True
    barrier: Callable[[], None] = field(default=lambda: None)
    best: dict | None = None  # {"step", "val_loss"} of the best checkpoint so far

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
        self.barrier()
        return final

    def apply_retention(self) -> None:
        if self.keep_last <= 0:
            return
        steps = list_checkpoints(self.run_dir)  # newest first; the newest is the last checkpoint
        protected = {s for s in steps[: self.keep_last]}
        if self.best is not None:
            protected |= {s for s in steps if int(s.name) == self.best["step"]}
        for step_dir in steps:
            if step_dir not in protected:
                shutil.rmtree(step_dir)
