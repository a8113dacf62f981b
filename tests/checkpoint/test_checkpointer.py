"""The checkpointer's decisions and its save protocol, driven directly: when to evaluate and save, what
a new best is, the atomic save (``.tmp``, manifest, rename, pointers), a re-saved step, the part of
the other processes, and the retention rule's edge settings. tests/checkpoint/test_retention.py drives it as
the training loop does."""

from __future__ import annotations

from pathlib import Path

from vla_pipeline.checkpoint.checkpointer import Checkpointer, retained_steps
from vla_pipeline.checkpoint.io import verify_checkpoint
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINT_MANIFEST_FILE,
    LAST_FILE,
    list_checkpoints,
    read_pointer,
)


def _kept(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in list_checkpoints(run_dir))

def test_when_to_evaluate_and_save() -> None:
    ckpt = Checkpointer(Path("unused"), total_steps=10, save_every=4, eval_every=3, keep_last=1)
    assert [s for s in range(1, 11) if ckpt.should_eval(s)] == [3, 6, 9, 10]
    assert [s for s in range(1, 11) if ckpt.should_save(s, None)] == [4, 8, 10]
    every = Checkpointer(Path("unused"), total_steps=3, save_every=1, eval_every=1, keep_last=1)
    assert all(every.should_eval(s) and every.should_save(s, None) for s in (1, 2, 3))
    last_only = Checkpointer(Path("unused"), total_steps=5, save_every=0, eval_every=0, keep_last=1)
    assert [s for s in range(1, 6) if last_only.should_eval(s)] == [5]
    assert [s for s in range(1, 6) if last_only.should_save(s, None)] == [5]


def test_a_new_best_is_a_strictly_lower_validation_loss() -> None:
    ckpt = Checkpointer(Path("unused"), total_steps=10, save_every=0, eval_every=1, keep_last=1)
    assert not ckpt.is_new_best(None) and ckpt.is_new_best(5.0)
    ckpt.best = {"step": 2, "val_loss": 1.0}
    assert ckpt.is_new_best(0.5) and not ckpt.is_new_best(1.0) and not ckpt.is_new_best(2.0)
    assert ckpt.should_save(3, 0.5) and not ckpt.should_save(3, 1.0) and not ckpt.should_save(3, None)


def test_save_writes_the_step_directory_its_manifest_and_pointers(tmp_path) -> None:
    calls = []
    ckpt = Checkpointer(tmp_path / "run", total_steps=9, save_every=0, eval_every=1, keep_last=0,
                        barrier=lambda: calls.append("barrier"))

    def write(tmp: Path, best: dict | None) -> None:
        calls.append(("write", tmp.name, best))
        (tmp / "weights.bin").write_bytes(b"w")

    final = ckpt.save(7, 0.25, write)
    assert final == tmp_path / "run" / "checkpoints" / "000007" and (final / "weights.bin").read_bytes() == b"w"
    assert calls == ["barrier", ("write", "000007.tmp", {"step": 7, "val_loss": 0.25}), "barrier", "barrier"]
    assert (final / CHECKPOINT_MANIFEST_FILE).is_file() and verify_checkpoint(final) is None
    assert not (tmp_path / "run" / "checkpoints" / "000007.tmp").exists()
    assert read_pointer(tmp_path / "run", LAST_FILE) == {"path": "checkpoints/000007", "step": 7, "val_loss": 0.25}
    assert read_pointer(tmp_path / "run", BEST_FILE) == {"path": "checkpoints/000007", "step": 7, "val_loss": 0.25}
    ckpt.save(8, 0.5, write)  # not a new best: only the last pointer moves
    assert read_pointer(tmp_path / "run", LAST_FILE) == {"path": "checkpoints/000008", "step": 8, "val_loss": 0.5}
    assert read_pointer(tmp_path / "run", BEST_FILE)["step"] == 7 and ckpt.best == {"step": 7, "val_loss": 0.25}
    ckpt.save(9, None, write)  # the last step without a validation loss
    assert read_pointer(tmp_path / "run", LAST_FILE) == {"path": "checkpoints/000009", "step": 9, "val_loss": None}


def test_a_resaved_step_replaces_the_old_one_and_a_leftover_tmp_is_cleared(tmp_path) -> None:
    ckpt = Checkpointer(tmp_path, total_steps=5, save_every=0, eval_every=0, keep_last=0)
    ckpt.save(5, None, lambda tmp, best: (tmp / "v").write_text("1"))
    leftover = tmp_path / "checkpoints" / "000005.tmp"
    leftover.mkdir()
    (leftover / "junk").write_text("half written")
    final = ckpt.save(5, None, lambda tmp, best: (tmp / "v").write_text("2"))
    assert (final / "v").read_text() == "2" and not (final / "junk").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["000005"]  # no .old, no .tmp


def test_other_processes_write_their_part_but_not_the_checkpoint(tmp_path) -> None:
    """A process other than 0 calls ``write`` into the directory process 0 created, and the barrier
    around it; it neither creates, renames, points to nor deletes anything."""
    (tmp_path / "checkpoints" / "000003.tmp").mkdir(parents=True)
    barriers = []
    ckpt = Checkpointer(tmp_path, total_steps=3, save_every=1, eval_every=1, keep_last=1, is_main=False,
                        barrier=lambda: barriers.append(1))
    (tmp_path / "checkpoints" / "000001").mkdir()  # an old checkpoint retention would delete
    final = ckpt.save(3, 0.1, lambda tmp, best: (tmp / "rank1.bin").write_bytes(b"r"))
    assert final == tmp_path / "checkpoints" / "000003" and not final.exists()
    assert (tmp_path / "checkpoints" / "000003.tmp" / "rank1.bin").is_file() and len(barriers) == 3
    assert read_pointer(tmp_path, LAST_FILE) is None and (tmp_path / "checkpoints" / "000001").is_dir()
    assert ckpt.best == {"step": 3, "val_loss": 0.1}  # every process tracks the best


def test_retention_with_keep_last_one_deletes_after_each_save(tmp_path) -> None:
    ckpt = Checkpointer(tmp_path, total_steps=4, save_every=1, eval_every=0, keep_last=1)
    for step in (1, 2, 3):
        ckpt.save(step, None, lambda tmp, best: None)
        assert _kept(tmp_path) == [step]
    ckpt.apply_retention()  # again: nothing more to delete
    assert _kept(tmp_path) == [3]


def test_retained_steps_edge_settings() -> None:
    assert retained_steps([100, 150, 200, 300], None, 100, 0) == {100, 150, 200, 300}  # keep_last 0: everything
    assert retained_steps([1, 2, 3, 4], None, 1, 2) == {3, 4}  # save_every 1: every step is periodic
    assert retained_steps([1, 2, 3, 4], 1, 0, 2) == {1, 4}  # save_every 0: the last and the best
