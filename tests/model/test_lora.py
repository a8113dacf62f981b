"""LoRA through peft on LeRobot's Pi0.5 (tiny): the presets wrap what they say, the merged weights
are peft's own merge and predict what the wrapped model predicts, and the optimizer holds state for
the trainable parameters only."""

from __future__ import annotations

import copy

import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from vla_pipeline.checkpoint.io import load_state_strict
from vla_pipeline.errors import ConfigError
from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.config import PolicyConfig, make_pi05_config
from vla_pipeline.model.lora import apply_lora, compute_merged_state_dict, make_lora_spec
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.train.config import make_peft
from vla_pipeline.train.optim import make_optimizer_and_scheduler

CAMERA = "observation.images.front"


@pytest.fixture
def build(params):
    cfg = PolicyConfig.from_params(params["policy"])
    config = make_pi05_config(cfg, 7, {CAMERA: (3, 32, 32)}, "cpu")

    def make():
        torch.manual_seed(0)
        return make_pi05_policy(config, cfg.dims)

    return make


def lora_modules(policy) -> dict[str, int]:
    """Wrapped module name -> rank."""
    return {n.removesuffix(".lora_A.default"): m.out_features for n, m in policy.named_modules()
            if n.endswith(".lora_A.default")}


def trainable(policy) -> set[str]:
    return {n for n, p in policy.named_parameters() if p.requires_grad}


def randomize_adapters(policy) -> None:
    """peft starts B at zero (a no-op adapter); give it values so that merging means something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_openpi_preset_is_rank_16_on_the_vlm_and_32_on_the_expert(build) -> None:
    policy = build()
    apply_lora(policy, make_lora_spec("openpi"))
    ranks = lora_modules(policy)
    suffixes = {n.rsplit(".", 2)[-2] + "." + n.rsplit(".", 1)[-1] for n in ranks}
    assert suffixes == {f"self_attn.{p}_proj" for p in "qkvo"} | {f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    assert {r for n, r in ranks.items() if ".language_model." in n} == {16}
    assert {r for n, r in ranks.items() if ".gemma_expert." in n} == {32}
    assert not any(".vision_tower." in n for n in ranks)
    kept = trainable(policy)
    assert not any(".language_model." in n and ".lora_" not in n for n in kept)  # base weights frozen
    assert any(".vision_tower." in n for n in kept) and "model.action_out_proj.weight" in kept  # trained in full


def test_expert_preset_wraps_expert_q_v_and_projections_only(build) -> None:
    """LeRobot's later Pi0.5 default: expert q_proj and v_proj plus the action and time projections."""
    policy = build()
    apply_lora(policy, make_lora_spec("expert"))
    ranks = lora_modules(policy)
    expert = {n.rsplit(".", 1)[-1] for n in ranks if n.startswith("model.paligemma")}
    assert expert == {"q_proj", "v_proj"} and all(".gemma_expert.model.layers." in n for n in ranks
                                                  if n.startswith("model.paligemma"))
    assert set(ranks.values()) == {16}
    assert {n for n in ranks if not n.startswith("model.paligemma")} == {
        "model.action_in_proj", "model.action_out_proj", "model.time_mlp_in", "model.time_mlp_out"}
    assert all(".lora_" in n for n in trainable(policy))  # nothing but the adapters trains


def test_merged_weights_are_peft_merge_and_predict_like_the_wrapped_model(build) -> None:
    policy = build()
    apply_lora(policy, make_lora_spec("openpi"))
    randomize_adapters(policy)
    merged = compute_merged_state_dict(policy)
    reference = copy.deepcopy(policy)  # peft's own merge (in place) of a copy
    for module in reference.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    peft_merged = {k.replace(".base_layer", ""): v for k, v in reference.state_dict().items() if ".lora_" not in k}
    assert merged.keys() == peft_merged.keys()
    assert all(torch.equal(merged[k], peft_merged[k]) for k in merged)
    plain = build()  # LeRobot's policy, no peft: the merged weights load strictly
    load_state_strict(plain, merged, "merged")
    assert any(not torch.equal(plain.state_dict()[k], build().state_dict()[k]) for k in merged if "q_proj" in k)
    batch = {CAMERA: torch.rand(2, 3, 32, 32), OBS_LANGUAGE_TOKENS: torch.randint(0, 500, (2, 8)),
             OBS_LANGUAGE_ATTENTION_MASK: torch.ones(2, 8, dtype=torch.bool), ACTION: torch.rand(2, 10, 7)}
    losses = []
    for model in (policy, plain):
        torch.manual_seed(3)  # the same flow-matching noise and time
        with torch.no_grad():
            losses.append(Pi05Loss(model.eval())(batch))
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_the_optimizer_holds_state_for_the_adapter_only(build) -> None:
    policy = build()
    apply_lora(policy, make_lora_spec("expert"))
    optimizer, _ = make_optimizer_and_scheduler(policy, policy.config, 10)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in policy.parameters() if p.requires_grad}
    batch = {CAMERA: torch.rand(2, 3, 32, 32), OBS_LANGUAGE_TOKENS: torch.randint(0, 500, (2, 8)),
             OBS_LANGUAGE_ATTENTION_MASK: torch.ones(2, 8, dtype=torch.bool), ACTION: torch.rand(2, 10, 7)}
    Pi05Loss(policy.train())(batch).backward()
    optimizer.step()
    state_numel = sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in optimizer.state.values())
    adapter_numel = sum(p.numel() for n, p in policy.named_parameters() if ".lora_" in n)
    assert state_numel == 2 * adapter_numel  # AdamW's two moments, for the adapter's parameters only
    assert adapter_numel < 0.1 * sum(p.numel() for p in policy.parameters())


def test_peft_params_are_checked() -> None:
    assert make_peft({"preset": None}) is None
    with pytest.raises(ConfigError, match="needs train.peft.targets, train.peft.r"):
        make_peft({"preset": "explicit", "alpha": 8})
    spec = make_peft({"preset": "explicit", "targets": r".*q_proj", "r": 4, "alpha": 8, "dropout": 0.1})
    assert (spec.r, spec.alpha, spec.dropout) == (4, 8.0, 0.1)


def test_targets_that_match_nothing_are_refused(build) -> None:
    with pytest.raises(ConfigError, match="match no module"):
        apply_lora(build(), make_lora_spec("explicit", r"nothing\.here", 4, 8))
