"""Preflight's memory prediction: the H200 table for full fine-tuning, moved by the training state of
the policy the run builds (model/setup.py's make_policy, on the meta device), so LoRA, frozen parts,
bfloat16 parameters and an EMA predict what they hold, and the check names the builder's counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vla_pipeline.model.setup import make_policy
from vla_pipeline.preflight import resources
from vla_pipeline.preflight.run import PreflightConfig, Target, check_memory, count_parameters
from vla_pipeline.train.config import make_peft

from conftest import CONTRACT, make_train_config

GPU = Target("cuda", "cuda", "bf16", "sdpa", checkpointing=True, compile=False)


@pytest.fixture(scope="module")
def full(params, tmp_path_factory) -> PreflightConfig:
    """The full-size run params.yaml describes with the scale phase's batch (32)."""
    work = tmp_path_factory.mktemp("full")
    p = {**params, "policy": {**params["policy"], "size": "full"}}
    return PreflightConfig(make_train_config(p, work, work, batch_size=32), work / "report.json")


def with_train(cfg: PreflightConfig, **train) -> PreflightConfig:
    return replace(cfg, train=replace(cfg.train, **train))


def test_full_fine_tuning_float32_reproduces_the_measured_table(full) -> None:
    counts = count_parameters(full.train)
    assert counts.trainable == counts.total > 3_500_000_000
    for checkpointing, points in resources.MEASURED_PEAK_GIB.items():
        for batch, gib in points:
            case = resources.MemoryCase(full.train.policy_setup(), counts, "bf16", batch, checkpointing, 200.0)
            state = resources.compute_state_gib(case.counts, case.setup)
            assert state[0] == state[1] and resources.predict_peak_gib(batch, checkpointing, state) == pytest.approx(gib)
    # the table's intercept (batch 0, checkpointing on) is the state the builder counts, within 1 GiB
    state = resources.compute_full_finetuning_bytes(counts) / 2**30
    assert resources.predict_peak_gib(0, True) == pytest.approx(state, abs=1.0)


def test_on_48_gib_lora_expert_passes_and_full_fine_tuning_fails(full) -> None:
    """The acceptance case of issue 30: LoRA's state is the weights only, full fine-tuning's is 50 GiB."""
    fine_tuning = check_memory(full, GPU, 48.0)[0]
    assert fine_tuning.status == "fail" and "train.peft (LoRA)" in fine_tuning.fix
    peaks = {}
    for dtype in ("float32", "bfloat16"):
        lora = with_train(full, peft=make_peft({"preset": "expert"}),
                          policy=replace(full.train.policy, dtype=dtype))
        check = check_memory(lora, GPU, 48.0)[0]
        assert check.status == "pass", check.value
        assert "trainable (LoRA expert)" in check.value and "measure with --probe" in check.value
        peaks[dtype] = float(check.value.split("predicted ")[1].split(" GiB")[0])
    full_peak = float(fine_tuning.value.split("predicted ")[1].split(" GiB")[0])
    assert peaks["bfloat16"] < peaks["float32"] < full_peak - 30
    no_checkpointing = check_memory(with_train(full, peft=make_peft({"preset": "expert"}), batch_size=8),
                                    replace(GPU, checkpointing=False), 48.0)[0]
    assert no_checkpointing.status == "pass"


def test_an_ema_adds_its_state_and_float32_activations_are_not_extrapolated(full) -> None:
    ema = check_memory(with_train(full, ema_decay=0.99), GPU, 200.0)[0]
    plain = check_memory(full, GPU, 200.0)[0]
    gib = {c: float(c.value.split("predicted ")[1].split(" GiB")[0]) for c in (ema, plain)}
    assert gib[ema] - gib[plain] == pytest.approx(3_616_757_520 * 4 / 2**30, rel=0.01)  # one float32 copy
    fp32 = check_memory(full, replace(GPU, precision="fp32"), 200.0)[0]
    assert fp32.status == "warn" and "--probe" in fp32.fix


def test_the_check_names_the_counts_the_trainer_builds(params, tmp_path) -> None:
    """Tiny size: the counts preflight builds on the meta device equal those of make_policy as the Trainer
    calls it (real tensors, the contract's features), and the check's value names them."""
    from vla_pipeline.data.contract import load_contract
    from vla_pipeline.model.config import make_pi05_config

    cfg = PreflightConfig(make_train_config(params, tmp_path, tmp_path, peft=make_peft({"preset": "openpi"}), ema_decay=0.9,
                                            freeze=("vision",)), tmp_path / "report.json")
    contract = load_contract(CONTRACT)
    config = make_pi05_config(cfg.train.policy, len(contract.joints),
                              {f"observation.images.{c}": (3, 32, 32) for c in contract.cameras}, "cpu")
    trainer_counts = make_policy(cfg.train.policy_setup(), config).counts
    assert count_parameters(cfg.train) == trainer_counts
    assert 0 < trainer_counts.lora < trainer_counts.trainable < trainer_counts.total
    (check,) = check_memory(cfg, GPU, 48.0)
    assert f"{trainer_counts.total:,} parameters, {trainer_counts.trainable:,} trainable (LoRA openpi, freeze " \
           f"vision, EMA)" in check.value
    full_ft = count_parameters(replace(cfg.train, peft=None, freeze=(), ema_decay=None))
    assert full_ft.trainable == full_ft.total > trainer_counts.trainable


def test_a_lora_prediction_is_never_below_its_own_training_state(full) -> None:
    """Without gradient checkpointing the table's intercept is below full fine-tuning's state: the
    activations it leaves are floored at zero, so a small LoRA batch predicts at least its weights."""
    lora = with_train(full, peft=make_peft({"preset": "expert"}), freeze=())
    counts = count_parameters(lora.train)
    state = resources.compute_state_gib(counts, lora.train.policy_setup())
    for batch in (1, 2, 4):
        for checkpointing in (False, True):
            assert resources.predict_peak_gib(batch, checkpointing, state) >= state[0]
