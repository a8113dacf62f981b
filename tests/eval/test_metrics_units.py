"""Edge cases of the offline metrics beside tests/eval/test_metrics.py's worked example: the normalization
formulas themselves, limits that sit exactly on a threshold, episodes too short for a difference,
a replan every frame, overlapping chunks, and the defaults of compute_metrics / the episode table."""

from __future__ import annotations

import numpy as np
import pytest

from vla_pipeline.eval.metrics import (
    Executed,
    Predictions,
    compute_chunk_metrics,
    compute_episode_table,
    compute_executed,
    compute_joint_errors,
    compute_masked_mse,
    compute_metric_key,
    compute_metrics,
    compute_normalized,
    compute_saturation,
    compute_smoothness,
    pick_representative,
)


def ramp(n_queries: int, chunk: int = 2, episode: int = 0, task: str = "reach", start: int = 0,
         every: int = 1, offset: float = 0.0) -> Predictions:
    """One joint; frame f's demonstration is f. A query every ``every`` frames predicts its chunk
    ``offset`` above the demonstration; steps past the last frame are padding."""
    frames = start + every * np.arange(n_queries)
    last = frames[-1] + every - 1  # the episode ends with the last query's stride
    target = (frames[:, None] + np.arange(chunk)[None, :]).astype(float)[..., None]
    pad = target[..., 0] > last
    return Predictions(target + offset, target, pad, frames[:, None].astype(float), np.full(n_queries, episode),
                       frames, [task] * n_queries)


def executed(pred: list[float], boundary: list[bool] | None = None) -> Executed:
    n = len(pred)
    x = np.array(pred, dtype=float).reshape(n, 1)
    return Executed(np.arange(n), x, x.copy(), np.array(boundary or [False] * n, dtype=bool))


def test_select_keeps_every_field_of_the_chosen_rows() -> None:
    p = ramp(4, task="t")
    p.task = ["a", "b", "c", "d"]
    sub = p.select(np.array([False, True, False, True]))
    assert sub.frame.tolist() == [1, 3] and sub.episode.tolist() == [0, 0] and sub.task == ["b", "d"]
    assert sub.pred.shape == (2, 2, 1) and sub.state.tolist() == [[1.0], [3.0]] and sub.pad.shape == (2, 2)
    assert sub.target[:, 0, 0].tolist() == [1.0, 3.0]


def test_normalization_formulas() -> None:
    stats = {"mean": [1.0], "std": [2.0], "q01": [-2.0], "q99": [6.0]}
    x = np.array([[-2.0], [2.0], [6.0]])
    assert compute_normalized(x, stats, "MEAN_STD")[:, 0] == pytest.approx([-1.5, 0.5, 2.5], rel=1e-7)
    assert compute_normalized(x, stats, "QUANTILES")[:, 0].tolist() == [-1.0, 0.0, 1.0]
    # a zero spread is floored (1e-8), never a division by zero; the sign of the offset is kept
    flat = {"mean": [1.0], "std": [0.0], "q01": [3.0], "q99": [3.0]}
    assert compute_normalized(np.array([3.0]), flat, "MEAN_STD")[0] == pytest.approx(2e8)
    assert compute_normalized(np.array([3.0 + 1e-8]), flat, "QUANTILES")[0] == pytest.approx(1.0)


def test_masked_mse_message() -> None:
    with pytest.raises(ValueError) as e:
        compute_masked_mse(np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 1), dtype=bool))
    assert str(e.value) == "no valid (unpadded) steps to evaluate"


def test_joint_errors_are_per_joint() -> None:
    pred = np.array([[[1.0, 0.0], [3.0, 0.0]]])
    target = np.array([[[0.0, 0.0], [0.0, -2.0]]])
    p = Predictions(pred, target, np.zeros((1, 2), dtype=bool), np.zeros((1, 2)), np.zeros(1), np.zeros(1), ["t"])
    assert compute_joint_errors(p, ["a", "b"]) == {
        "a": {"mae": 2.0, "rmse": pytest.approx(np.sqrt(5.0)), "max_abs_error": 3.0},
        "b": {"mae": 1.0, "rmse": pytest.approx(np.sqrt(2.0)), "max_abs_error": 2.0}}


def test_a_replan_every_frame_marks_a_boundary_at_every_frame_but_the_first() -> None:
    ex = compute_executed(ramp(4), stride=1)[0]
    assert ex.frames.tolist() == [0, 1, 2, 3] and ex.boundary.tolist() == [False, True, True, True]


def test_executed_frames_are_sorted_whatever_the_row_order() -> None:
    p = ramp(3, every=2)
    p = p.select(np.array([True, True, True]))
    order = np.array([2, 0, 1])
    p = Predictions(p.pred[order], p.target[order], p.pad[order], p.state[order], p.episode[order], p.frame[order],
                    [p.task[i] for i in order])
    ex = compute_executed(p, stride=2)[0]
    assert ex.frames.tolist() == [0, 1, 2, 3, 4, 5] and ex.target[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert ex.boundary.tolist() == [False, False, True, False, True, False]


def test_overlapping_chunks_are_refused() -> None:
    with pytest.raises(ValueError) as e:
        compute_executed(ramp(3, chunk=3, episode=4), stride=2)  # queries every frame, 2 actions each
    assert str(e.value) == "episode 4: chunks overlap in execution (stride 2); frames must be unique"


def test_smoothness_counts_short_trajectories_where_a_difference_exists() -> None:
    # two steps: one delta (2); four steps: three deltas (1 1 1) and one third difference (0 -> |d3| = 0)
    two, four = executed([0.0, 2.0]), executed([0.0, 1.0, 2.0, 3.0])
    s = compute_smoothness({0: two, 1: four})
    assert s["mean_abs_delta"] == pytest.approx((2 + 1 + 1 + 1) / 4)
    assert s["jerk"] == 0.0
    jerky = executed([0.0, 1.0, 0.0, 4.0])  # third difference: 4 - 3*0 + 3*1 - 0 = 7
    assert compute_smoothness({0: jerky})["jerk"] == 7.0
    assert compute_smoothness({0: jerky, 1: two})["jerk"] == 7.0  # too short for a third difference: left out


def test_smoothness_without_differences_or_boundaries_is_zero() -> None:
    s = compute_smoothness({0: executed([5.0]), 1: executed([1.0, 1.0], [False, False])})
    assert s["mean_abs_delta"] == 0.0 and s["jerk"] == 0.0
    assert s["chunk_boundary_jump"] == 0.0 and s["chunk_boundary_jump_max"] == 0.0
    single = compute_smoothness({0: executed([5.0])})
    assert single == {k: 0.0 for k in single} and len(single) == 8
    assert compute_smoothness({}) == single


def test_saturation_limits_are_inclusive_bands_and_exclusive_clips() -> None:
    # range [10, 20], margin 0.1: band 1 -> saturated at <= 11 or >= 19; clipped below 10 or above 20
    ex = {0: executed([10.0, 11.0, 11.5, 18.5, 19.0, 20.0, 20.5, 9.5])}
    sat = compute_saturation(ex, ["j"], {"j": (10.0, 20.0)}, margin=0.1)
    assert sat["joints"]["j"] == {"clip_count": 2, "saturation_count": 6}
    assert sat["clip_fraction"] == 2 / 8


def test_saturation_skips_joints_without_range_wherever_they_are() -> None:
    x = np.array([[50.0, 0.0], [50.0, 5.0]])
    ex = {0: Executed(np.arange(2), x, x, np.zeros(2, dtype=bool))}
    sat = compute_saturation(ex, ["free", "grip"], {"grip": (0.0, 4.0)}, margin=0.0)
    assert sat == {"clip_count": 1, "saturation_count": 2, "joints": {"grip": {"clip_count": 1, "saturation_count": 2}},
                   "clip_fraction": 1 / 4}


def test_saturation_of_nothing_executed() -> None:
    empty = Executed(np.zeros(0, dtype=int), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0, dtype=bool))
    assert compute_saturation({0: empty}, ["j"], {"j": (0.0, 1.0)}, margin=0.1)["clip_fraction"] == 0.0


STATS = {"mean": [1.0], "std": [4.0], "q01": [0.0], "q99": [16.0]}  # differences x 1/4 (MEAN_STD), x 1/8 (QUANTILES)


def test_metrics_default_margin_is_one_percent_of_the_range() -> None:
    # range [0, 100]: saturated at <= 1 or >= 99
    p = ramp(3, every=2, offset=0.0)
    p.pred[:, :, 0] = [[0.5, 1.0], [1.5, 98.5], [99.0, 50.0]]
    m = compute_metrics(p, STATS, "QUANTILES", ["j"], {"j": (0.0, 100.0)}, stride=2)
    assert m["saturation"]["saturation_count"] == 3
    table = compute_episode_table(p, STATS, "QUANTILES", ["j"], {"j": (-1.0, 98.0)}, stride=2)
    assert table[0]["clip_count"] == 2  # 98.5 and 99 above 98


def test_per_task_and_episode_table_use_the_given_normalization() -> None:
    p = ramp(2, every=2, offset=2.0, task="Reach it")  # every valid step is 2 above the demonstration
    m = compute_metrics(p, STATS, "MEAN_STD", ["j"], {}, stride=2)
    assert m["action_mse_normalized"] == pytest.approx(0.25)  # (2 / 4)^2
    assert m["per_task"] == {"reach_it": {**compute_chunk_metrics(p, STATS, "MEAN_STD"), "n_frames": 2}}
    assert m["per_task"]["reach_it"]["action_mse_normalized"] == pytest.approx(0.25)
    table = compute_episode_table(p, STATS, "MEAN_STD", ["j"], {}, stride=2)
    assert table[0]["action_mse_normalized"] == pytest.approx(0.25)


def test_episode_table_row() -> None:
    # 2 queries at frames 0 and 2, stride 2, chunk 2: executed 0..3 each 2 above; state = query frame
    p = ramp(2, every=2, offset=2.0, episode=3, task="reach")
    row = compute_episode_table(p, STATS, "QUANTILES", ["j"], {"j": (0.0, 4.0)}, stride=2, margin=0.0)[0]
    # hold baseline: targets 0 1 | 2 3 against states 0 | 2 -> squares 0 1 0 1, normalized by (16 / 2)^2
    assert row == {
        "episode_index": 3, "task": "reach", "n_frames": 4, "n_queries": 2,
        "action_mse": 4.0, "action_mse_normalized": pytest.approx(4.0 / 64),
        "baseline_hold_mse_normalized": pytest.approx(0.5 / 64), "max_abs_error": 2.0,
        "mean_abs_delta": 1.0, "mean_abs_delta_gt": 1.0, "chunk_boundary_jump": 1.0, "clip_count": 1,  # 5 > 4
    }
    one = compute_episode_table(ramp(1, episode=5, task="solo"), STATS, "QUANTILES", ["j"], {}, stride=1)
    assert [(r["episode_index"], r["task"], r["n_queries"]) for r in one] == [(5, "solo", 1)]


def test_representative_episodes_break_ties_by_index() -> None:
    table = [{"episode_index": e, "action_mse_normalized": v, "x": -e} for e, v in ((4, 1.0), (2, 1.0), (9, 0.5),
                                                                                       (1, 3.0))]
    assert pick_representative(table) == {"best": 9, "median": 2, "worst": 1}
    assert pick_representative(table, key="x") == {"best": 9, "median": 4, "worst": 1}
    assert pick_representative(table[:2]) == {"best": 2, "median": 2, "worst": 4}
    five = [*table, {"episode_index": 6, "action_mse_normalized": 2.0, "x": 0}]  # 9 2 4 6 1: the median is 4
    assert pick_representative(five) == {"best": 9, "median": 4, "worst": 1}


@pytest.mark.parametrize(("task", "key"), [
    ("Pick up the red cube.", "pick_up_the_red_cube"), ("  --  ", "task"), ("a.b/c", "a_b_c"), ("ÄB 9", "b_9"), ("Stack X", "stack_x"),
])
def test_metric_keys(task, key) -> None:
    assert compute_metric_key(task) == key
