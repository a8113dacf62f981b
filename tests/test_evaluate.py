"""Evaluation metrics against hand computations, and the evaluate entry point on a real checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_pipeline.evaluate import EvaluateConfig, compute_masked_mse, compute_metrics, evaluate


def test_masked_mse_ignores_padding() -> None:
    pred = np.zeros((1, 3, 2))
    target = np.array([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    valid = np.array([[True, True, False]])
    assert compute_masked_mse(pred, target, valid) == pytest.approx((1 + 1 + 4 + 4) / 4)
    with pytest.raises(ValueError, match="no valid"):
        compute_masked_mse(pred, target, np.zeros_like(valid))


def test_metrics_hold_baseline_and_normalization() -> None:
    arrays = {
        "pred": np.array([[[1.0], [2.0]]]),
        "target": np.array([[[1.0], [3.0]]]),
        "state": np.array([[0.0]]),
        "pad": np.array([[False, False]]),
    }
    stats = {"q01": [0.0], "q99": [2.0]}  # normalized x = x - 1
    m = compute_metrics(arrays, stats)
    assert m["action_mse"] == pytest.approx(0.5)
    assert m["baseline_hold_mse"] == pytest.approx((1 + 9) / 2)
    assert m["action_mse_normalized"] == pytest.approx(0.5)
    assert m["n_valid_steps"] == 2


def test_evaluate_is_repeatable(tiny_run, tmp_path) -> None:
    cfg = EvaluateConfig(tiny_run.checkpoint, tiny_run.dataset, tiny_run.norms, tmp_path / "a", stride=4)
    first = evaluate(cfg)
    second = evaluate(EvaluateConfig(tiny_run.checkpoint, tiny_run.dataset, tiny_run.norms, tmp_path / "b", stride=4))
    assert first == second
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == first
    assert {"action_mse", "baseline_hold_mse", "action_mse_normalized"} <= set(first)
    assert first["n_valid_steps"] > 0


def test_evaluate_refuses_another_split(tiny_run, tmp_path) -> None:
    import shutil

    from vla_pipeline.errors import CheckpointError

    norms = tmp_path / "norms"
    shutil.copytree(tiny_run.norms, norms)
    split = json.loads((norms / "split.json").read_text())
    split["train"], split["val"] = split["train"][1:], split["val"] + split["train"][:1]
    (norms / "split.json").write_text(json.dumps(split))
    with pytest.raises(CheckpointError, match="could score training episodes"):
        evaluate(EvaluateConfig(tiny_run.checkpoint, tiny_run.dataset, norms, tmp_path / "out"))
