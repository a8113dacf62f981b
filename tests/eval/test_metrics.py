"""Every evaluation metric against a hand computation on a small fixed example.

One episode of 5 frames, 2 joints, chunks of 3, replanning every 2 frames (queries at 0, 2, 4):

    demonstration  j0: 0 1 2 3 4      j1: 10 10 10 10 10
    chunk @0       j0: 0 2 5          j1: 10 10 10
    chunk @2       j0: 1 3 9          j1: 10 12 10
    chunk @4       j0: 7 (99 99 pad)  j1: 10 (0 0 pad)

Executed (first 2 actions of each chunk): j0 0 2 1 3 7, j1 10 10 10 12 10; chunk boundaries at
frames 2 and 4. The padded 99s and the unexecuted 9 must never count.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_pipeline.eval.metrics import (
    Predictions,
    compute_episode_table,
    compute_executed,
    compute_masked_mse,
    compute_metric_key,
    compute_metrics,
    compute_saturation,
    compute_smoothness,
    pick_representative,
)

JOINTS = ["j0", "j1"]
RANGES = {"j0": (0.0, 6.0), "j1": (0.0, 11.0)}
STATS = {"mean": [2.0, 10.0], "q01": [0.0, 0.0], "q99": [4.0, 20.0]}  # normalized differences: x0.5, x0.1


def episode(index: int = 0, task: str = "stack the cubes", perfect: bool = False) -> Predictions:
    gt = np.array([[0, 10], [1, 10], [2, 10], [3, 10], [4, 10]], dtype=float)
    target = np.array([gt[0:3], gt[2:5], [gt[4], gt[4], gt[4]]])
    pred = np.array([
        [[0, 10], [2, 10], [5, 10]],
        [[1, 10], [3, 12], [9, 10]],
        [[7, 10], [99, 0], [99, 0]],
    ], dtype=float)
    pad = np.array([[False] * 3, [False] * 3, [False, True, True]])
    state = np.array([[0, 10], [2, 10], [4, 10]], dtype=float)
    if perfect:
        pred = np.where(pad[..., None], pred, target)
    return Predictions(pred, target, pad, state, np.full(3, index), np.array([0, 2, 4]), [task] * 3)


def join(*parts: Predictions) -> Predictions:
    return Predictions(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                         ("pred", "target", "pad", "state", "episode", "frame")), sum((p.task for p in parts), []))


def metrics(p: Predictions) -> dict:
    return compute_metrics(p, STATS, "QUANTILES", JOINTS, RANGES, stride=2, margin=0.1)


def test_chunk_errors_per_joint_ignore_padding() -> None:
    m = metrics(episode())
    # valid errors j0: 0 1 3 | -1 0 5 | 3 ; j1: 0 0 0 | 0 2 0 | 0
    assert m["action_mse"] == pytest.approx((45 + 4) / 14)
    assert m["action_mse_normalized"] == pytest.approx((45 * 0.25 + 4 * 0.01) / 14)
    assert m["joints"]["j0"]["mae"] == pytest.approx(13 / 7)
    assert m["joints"]["j0"]["rmse"] == pytest.approx(np.sqrt(45 / 7))
    assert m["joints"]["j0"]["max_abs_error"] == 5.0  # not 95 (padding)
    assert m["joints"]["j1"]["mae"] == pytest.approx(2 / 7)
    assert m["joints"]["j1"]["rmse"] == pytest.approx(np.sqrt(4 / 7))
    assert m["joints"]["j1"]["max_abs_error"] == 2.0
    assert (m["n_frames"], m["n_valid_steps"], m["n_executed_steps"], m["n_episodes"]) == (3, 7, 5, 1)


def test_baselines_hold_position_and_mean_action() -> None:
    m = metrics(episode())
    # hold: j0 targets minus state 0|2|4: 0 1 2 | 0 1 2 | 0 -> squares 10, j1 0
    assert m["baseline_hold_mse"] == pytest.approx(10 / 14)
    assert m["baseline_hold_mse_normalized"] == pytest.approx(10 * 0.25 / 14)
    # mean action (2, 10): j0 targets 0 1 2 2 3 4 4 minus 2 -> squares 14
    assert m["baseline_mean_mse"] == pytest.approx(14 / 14)
    assert m["baseline_mean_mse_normalized"] == pytest.approx(14 * 0.25 / 14)


def test_executed_trajectory_takes_the_first_stride_actions_of_each_chunk() -> None:
    ex = compute_executed(episode(), stride=2)[0]
    assert ex.frames.tolist() == [0, 1, 2, 3, 4]
    assert ex.pred[:, 0].tolist() == [0, 2, 1, 3, 7]
    assert ex.pred[:, 1].tolist() == [10, 10, 10, 12, 10]
    assert ex.target[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert ex.boundary.tolist() == [False, False, True, False, True]


def test_smoothness_and_chunk_boundary_jump() -> None:
    s = compute_smoothness(compute_executed(episode(), stride=2))
    # |delta|: j0 2 1 2 4, j1 0 0 2 2
    assert s["mean_abs_delta"] == pytest.approx(13 / 8)
    assert s["mean_abs_delta_gt"] == pytest.approx(4 / 8)
    # third differences: j0 6 -1, j1 2 -6; the demonstration is linear/constant
    assert s["jerk"] == pytest.approx(15 / 4)
    assert s["jerk_gt"] == 0.0
    # boundary at frame 2: |1-2|, |10-10|; at frame 4: |7-3|, |10-12|
    assert s["chunk_boundary_jump"] == pytest.approx((1 + 0 + 4 + 2) / 4)
    assert s["chunk_boundary_jump_max"] == 4.0
    assert s["chunk_boundary_jump_gt"] == pytest.approx(0.5)
    assert s["chunk_boundary_jump_max_gt"] == 1.0


def test_clipping_and_saturation_count_executed_actions_only() -> None:
    sat = compute_saturation(compute_executed(episode(), stride=2), JOINTS, RANGES, margin=0.1)
    # j0 executed 0 2 1 3 7 in [0, 6]: 7 clips; within 0.6 of a limit: 0 and 7. The unexecuted 9 and
    # the padded 99 do not count. j1 10 10 10 12 10 in [0, 11]: 12 clips; all within 1.1 of 11.
    assert sat["joints"]["j0"] == {"clip_count": 1, "saturation_count": 2}
    assert sat["joints"]["j1"] == {"clip_count": 1, "saturation_count": 5}
    assert (sat["clip_count"], sat["saturation_count"]) == (2, 7)
    assert sat["clip_fraction"] == pytest.approx(2 / 10)
    m = metrics(episode())
    assert m["joints"]["j0"]["clip_count"] == 1 and m["saturation"]["clip_count"] == 2


def test_actions_below_the_lower_bound_clip_too() -> None:
    p = episode()
    p.pred[1, 0, 0] = -2.0  # executed at frame 2: j0 runs 0 2 -2 3 7 in [0, 6]
    sat = compute_saturation(compute_executed(p, stride=2), JOINTS, RANGES, margin=0.1)
    assert sat["joints"]["j0"] == {"clip_count": 2, "saturation_count": 3}  # -2 and 7 clip; 0, -2, 7 saturate
    assert metrics(p)["joints"]["j0"]["clip_count"] == 2 and metrics(p)["saturation"]["clip_count"] == 3


def test_metrics_measure_smoothness_on_the_executed_trajectory_not_per_chunk() -> None:
    """compute_metrics's smoothness is that of the executed trajectory (j0 0 2 1 3 7, j1 10 10 10 12 10),
    across chunk boundaries. Per chunk it would differ: the executed parts ([0 2], [1 3], [7]) give a
    mean |delta| of 6/4, the whole chunks 17/8, and no third difference at all."""
    s = metrics(episode())["smoothness"]
    assert s["mean_abs_delta"] == pytest.approx(13 / 8)
    assert s["jerk"] == pytest.approx(15 / 4)
    assert s["chunk_boundary_jump"] == pytest.approx(7 / 4)
    table = compute_episode_table(episode(), STATS, "QUANTILES", JOINTS, RANGES, stride=2, margin=0.1)
    assert table[0]["mean_abs_delta"] == pytest.approx(13 / 8) and table[0]["chunk_boundary_jump"] == pytest.approx(7 / 4)


def test_joints_without_a_range_are_not_counted() -> None:
    sat = compute_saturation(compute_executed(episode(), stride=2), JOINTS, {"j0": (0.0, 6.0)}, margin=0.1)
    assert set(sat["joints"]) == {"j0"} and sat["clip_count"] == 1


def test_per_task_per_episode_and_representative_episodes() -> None:
    p = join(episode(0, "stack the cubes"), episode(7, "Wave!", perfect=True))
    m = metrics(p)
    assert m["action_mse"] == pytest.approx(49 / 28)
    assert set(m["per_task"]) == {"stack_the_cubes", "wave"}
    assert m["per_task"]["wave"]["action_mse"] == 0.0
    assert m["per_task"]["stack_the_cubes"]["action_mse"] == pytest.approx(49 / 14)
    assert m["per_task"]["stack_the_cubes"]["n_frames"] == 3
    table = compute_episode_table(p, STATS, "QUANTILES", JOINTS, RANGES, stride=2, margin=0.1)
    assert [r["episode_index"] for r in table] == [0, 7]
    assert table[0]["action_mse"] == pytest.approx(49 / 14) and table[1]["action_mse"] == 0.0
    assert table[0]["chunk_boundary_jump"] == pytest.approx(1.75) and table[0]["clip_count"] == 2
    assert table[0]["n_frames"] == 5 and table[0]["max_abs_error"] == 5.0
    assert pick_representative(table) == {"best": 7, "median": 7, "worst": 0}


def test_masked_mse_ignores_padding_and_refuses_nothing_to_score() -> None:
    pred = np.zeros((1, 3, 2))
    target = np.array([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    valid = np.array([[True, True, False]])
    assert compute_masked_mse(pred, target, valid) == pytest.approx((1 + 1 + 4 + 4) / 4)
    with pytest.raises(ValueError, match="no valid"):
        compute_masked_mse(pred, target, np.zeros_like(valid))


def test_mean_std_normalization() -> None:
    stats = {**STATS, "std": [2.0, 1.0]}
    m = compute_metrics(episode(), stats, "MEAN_STD", JOINTS, RANGES, stride=2)
    assert m["action_mse_normalized"] == pytest.approx((45 / 4 + 4) / 14, rel=1e-6)


def test_metric_keys_for_task_strings() -> None:
    assert compute_metric_key("Pick up the red cube.") == "pick_up_the_red_cube"
