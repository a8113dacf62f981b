"""Checkpoint retention (`train.keep_last`): the last, the current best and the newest `keep_last`
periodic checkpoints (steps that are multiples of `save_every`) stay; a best that a lower
validation loss superseded goes unless it is periodic and recent enough; `keep_last: 0` keeps
everything. The checkpointer is driven exactly as the training loop drives it, with scripted
validation losses that do not fall every time (so the best is not the last)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_pipeline.checkpoint.checkpointer import Checkpointer, retained_steps
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    LAST_FILE,
    RUN_STATE_FILE,
    TRAINING_STATE_DIR,
    list_checkpoints,
    read_pointer,
)

from conftest import vla, write_train_params


def _write(tmp: Path, best: dict | None, step: int) -> None:
    """What a checkpoint needs here: a file, and the run state a resumed run reads its best from."""
    (tmp / "weights.bin").write_bytes(step.to_bytes(4, "little"))
    (tmp / TRAINING_STATE_DIR).mkdir()
    (tmp / TRAINING_STATE_DIR / RUN_STATE_FILE).write_text(json.dumps({"step": step, "best": best}))


def _train(run_dir: Path, steps: int, save_every: int, eval_every: int, keep_last: int, val: dict[int, float],
           start: int = 0, best: dict | None = None, after_save=None, killed_after: int | None = None) -> Checkpointer:
    """The training loop's calls to the checkpointer, with `val[step]` as the validation loss, from
    step `start + 1` to the end (or to `killed_after`, where the run is killed)."""
    ckpt = Checkpointer(run_dir, steps, save_every, eval_every, keep_last, best=best)
    for step in range(start + 1, (killed_after or steps) + 1):
        val_loss = val[step] if ckpt.should_eval(step) else None
        if ckpt.should_save(step, val_loss):
            ckpt.save(step, val_loss, lambda tmp, b, step=step: _write(tmp, b, step))
            if after_save is not None:
                after_save(step, ckpt)
    return ckpt


def _kept(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in list_checkpoints(run_dir))


# validation every 100 steps; the loss falls to its lowest at 200, then rises
VAL = {100: 1.0, 200: 0.5, 300: 0.7, 400: 0.6, 500: 0.8, 600: 0.9}


def test_the_reported_run_keeps_periodic_150_and_drops_the_superseded_best(tmp_path) -> None:
    """300 steps, save_every 150, eval_every 100, keep_last 2, the loss lowest at the end: the old rule
    (newest `keep_last` of any kind) deleted periodic 150 and kept the superseded best 200."""
    _train(tmp_path, 300, 150, 100, 2, {100: 1.0, 200: 0.8, 300: 0.5})
    assert _kept(tmp_path) == [150, 300]
    assert read_pointer(tmp_path, BEST_FILE)["path"] == read_pointer(tmp_path, LAST_FILE)["path"] == "checkpoints/000300"


def test_best_before_the_last_is_kept_beside_the_periodic_ones(tmp_path) -> None:
    _train(tmp_path, 300, 150, 100, 2, {100: 1.0, 200: 0.5, 300: 0.7})
    assert _kept(tmp_path) == [150, 200, 300]  # periodic 150 and 300 (the last), best 200
    assert read_pointer(tmp_path, BEST_FILE) == {"path": "checkpoints/000200", "step": 200, "val_loss": 0.5}


def test_every_save_keeps_last_best_and_newest_periodic(tmp_path) -> None:
    """After each save of a 600-step run (save_every 250: periodic 250 and 500; eval_every 100), the
    kept steps are exactly the rule's; superseded non-periodic bests (100) go as soon as superseded."""
    seen = {}
    _train(tmp_path, 600, 250, 100, 1, VAL, after_save=lambda step, _: seen.setdefault(step, _kept(tmp_path)))
    assert seen == {
        100: [100],            # first validation: best and last
        200: [200],            # new best; 100 superseded, not periodic
        250: [200, 250],       # periodic
        500: [200, 500],       # periodic: the newest one only (keep_last 1)
        600: [200, 500, 600],  # the last (the loss rose after 200: no new best since)
    }


@pytest.mark.parametrize(("save_every", "keep_last", "kept"), [
    (0, 2, [200, 600]),                           # no periodic checkpoints: the last and the best
    (200, 2, [200, 400, 600]),                    # 600 is periodic and the last
    (200, 1, [200, 600]),
    (250, 3, [200, 250, 500, 600]),
    (250, 0, [100, 200, 250, 500, 600]),          # keep_last 0: every checkpoint saved
])
def test_retention_for_other_settings(tmp_path, save_every, keep_last, kept) -> None:
    _train(tmp_path, 600, save_every, 100, keep_last, VAL)
    assert _kept(tmp_path) == kept


def test_a_resumed_run_keeps_what_an_uninterrupted_one_keeps(tmp_path) -> None:
    """A run killed at any step resumes (as `train` does) from its newest checkpoint with the best of that
    checkpoint's run state, and ends with the same checkpoints; the newest is never deleted in between."""
    reference = tmp_path / "reference"
    _train(reference, 600, 250, 100, 1, VAL)

    def newest_is_last_saved(step: int, _) -> None:
        assert int(list_checkpoints(run)[0].name) == step

    for killed_after in (150, 220, 260, 450, 550, 599):
        run = tmp_path / f"killed{killed_after}"
        _train(run, 600, 250, 100, 1, VAL, killed_after=killed_after, after_save=newest_is_last_saved)
        state = json.loads((list_checkpoints(run)[0] / TRAINING_STATE_DIR / RUN_STATE_FILE).read_text())
        _train(run, 600, 250, 100, 1, VAL, start=state["step"], best=state["best"], after_save=newest_is_last_saved)
        assert _kept(run) == _kept(reference), killed_after


def test_retained_steps_rule() -> None:
    assert retained_steps([], None, 100, 2) == set()
    assert retained_steps([50], None, 100, 2) == {50}  # a last without validation (no best) stays
    assert retained_steps([100, 150, 200, 300], 150, 100, 2) == {150, 200, 300}
    assert retained_steps([100, 150, 200, 300], 999, 100, 2) == {200, 300}  # a best not on disk is no reason to keep


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_real_run_keeps_the_periodic_checkpoints(params, tiny_run, tmp_path) -> None:
    """`vla train` on the tiny model, 6 steps: periodic saves at 3 and 6, validation every 2 steps (a
    new lowest loss saves at 2 and 4); what is left is the rule applied to the logged losses."""
    p = write_train_params(params, tiny_run, tmp_path, steps=6, decay_steps=6, save_every=3, eval_every=2,
                           keep_last=2)
    result = vla("train", "--params", str(p))
    assert result.returncode == 0, result.stderr[-3000:]
    val = {int(s): float(v) for s, v in (line.split("\t") for line in
           (tmp_path / "live/plots/metrics/val/loss.tsv").read_text().splitlines()[1:])}
    assert sorted(val) == [2, 4, 6]
    best = min(val, key=lambda s: (val[s], s))
    saved = sorted({3, 6, 2} | ({4} if val[4] < val[2] else set()))
    expected = sorted({6, 3, best})  # the last (periodic), periodic 3 (keep_last 2), the best
    kept = _kept(tmp_path / "train")
    assert kept == expected, (val, saved, kept)
    assert read_pointer(tmp_path / "train", BEST_FILE)["step"] == best
