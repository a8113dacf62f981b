"""train.freeze on LeRobot's Pi0.5 (tiny): each group freezes exactly its parameters, and
``expert_only`` trains the action expert and its projections only."""

from __future__ import annotations

import pytest

from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.config import PolicyConfig, make_pi05_config
from vla_pipeline.model.freeze import apply_freeze, describe_trainable

EXPERT_PROJECTIONS = {"action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out"}


@pytest.fixture
def policy(params):
    cfg = PolicyConfig.from_params(params["policy"])
    return make_pi05_policy(make_pi05_config(cfg, 7, {"observation.images.front": (3, 32, 32)}, "cpu"), cfg.dims)


def trainable(policy) -> set[str]:
    return {n for n, p in policy.named_parameters() if p.requires_grad}


def test_expert_only_trains_the_action_expert_and_its_projections(policy) -> None:
    everything = {n for n, _ in policy.named_parameters()}
    counts = apply_freeze(policy, ("expert_only",))
    kept = trainable(policy)
    expert_layers = {n for n in everything if ".gemma_expert.model.layers." in n}
    assert expert_layers and expert_layers <= kept
    assert {n.split(".")[1] for n in kept if not n.startswith("model.paligemma_with_expert.")} == EXPERT_PROJECTIONS
    assert not any(".paligemma." in n or "lm_head" in n for n in kept)  # VLM and the unused expert lm_head
    assert counts["trainable"] == sum(p.numel() for n, p in policy.named_parameters() if n in kept)
    line = describe_trainable(policy)
    assert "vision 0%, language 0%, expert 100%, projections 100%" in line
    assert line.startswith(f"{counts['trainable']:,} of {counts['trainable'] + counts['frozen']:,} trainable")


def test_vision_freezes_the_tower_and_projector_only(policy) -> None:
    apply_freeze(policy, ("vision",))
    frozen = {n for n, p in policy.named_parameters() if not p.requires_grad}
    assert frozen and all(".vision_tower." in n or ".multi_modal_projector." in n for n in frozen)
    assert not any(".vision_tower." in n for n in trainable(policy))
    assert "vision 0%, language 100%" in describe_trainable(policy)


def test_groups_combine(policy) -> None:
    apply_freeze(policy, ("vision", "expert_only"))  # expert_only already freezes the vision tower
    assert not any(".paligemma." in n for n in trainable(policy))
    assert any(".gemma_expert." in n for n in trainable(policy))
