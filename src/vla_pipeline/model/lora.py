"""LoRA on LeRobot's Pi0.5 through the ``peft`` library (``train.peft``): presets named after what
they reproduce, wrapping after the pretrained weights are loaded, the merged weights LeRobot loads
without peft, and the adapter in PEFT's own format.

- ``openpi``: openpi's ``gemma_2b_lora`` (rank 16, alpha 16) on the PaliGemma language model and
  ``gemma_300m_lora`` (rank 32, alpha 32) on the action expert, attention (q, k, v, o) and MLP (gate,
  up, down) projections (openpi ``models/gemma.py``). openpi's LoRA freeze filter
  (``pi0_config.get_freeze_filter``) freezes only the non-LoRA ``llm`` weights, so the vision tower
  (SigLIP and its projector, under ``img``) and the action/time projections train in full, as here.
  Unlike openpi, peft starts B at zero (openpi draws A and B from normal(0.01)).
- ``expert``: LeRobot's Pi0.5 default targets (from v0.4.3, ``_get_default_peft_targets``): the
  action expert's ``q_proj`` and ``v_proj`` plus the action and time projections, rank 16 and
  ``lora_alpha`` 8 (LeRobot leaves it to peft's default); nothing else trains. LeRobot's regex names
  the time projections ``action_time_mlp_*`` (Pi0's), which match nothing in Pi0.5; here they are
  Pi0.5's ``time_mlp_in``/``time_mlp_out``, as the regex intends.
- ``explicit``: ``targets`` (a regex over module names, matched whole), ``r``, ``alpha``, ``dropout``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vla_pipeline.errors import ConfigError
from vla_pipeline.model.freeze import EXPERT, FREEZE_GROUPS

ADAPTER = "default"
_LAYERS = r"model\.paligemma_with_expert\.{part}\.layers\.\d+\."
_LANGUAGE = _LAYERS.format(part=r"paligemma\.model\.language_model")
_EXPERT = _LAYERS.format(part=r"gemma_expert\.model")
_ATTENTION = r"self_attn\.(q|k|v|o)_proj"
_QV = r"self_attn\.(q|v)_proj"
_MLP = r"mlp\.(gate|up|down)_proj"
_PROJECTIONS = r"model\.(action_in_proj|action_out_proj|time_mlp_in|time_mlp_out)"
PRESETS = ("openpi", "expert", "explicit")


@dataclass(frozen=True)
class LoraSpec:
    """What ``train.peft`` resolves to: the modules that get adapters, their rank and alpha (per
    pattern where the preset differs by part), and the parameters that train in full besides."""

    preset: str
    targets: str  # regex over module names (peft matches it whole)
    r: int
    alpha: float
    dropout: float = 0.0
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    full: tuple[str, ...] = ()  # parameter-name prefixes trained in full (no adapter)


def make_lora_spec(preset: str, targets: str | None = None, r: int | None = None, alpha: float | None = None,
                   dropout: float = 0.0) -> LoraSpec:
    if preset == "openpi":
        expert = r".*gemma_expert.*"
        return LoraSpec(preset, rf"({_LANGUAGE}|{_EXPERT})({_ATTENTION}|{_MLP})", 16, 16.0, dropout,
                        rank_pattern={expert: 32}, alpha_pattern={expert: 32.0},
                        full=(*FREEZE_GROUPS["vision"], *EXPERT[1:]))  # vision tower + projector, projections
    if preset == "expert":
        return LoraSpec(preset, rf"({_EXPERT}{_QV}|{_PROJECTIONS})", 16, 8.0, dropout)
    if preset == "explicit":
        re.compile(targets or "")
        return LoraSpec(preset, targets, int(r), float(alpha), dropout)
    raise ValueError(f"train.peft.preset: {preset!r}; one of {', '.join(PRESETS)}")


def make_lora_config(spec: LoraSpec):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.targets,
                      rank_pattern=dict(spec.rank_pattern), alpha_pattern=dict(spec.alpha_pattern), bias="none")


def apply_lora(policy, spec: LoraSpec) -> int:
    """Inject the adapters into ``policy`` in place (after its pretrained weights are loaded): peft
    freezes every base weight, then the preset's full-training parts are unfrozen. Returns the number
    of wrapped modules; none is an error (the targets match nothing)."""
    from peft import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    try:
        inject_adapter_in_model(make_lora_config(spec), policy, adapter_name=ADAPTER)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"train.peft: the targets {spec.targets!r} match no module of Pi0.5 ({e}); module names "
                          f"look like model.paligemma_with_expert.gemma_expert.model.layers.0.self_attn.q_proj "
                          f"(docs/training.md#lora)") from None
    wrapped = sum(isinstance(m, LoraLayer) for m in policy.modules())
    for name, param in policy.named_parameters():
        if spec.full and name.startswith(spec.full):
            param.requires_grad_(True)
    return wrapped


@torch.no_grad()
def compute_merged_state_dict(policy) -> dict[str, torch.Tensor]:
    """The weights of the policy without adapters: each wrapped ``W`` is ``W + scale * B @ A`` (peft's
    ``get_delta_weight``, what its ``merge`` adds), under LeRobot's own parameter names. The model
    itself is not touched (training goes on with the adapters)."""
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    lora_modules = {name: m for name, m in policy.named_modules() if isinstance(m, LoraLayer)}
    for name, module in lora_modules.items():
        base = module.get_base_layer()
        merged[f"{name}.weight"] = base.weight + module.get_delta_weight(ADAPTER).to(base.weight.dtype)
        if base.bias is not None:
            merged[f"{name}.bias"] = base.bias
    for key, tensor in policy.state_dict().items():
        if ".lora_" not in key and ".base_layer." not in key:  # adapters and wrapped weights: done above
            merged[key] = tensor
    return merged


def save_adapter(directory: Path, policy, spec: LoraSpec) -> None:
    """The adapter in PEFT's format (``adapter_config.json``, ``adapter_model.safetensors``)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    make_lora_config(spec).save_pretrained(str(directory))
    state = get_peft_model_state_dict(policy, adapter_name=ADAPTER)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, directory / "adapter_model.safetensors",
              metadata={"format": "pt"})
