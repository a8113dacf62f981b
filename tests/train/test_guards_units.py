"""The training guards on small hand-made inputs: where each threshold lies (a value on the bound is
not beyond it), what is left out (padded steps), the loss the frozen stats imply computed by hand,
and the messages. tests/train/test_guards.py runs the same guards on a real training batch."""

from __future__ import annotations

import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_STATE

from vla_pipeline.errors import ConfigError, TrainInputError, warn_loudly
from vla_pipeline.train.guards import (
    check_initial_loss,
    check_normalized_ranges,
    check_prompt_fits,
    check_schedule,
    compute_implied_initial_loss,
    report_problems,
)

BAR = "!" * 78


def test_warn_loudly_frames_the_message_on_stderr(capsys) -> None:
    warn_loudly("stats do not fit")
    out, err = capsys.readouterr()
    assert out == "" and err == f"\n{BAR}\nWARNING: stats do not fit\n{BAR}\n\n"


def test_report_problems_warns_once_per_problem(capsys) -> None:
    report_problems(["first", "second"])
    err = capsys.readouterr().err
    assert err == f"\n{BAR}\nWARNING: first\n{BAR}\n\n\n{BAR}\nWARNING: second\n{BAR}\n\n"
    report_problems([])
    assert capsys.readouterr().err == ""


def test_a_prompt_that_reaches_the_last_token_is_refused() -> None:
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[:, :5] = True  # every prompt ends one token before the window's end: it fits
    check_prompt_fits({OBS_LANGUAGE_ATTENTION_MASK: mask})
    mask[1, 5] = True  # one prompt fills the window
    with pytest.raises(ConfigError) as e:
        check_prompt_fits({OBS_LANGUAGE_ATTENTION_MASK: mask})
    assert str(e.value) == ("a prompt (task + discretized state) fills all policy.tokenizer_max_length=6 tokens and "
                            "may be truncated; raise policy.tokenizer_max_length")


def _batch(action: list[list[float]], state: list[float], pad: list[bool] | None = None) -> dict:
    """One sample: an action chunk (chunk, 1 joint), a state (1 joint) and, optionally, the chunk's padding."""
    batch = {ACTION: torch.tensor(action)[None], OBS_STATE: torch.tensor(state)[None]}
    if pad is not None:
        batch[f"{ACTION}_is_pad"] = torch.tensor(pad)[None]
    return batch


def test_range_check_counts_values_beyond_the_bound_and_ignores_padding() -> None:
    # 20 action values, one (5%) beyond 1.5, two on the bound (not beyond it): within RANGE_SHARE
    assert check_normalized_ranges(_batch([[1.5], [-1.5], [2.0], *[[0.0]] * 17], [0.0]), "QUANTILES") == []
    # three beyond: 15%
    problems = check_normalized_ranges(_batch([[1.5], [-1.6], [2.0], [2.1], *[[0.0]] * 16], [0.0]), "QUANTILES")
    assert problems == [
        "15% of normalized 'action' values lie beyond +-1.5 (max |x| = 2.1) under QUANTILES normalization: the "
        "frozen stats do not describe this data (another dataset, joint order or units?). Re-run `dvc repro norms`."]
    # the same values in padded steps do not count
    padded = [[0.0]] * 16 + [[9.0], [-9.0], [9.0], [-9.0]]
    assert check_normalized_ranges(_batch(padded, [0.0], [False] * 16 + [True] * 4), "QUANTILES") == []
    assert len(check_normalized_ranges(_batch(padded, [0.0], [False] * 20), "QUANTILES")) == 1


def test_range_check_uses_the_bound_of_the_normalization_and_checks_the_state() -> None:
    action = [[0.0]] * 10
    assert check_normalized_ranges(_batch(action, [3.9]), "MEAN_STD") == []
    problems = check_normalized_ranges(_batch(action, [4.5]), "MEAN_STD")
    assert len(problems) == 1 and problems[0].startswith(
        "100% of normalized 'observation.state' values lie beyond +-4.0 (max |x| = 4.5) under MEAN_STD")
    assert len(check_normalized_ranges(_batch(action, [3.9]), "QUANTILES")) == 1


def _stats(**features) -> dict:
    return {"features": {ACTION: {**features, "constant": [False] * len(features["mean"])}}}


def test_implied_initial_loss_by_hand() -> None:
    # joint 0: q01 0, q99 4 -> half 2, centre 2; mean 3, std 1: ((3 - 2) / 2)^2 + (1 / 2)^2 = 0.5
    # joint 1: q01 -1, q99 1 -> half 1, centre 0; mean 0, std 0.5: 0 + 0.25 = 0.25
    # joint 2: q01 = q99 = 0 -> half floored at 1e-8; mean 0, std 1e-8: 0 + 1 = 1
    stats = _stats(mean=[3.0, 0.0, 0.0], std=[1.0, 0.5, 1e-8], q01=[0.0, -1.0, 0.0], q99=[4.0, 1.0, 0.0])
    assert compute_implied_initial_loss(stats, "QUANTILES") == pytest.approx(1 + (0.5 + 0.25 + 1.0) / 3, rel=1e-12)
    assert compute_implied_initial_loss(stats, "MEAN_STD") == 2.0  # E[a^2] = 1 under its own mean and std


def test_initial_loss_check_flags_more_than_five_times_the_implied_loss() -> None:
    assert check_initial_loss([9.0, 11.0], 2.0) == []  # mean 10: exactly 5x is not more
    assert check_initial_loss([9.0, 11.5, 10.0], 2.0) == [
        "the first 3 steps' mean loss is 10.17; the frozen stats imply about 2 for an untrained model. The stats do "
        "not fit the data or the lr is far too high."]


def _scheduler(end_factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A schedule whose lr factor is 1 until step 100 and ``end_factor`` from then on."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 100 else end_factor)


def test_schedule_must_end_at_decay_lr_within_tolerance() -> None:
    check_schedule(_scheduler(0.5004), 100, decay_lr=1.0, peak_lr=2.0)  # ends at 1.0008: within 0.1%
    with pytest.raises(TrainInputError) as e:
        check_schedule(_scheduler(0.5015), 100, decay_lr=1.0, peak_lr=2.0)  # 1.003: 0.3% off
    assert str(e.value) == ("the lr schedule ends at 1 on step 100, not at train.decay_lr=1: it was not built for "
                            "this run's length")
    with pytest.raises(TrainInputError, match="ends at 2 on step 99"):
        check_schedule(_scheduler(0.5), 99, decay_lr=1.0, peak_lr=2.0)  # the schedule is read at the run's last step


def test_schedule_ending_near_zero_is_compared_within_a_thousandth_of_the_peak() -> None:
    check_schedule(_scheduler(0.00075), 100, decay_lr=0.0, peak_lr=2.0)  # ends at 1.5e-3 <= 2e-3
    with pytest.raises(TrainInputError, match="ends at 0.003 on step 100"):
        check_schedule(_scheduler(0.0015), 100, decay_lr=0.0, peak_lr=2.0)
