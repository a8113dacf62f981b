"""The one builder (model/setup.py): LeRobot's tiny Pi0.5 built, loaded, wrapped and frozen in the
Trainer's order; its counts (what the loss reaches, checked against a backward pass), and the bytes a
checkpoint writes, checked against a real save of a LoRA + EMA run."""

from __future__ import annotations

import pytest
import torch

from vla_pipeline.model.config import PolicyConfig, make_pi05_config
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.model.setup import (
    PolicySetup,
    compute_checkpoint_bytes,
    compute_param_counts,
    compute_unreached,
    make_policy,
)
from vla_pipeline.train.config import make_peft

from conftest import make_train_config

CAMERAS = {"observation.images.front": (3, 32, 32)}


def tiny_setup(params: dict, **kwargs) -> tuple[PolicySetup, object]:
    cfg = PolicyConfig.from_params(params["policy"])
    size = cfg.dims.vision.image_size
    config = make_pi05_config(cfg, 6, {k: (3, size, size) for k in CAMERAS}, "cpu")
    return PolicySetup(dims=cfg.dims, dtype=cfg.dtype, **kwargs), config


@pytest.mark.parametrize("preset", [None, "openpi"])
def test_what_the_loss_does_not_reach_is_what_a_backward_pass_leaves_without_gradient(params, preset) -> None:
    """The parameters counted without AdamW state are exactly those a real step gives no gradient."""
    from vla_pipeline.preflight.probe import ProbeSpec, make_random_batch

    setup, config = tiny_setup(params, peft=make_peft({"preset": preset}))
    built = make_policy(setup, config)
    size = setup.dims.vision.image_size
    spec = ProbeSpec(None, config.chunk_size, config.tokenizer_max_length, "float32", 6,
                     {k: [3, size, size] for k in CAMERAS}, "cpu", "fp32", False, [], [2])
    Pi05Loss(built.policy)(make_random_batch(spec, 2, setup.dims.vocab_size)).backward()
    params_ = dict(built.policy.named_parameters())
    unreached = compute_unreached(list(params_))
    no_grad = sorted(n for n, p in params_.items() if p.requires_grad and p.grad is None)
    assert no_grad and no_grad == sorted(n for n, p in params_.items() if p.requires_grad and n.startswith(unreached))
    graded = [p for p in params_.values() if p.grad is not None]
    assert built.counts.graded_bytes == sum(p.numel() * p.element_size() for p in graded)
    assert built.counts.graded_tensors == len(graded)


def test_bfloat16_parameters_count_two_bytes_and_lerobots_float32_ones_four(params) -> None:
    setup, config = tiny_setup(params)
    f32 = make_policy(setup, config, device="meta").counts
    setup, config = tiny_setup({**params, "policy": {**params["policy"], "dtype": "bfloat16"}})
    bf16 = make_policy(setup, config, device="meta").counts
    assert bf16.total == f32.total and f32.weight_bytes == 4 * f32.total
    assert 2 * bf16.total < bf16.weight_bytes < f32.weight_bytes  # LeRobot keeps norms and embeddings float32


def test_weights_load_into_the_plain_policy_before_lora_wraps_it(params) -> None:
    seen = {}

    def load(policy):
        seen["lora"] = sum(".lora_" in n for n, _ in policy.named_parameters())
        return {"loaded": 1}

    setup, config = tiny_setup(params, peft=make_peft({"preset": "expert"}), freeze=("vision",))
    built = make_policy(setup, config, load_weights=load)
    assert seen == {"lora": 0} and built.loaded == {"loaded": 1} and built.wrapped > 0
    assert built.counts == compute_param_counts(built.policy)
    assert built.counts.trainable == built.counts.lora == sum(p.numel() for p in built.policy.parameters()
                                                              if p.requires_grad)
    with pytest.raises(ValueError, match="policy.dtype"):
        make_policy(PolicySetup(dims=setup.dims, dtype="bfloat16"), config)


def test_the_predicted_checkpoint_bytes_are_what_a_lora_and_ema_run_saves(params, tiny_run, tmp_path) -> None:
    """Two steps with LoRA (openpi: adapters and parts trained in full) and an EMA, one save: the step
    directory's files are the prediction plus headers, processors, tokenizer and JSON files."""
    from vla_pipeline.preflight.run import count_parameters
    from vla_pipeline.train.components import make_components
    from vla_pipeline.train.trainer import Trainer

    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, peft=make_peft({"preset": "openpi"}), ema_decay=0.5,
                            steps=2, decay_steps=2, save_every=0, eval_every=0)
    trainer = Trainer(cfg, make_components(cfg))
    assert trainer.counts == count_parameters(cfg)  # what preflight predicts from is what the Trainer built
    trainer.fit()
    step = tmp_path / "train" / "checkpoints" / "000002"
    sizes = {p.relative_to(step).as_posix(): p.stat().st_size for p in step.rglob("*") if p.is_file()}
    tensors = ("pretrained_model/model.safetensors", "training_state/optimizer_state.safetensors",
               "training_state/raw_weights.safetensors", "training_state/ema.safetensors",
               "adapter/adapter_model.safetensors")
    saved = sum(sizes[f] for f in tensors)
    predicted = compute_checkpoint_bytes(trainer.counts, cfg.policy_setup())
    # measured 2,964,924 predicted, 3,031,340 saved: the rest is safetensors' JSON headers (tensor names)
    assert predicted <= saved <= predicted * 1.03 + 16 * 1024, (predicted, saved)
    rest = sum(sizes.values()) - saved  # RNG state, tokenizer, stats, configs: 56 kB here
    assert rest < 256 * 1024, sorted(sizes.items(), key=lambda kv: -kv[1])[:8]


def test_meta_builds_allocate_nothing(params) -> None:
    setup, config = tiny_setup(params, peft=make_peft({"preset": "openpi"}))
    built = make_policy(setup, config, device="meta")
    assert {p.device for p in built.policy.parameters()} == {torch.device("meta")}
    assert config.device == "cpu"  # the caller's config is not changed
