"""Guards against quiet mistakes: stats that do not fit the data, a huge first loss, and an lr
schedule built for another run length."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vla_pipeline.errors import TrainInputError
from vla_pipeline.train.guards import (
    check_initial_loss,
    check_normalized_ranges,
    check_schedule,
    compute_implied_initial_loss,
)

from conftest import make_train_config


def _first_batch(params, tiny_run, tmp_path, stats: dict) -> dict:
    from vla_pipeline.data.sampler import make_loader
    from vla_pipeline.norms import load_split
    from vla_pipeline.train.inputs import make_inputs

    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms)
    inputs = make_inputs(cfg, stats, load_split(tiny_run.norms))
    return inputs.preprocessor(next(make_loader(inputs.dataset, cfg.batch_size, cfg.seed, 0)))


def _shrunk_stats(stats: dict, factor: float) -> dict:
    """Stats of 'another dataset': every quantile range ``factor`` times narrower around its middle."""
    out = json.loads(json.dumps(stats))
    for feature in out["features"].values():
        for lo, hi in (("q01", "q99"), ("q10", "q90"), ("min", "max")):
            mid = [(a + b) / 2 for a, b in zip(feature[lo], feature[hi], strict=True)]
            feature[lo] = [m - (m - a) / factor for m, a in zip(mid, feature[lo], strict=True)]
            feature[hi] = [m + (b - m) / factor for m, b in zip(mid, feature[hi], strict=True)]
        feature["std"] = [s / factor for s in feature["std"]]
    return out


def test_normalized_range_check_flags_stats_of_another_dataset(params, tiny_run, tmp_path) -> None:
    frozen = json.loads((tiny_run.norms / "stats.json").read_text())
    assert check_normalized_ranges(_first_batch(params, tiny_run, tmp_path, frozen), "QUANTILES") == []
    problems = check_normalized_ranges(_first_batch(params, tiny_run, tmp_path, _shrunk_stats(frozen, 20)),
                                       "QUANTILES")
    assert len(problems) == 2 and "'action'" in problems[0] and "observation.state" in problems[1]


def test_initial_loss_check_uses_what_the_stats_imply(tiny_run) -> None:
    frozen = json.loads((tiny_run.norms / "stats.json").read_text())
    implied = compute_implied_initial_loss(frozen, "QUANTILES")
    assert 1.0 < implied < 3.0  # 1 (noise) + E[a^2] of actions normalized to about [-1, 1]
    assert check_initial_loss([1.6, 1.5, 1.4], implied) == []
    assert "3.95e+04" in check_initial_loss([40000.0, 39000.0], implied)[0]
    assert compute_implied_initial_loss(frozen, "MEAN_STD") == 2.0


def test_train_warns_loudly_when_stats_do_not_fit(params, tiny_run, tmp_path, capfd) -> None:
    from vla_pipeline.train.trainer import train

    norms = tmp_path / "norms"
    shutil.copytree(tiny_run.norms, norms)
    frozen = json.loads((norms / "stats.json").read_text())
    (norms / "stats.json").write_text(json.dumps(_shrunk_stats(frozen, 20)))
    train(make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=norms, validation_report=tiny_run.report,
                            wandb_mode="disabled"))
    err = capfd.readouterr().err
    assert "WARNING" in err and "do not describe this data" in err


def test_schedule_built_for_another_length_is_refused() -> None:
    from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig

    preset = CosineDecayWithWarmupSchedulerConfig(num_warmup_steps=10, num_decay_steps=30000, peak_lr=1e-4,
                                                  decay_lr=1e-6)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    check_schedule(preset.build(optimizer, 3000), 3000, 1e-6, 1e-4)  # built with the run's length: ends at decay_lr
    with pytest.raises(TrainInputError, match="not at train.decay_lr"):
        check_schedule(preset.build(optimizer, 30000), 3000, 1e-6, 1e-4)  # LeRobot users' bug: lr stays high
