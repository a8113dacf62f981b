"""The one-step memory probe: LeRobot's tiny Pi0.5 with random weights, one real training step per
batch size in a child process; a batch that does not fit the budget fails with the largest that does."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest

from vla_pipeline.errors import PreflightError
from vla_pipeline.params.load import load_params
from vla_pipeline.preflight import probe
from vla_pipeline.preflight.run import (
    PreflightConfig,
    Target,
    count_parameters,
    probe_spec,
    require_preflight,
)

from conftest import REPO

GIB = 2**30


def test_the_line_through_the_measured_batches_gives_the_largest_that_fits() -> None:
    peaks = {1: 10 * GIB, 2: 12 * GIB, 8: 24 * GIB}  # 2 GiB per sample above 8 GiB of state
    assert probe.compute_largest_batch(peaks, 40 * GIB) == 16
    assert probe.compute_largest_batch(peaks, 24 * GIB) == 8
    assert probe.compute_largest_batch(peaks, 9 * GIB) == 0
    # out of memory at the configured batch: the line through batches 1 and 2
    assert probe.compute_largest_batch({1: 10 * GIB, 2: 12 * GIB, 64: None}, 20 * GIB) == 6


@pytest.fixture(scope="module")
def measured(demo_dataset) -> dict:
    params = load_params(REPO / "params.yaml", [f'dataset.root="{demo_dataset}"', "train.batch_size=48"])
    cfg = PreflightConfig.from_params(params)
    return probe.run_probe(probe_spec(cfg.train, Target.resolve(cfg.train))).peaks


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_the_probe_measures_each_batch_and_a_bigger_batch_takes_more(measured) -> None:
    assert sorted(measured) == [1, 2, 48]
    assert all(p is not None and p > 0 for p in measured.values())
    assert measured[48] > measured[2] >= measured[1] * 0.9


def test_a_batch_the_budget_cannot_hold_fails_naming_the_largest_that_fits() -> None:
    measured = {1: 1.21 * GIB, 2: 1.26 * GIB, 48: 3.02 * GIB}  # peaks shaped like the probe's (the test above)
    fits = probe.check_probe(measured, 48, measured[48] * 1.2 / GIB, "cpu")
    assert [c.status for c in fits] == ["pass"]
    budget = (measured[2] + measured[48]) / 2 / probe.MARGIN / GIB  # room for about half of the batch
    (check,) = probe.check_probe(measured, 48, budget, "cpu")
    largest = int(re.search(r"train.batch_size: (\d+) \(the largest that fits\)", check.fix).group(1))
    assert check.status == "fail" and 2 <= largest < 48
    assert largest == probe.compute_largest_batch(measured, budget * GIB * probe.MARGIN)
    (none,) = probe.check_probe(measured, 48, measured[1] / 2 / GIB, "cpu")
    assert none.status == "fail" and "no batch fits" in none.fix


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_preflight_with_the_probe_stops_before_training_when_the_batch_does_not_fit(demo_dataset, tmp_path) -> None:
    params = load_params(REPO / "params.yaml", [f'dataset.root="{demo_dataset}"', "preflight.probe=true",
                                                "preflight.memory_gib=0.01", f"preflight.report={tmp_path / 'r.json'}"])
    with pytest.raises(PreflightError, match="memory/probe"):
        require_preflight(PreflightConfig.from_params(params))
    (check,) = [c for c in json.loads((tmp_path / "r.json").read_text())["checks"] if c["name"] == "probe"]
    assert check["status"] == "fail" and "budget 0.01 GiB" in check["value"] and "batch 8:" in check["value"]


def test_the_probe_child_builds_the_runs_lora_ema_and_kernel_through_the_trainers_builder(demo_dataset) -> None:
    """The spec carries train.peft, train.ema.decay and the attention kernel; the child builds with them
    (make_policy), so its trainable count is LoRA's, equal to what preflight and the Trainer count."""
    from dataclasses import replace

    params = load_params(REPO / "params.yaml", [f'dataset.root="{demo_dataset}"', "train.peft.preset=expert",
                                                "train.ema.decay=0.9", "train.attention=sdpa"])
    cfg = PreflightConfig.from_params(params)
    spec = probe_spec(cfg.train, Target.resolve(cfg.train))
    assert spec.peft["preset"] == "expert" and spec.ema_decay == 0.9 and spec.attention == "sdpa"
    assert spec.setup() == cfg.train.policy_setup("sdpa")  # the JSON round trip rebuilds the same setup
    result = probe.run_probe(replace(spec, batches=[2]))
    counts = count_parameters(cfg.train)
    assert result.counts == asdict(counts) and 0 < counts.trainable == counts.lora < counts.total
    assert result.built == {"ema_tensors": result.counts["graded_tensors"], "attention": "sdpa"}
    assert result.peaks[2] is not None and result.peaks[2] > 0
