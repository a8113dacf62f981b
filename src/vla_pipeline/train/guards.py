"""Checks against quiet training mistakes that LeRobot and openpi users have hit: a truncated
prompt, stats that do not fit the data (normalized values far out of range, a huge first loss),
and an lr schedule that does not match the run's length."""

from __future__ import annotations

import math

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_STATE

from vla_pipeline.errors import ConfigError, TrainingDivergedError, TrainInputError, warn_loudly

# share of normalized values allowed beyond the bound (train data under its own stats: ~2% beyond +-1)
RANGE_BOUND = {"QUANTILES": 1.5, "MEAN_STD": 4.0}
RANGE_SHARE = 0.10
LOSS_FACTOR = 5.0  # a first loss this many times what the stats imply means the stats do not fit


def check_prompt_fits(batch: dict) -> None:
    """LeRobot's tokenizer step truncates silently; a prompt that fills the window was cut."""
    mask = batch[OBS_LANGUAGE_ATTENTION_MASK]
    if bool(mask[:, -1].any()):
        raise ConfigError(
            f"a prompt (task + discretized state) fills all policy.tokenizer_max_length={mask.shape[1]} "
            f"tokens and may be truncated; raise policy.tokenizer_max_length"
        )


def check_normalized_ranges(batch: dict, normalization: str) -> list[str]:
    """Normalized action/state values of a training batch far outside what the frozen stats imply."""
    bound, problems = RANGE_BOUND[normalization], []
    for key in (ACTION, OBS_STATE):
        values = batch[key].detach().float()
        if key == ACTION and f"{ACTION}_is_pad" in batch:
            values = values[~batch[f"{ACTION}_is_pad"]]
        share = float((values.abs() > bound).float().mean())
        if share > RANGE_SHARE:
            problems.append(
                f"{share:.0%} of normalized '{key}' values lie beyond +-{bound} (max |x| = "
                f"{float(values.abs().max()):.3g}) under {normalization} normalization: the frozen stats do not "
                f"describe this data (another dataset, joint order or units?). Re-run `dvc repro norms`."
            )
    return problems


def compute_implied_initial_loss(stats_doc: dict, normalization: str) -> float:
    """Flow-matching loss of an untrained model (prediction ~ 0): E|noise - a|^2 = 1 + E[a^2], with
    E[a^2] of the normalized action computed from the frozen stats of the train split."""
    s = {k: np.asarray(v, dtype=np.float64) for k, v in stats_doc["features"][ACTION].items() if k != "constant"}
    if normalization == "MEAN_STD":
        second_moment = np.ones_like(s["mean"])
    else:  # x -> 2 (x - q01) / (q99 - q01) - 1
        half = np.maximum((s["q99"] - s["q01"]) / 2, 1e-8)
        second_moment = ((s["mean"] - (s["q99"] + s["q01"]) / 2) / half) ** 2 + (s["std"] / half) ** 2
    return 1.0 + float(np.mean(second_moment))


def check_initial_loss(losses: list[float], implied: float) -> list[str]:
    mean = float(np.mean(losses))
    if mean > LOSS_FACTOR * implied:
        return [f"the first {len(losses)} steps' mean loss is {mean:.4g}; the frozen stats imply about {implied:.3g} "
                f"for an untrained model. The stats do not fit the data or the lr is far too high."]
    return []


def check_schedule(scheduler, steps: int, decay_lr: float, peak_lr: float) -> None:
    """The schedule must end at ``decay_lr`` on the run's last step (LeRobot's cosine preset rescales
    its decay only when built with the run's total steps; otherwise the lr stays near its peak)."""
    end = peak_lr * scheduler.lr_lambdas[0](steps)
    if not math.isclose(end, decay_lr, rel_tol=1e-3, abs_tol=1e-3 * peak_lr):
        raise TrainInputError(
            f"the lr schedule ends at {end:.3g} on step {steps}, not at train.decay_lr={decay_lr:.3g}: it was not "
            f"built for this run's length"
        )


def report_problems(problems: list[str]) -> None:
    for problem in problems:
        warn_loudly(problem)


def raise_if_diverged(nonfinite: torch.Tensor, step: int) -> None:
    """Stop the run when the loss went NaN/Inf at any step since the last check (read only at checks)."""
    if bool(nonfinite):
        raise TrainingDivergedError(f"the loss became NaN/Inf at or before step {step}; lower train.lr or check "
                                    f"the data")
