"""Freezing named parts of LeRobot's Pi0.5 (``train.freeze``)."""

from __future__ import annotations

_VLM = "model.paligemma_with_expert.paligemma.model."
#: the action expert and the projections around it: what ``expert_only`` trains (the expert's
#: ``lm_head`` is unused by Pi0.5, so it stays frozen with the rest)
EXPERT = ("model.paligemma_with_expert.gemma_expert.model.", "model.action_in_proj.", "model.action_out_proj.",
          "model.time_mlp_in.", "model.time_mlp_out.")

FREEZE_GROUPS = {  # train.freeze names -> parameter-name prefixes of LeRobot's PI05Policy that freeze
    "vision": (f"{_VLM}vision_tower.", f"{_VLM}multi_modal_projector."),
    "language": (f"{_VLM}language_model.",),
    "vlm": (f"{_VLM}vision_tower.", f"{_VLM}multi_modal_projector.", f"{_VLM}language_model."),
}
KEEP_GROUPS = {  # train.freeze names -> the only prefixes that keep training (everything else freezes)
    "expert_only": EXPERT,
}
GROUP_NAMES = (*FREEZE_GROUPS, *KEEP_GROUPS)


def is_frozen(name: str, groups: tuple[str, ...]) -> bool:
    """Whether ``train.freeze: groups`` freezes the parameter ``name``."""
    frozen = tuple(p for g in groups for p in FREEZE_GROUPS.get(g, ()))
    keep = [KEEP_GROUPS[g] for g in groups if g in KEEP_GROUPS]
    return (bool(frozen) and name.startswith(frozen)) or any(not name.startswith(k) for k in keep)


def apply_freeze(policy, groups: tuple[str, ...]) -> dict[str, int]:
    """Stop gradients to the named parts (e.g. the vision tower); returns trainable / frozen counts."""
    counts = {"trainable": 0, "frozen": 0}
    for name, tensor in policy.named_parameters():
        if is_frozen(name, groups):
            tensor.requires_grad_(False)
        counts["trainable" if tensor.requires_grad else "frozen"] += tensor.numel()
    return counts


PARTS = {  # what the printed parameter count is broken down into
    "vision": FREEZE_GROUPS["vision"],
    "language": FREEZE_GROUPS["language"],
    "expert": EXPERT[:1],
    "projections": EXPERT[1:],
}


def describe_trainable(policy) -> str:
    """One line: trainable / all parameters, and per part of Pi0.5 how much of it trains."""
    trainable, total = {}, {}
    for name, tensor in policy.named_parameters():
        part = next((p for p, prefixes in PARTS.items() if name.startswith(prefixes)), "other")
        total[part] = total.get(part, 0) + tensor.numel()
        trainable[part] = trainable.get(part, 0) + (tensor.numel() if tensor.requires_grad else 0)
    parts = ", ".join(f"{p} {trainable[p] / total[p]:.0%}" for p in (*PARTS, "other") if p in total)
    return f"{sum(trainable.values()):,} of {sum(total.values()):,} trainable ({parts})"
