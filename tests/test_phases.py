"""phases.timed: the spans the full-size rehearsal splits a stage's wall time with."""

from __future__ import annotations

import json

import pytest

from vla_pipeline.checkpoint.checkpointer import Checkpointer
from vla_pipeline.phases import PHASE_LOG_ENV, timed


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_spans_go_to_the_named_file_with_their_nesting_depth(tmp_path, monkeypatch) -> None:
    log = tmp_path / "phases.jsonl"
    monkeypatch.setenv(PHASE_LOG_ENV, str(log))
    with timed("saving", "outer"), timed("hashing", "inner"):
        pass
    with pytest.raises(RuntimeError), timed("loading", "fails"):  # a span that raises is still recorded
        raise RuntimeError("boom")
    rows = _records(log)
    assert [(r["kind"], r["what"], r["depth"]) for r in rows] == [("hashing", "inner", 1), ("saving", "outer", 0),
                                                                  ("loading", "fails", 0)]
    assert all(r["seconds"] >= 0 for r in rows)
    with pytest.raises(ValueError), timed("thinking", "not a kind"):
        pass


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PHASE_LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with timed("copying", "x"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_save_is_a_saving_span_with_its_manifest_hashing_inside(tmp_path, monkeypatch) -> None:
    log = tmp_path / "phases.jsonl"
    monkeypatch.setenv(PHASE_LOG_ENV, str(log))
    ckpt = Checkpointer(tmp_path / "run", total_steps=2, save_every=1, eval_every=0, keep_last=0)
    ckpt.save(1, None, lambda tmp, best: (tmp / "weights.bin").write_bytes(b"\0" * 1024))
    rows = _records(log)
    assert [(r["kind"], r["depth"]) for r in rows] == [("hashing", 1), ("saving", 0)]
