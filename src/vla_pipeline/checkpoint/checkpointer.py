"""The checkpointer decides when to evaluate and save, writes each checkpoint atomically (a
``.tmp`` directory, a manifest of hashes, then a rename), keeps the last / best pointers and
applies the retention rule: the last, the best and the newest ``keep_last`` periodic checkpoints."""


from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    LAST_FILE,
    list_checkpoints,
    write_pointer,
)
from vla_pipeline.checkpoint.manifest import write_manifest
from vla_pipeline.phases import timed


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
        with timed("saving", f"checkpoint of step {step}"):
            return self._save(step, val_loss, write)

    def _save(self, step: int, val_loss: float | None, write: Callable[[Path, dict | None], None]) -> Path:
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
