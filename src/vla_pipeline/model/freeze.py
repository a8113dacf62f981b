"""Freezing named parts of LeRobot's Pi0.5 (``train.freeze``)."""

from __future__ import annotations

_VLM = "model.paligemma_with_expert.paligemma.model."


FREEZE_GROUPS = {  # train.freeze names -> parameter-name prefixes of LeRobot's PI05Policy
    "vision": (f"{_VLM}vision_tower.", f"{_VLM}multi_modal_projector."),
    "language": (f"{_VLM}language_model.",),
    "vlm": (f"{_VLM}vision_tower.", f"{_VLM}multi_modal_projector.", f"{_VLM}language_model."),
}


def apply_freeze(policy, groups: tuple[str, ...]) -> dict[str, int]:
    """Stop gradients to the named parts (e.g. the vision tower); returns trainable / frozen counts."""
    prefixes = tuple(p for g in groups for p in FREEZE_GROUPS[g])
    counts = {"trainable": 0, "frozen": 0}
    for name, tensor in policy.named_parameters():
        if prefixes and name.startswith(prefixes):
            tensor.requires_grad_(False)
        counts["trainable" if tensor.requires_grad else "frozen"] += tensor.numel()
    return counts
