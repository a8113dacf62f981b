"""The one builder of the policy a run trains or serves: LeRobot's Pi0.5 at the run's size and dtype,
its pretrained weights, LoRA and freezing, in that order; and the parameter counts and bytes that
follow from it.

The Trainer, preflight's ``--probe`` child, preflight's memory and disk predictions (on the meta
device: shapes only) and ``load_checkpoint`` all call :func:`make_policy`, so what preflight predicts
is what the run builds. Weights loading belongs to the checkpoint layer (above this one), so it comes
in as a callable. The EMA (``train.ema``) is made by the train layer from the built policy; its bytes
are counted here from ``ema_decay``.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.dims import ModelDims
from vla_pipeline.model.freeze import apply_freeze
from vla_pipeline.model.lora import LoraSpec, apply_lora

#: torch's AdamW keeps one 0-dim float32 ``step`` per parameter tensor with a gradient, beside
#: ``exp_avg`` and ``exp_avg_sq`` in the parameter's dtype (``torch.optim.adam._init_group``)
ADAM_STEP_BYTES = 4


@dataclass(frozen=True)
class PolicySetup:
    """What decides the policy a run builds and how much it holds: size (``dims``, None: LeRobot's full
    size), ``policy.dtype``, LoRA (``train.peft``), ``train.freeze``, ``train.ema.decay`` and the
    attention kernel the step runs under (``eager`` | ``sdpa``)."""

    dims: ModelDims | None = None
    dtype: str = "float32"
    peft: LoraSpec | None = None
    freeze: tuple[str, ...] = ()
    ema_decay: float | None = None
    attention: str = "eager"

    def describe(self) -> str:
        """How the parameters train, in a few words (``LoRA expert, EMA``; ``full fine-tuning``)."""
        parts = [f"LoRA {self.peft.preset}"] if self.peft else [] if self.freeze else ["full fine-tuning"]
        if self.freeze:
            parts.append(f"freeze {'+'.join(self.freeze)}")
        if self.ema_decay is not None:
            parts.append("EMA")
        return ", ".join(parts)


@dataclass(frozen=True)
class ParamCounts:
    """The built policy's parameters (each shared tensor once, as ``named_parameters`` and safetensors
    count them): how many, how many train, how many are LoRA adapters, and their bytes at each
    parameter's own dtype (LeRobot keeps some in float32 under ``policy.dtype: bfloat16``). ``reached``
    (all parameters) and ``graded_*`` (trainable ones) count only what the loss reaches: the rest gets no
    gradient, so AdamW keeps no state for it (:data:`UNREACHED`)."""

    total: int
    trainable: int
    lora: int
    weight_bytes: int
    trainable_bytes: int
    lora_bytes: int
    reached: int
    graded_bytes: int
    graded_tensors: int

    def describe(self, setup: PolicySetup) -> str:
        return f"{self.total:,} parameters, {self.trainable:,} trainable ({setup.describe()})"


@dataclass
class BuiltPolicy:
    policy: torch.nn.Module
    counts: ParamCounts
    loaded: object = None  # what ``load_weights`` returned (its tensor counts), None without it
    wrapped: int = 0  # modules peft wrapped with adapters (0 without LoRA)


_VLM = "model.paligemma_with_expert.paligemma.model.language_model."
_VLM_LAYER = re.compile(re.escape(_VLM) + r"layers\.(\d+)\.")
#: parameters of LeRobot's Pi0.5 that the flow-matching loss never reaches, so they get no gradient and
#: no AdamW state: the action expert's ``lm_head``, the VLM's final norm and, in the VLM's last layer,
#: what comes after its keys and values (the action expert reads only the prefix's K/V). Found with a
#: backward pass; tests/model/test_setup.py holds it to one.
UNREACHED = ("model.paligemma_with_expert.gemma_expert.lm_head.", f"{_VLM}norm.")
UNREACHED_IN_LAST_LAYER = ("self_attn.o_proj.", "mlp.", "post_attention_layernorm.")


def compute_unreached(names: list[str]) -> tuple[str, ...]:
    """The parameter-name prefixes :data:`UNREACHED` names, the VLM's last layer resolved from ``names``."""
    depth = max((int(m.group(1)) for n in names if (m := _VLM_LAYER.match(n))), default=None)
    last = () if depth is None else tuple(f"{_VLM}layers.{depth}.{p}" for p in UNREACHED_IN_LAST_LAYER)
    return (*UNREACHED, *last)


def compute_param_counts(policy: torch.nn.Module) -> ParamCounts:
    """Counts and bytes of ``policy``'s parameters (numel x element size of each)."""
    named = list(policy.named_parameters())
    unreached = compute_unreached([n for n, _ in named])
    c = dict.fromkeys(ParamCounts.__dataclass_fields__, 0)
    for name, p in named:
        size, reached = p.numel() * p.element_size(), not name.startswith(unreached)
        c["total"] += p.numel()
        c["weight_bytes"] += size
        c["reached"] += p.numel() if reached else 0
        if p.requires_grad:
            c["trainable"] += p.numel()
            c["trainable_bytes"] += size
            c["graded_bytes"] += size if reached else 0
            c["graded_tensors"] += int(reached)
        if ".lora_" in name:
            c["lora"] += p.numel()
            c["lora_bytes"] += size
    return ParamCounts(**c)


def make_policy(setup: PolicySetup, pi05_config, *, load_weights: Callable | None = None,
                device: str | None = None) -> BuiltPolicy:
    """LeRobot's ``PI05Policy`` as ``setup`` describes it: built at the setup's size (under
    ``torch.device(device)`` when given; ``"meta"`` allocates nothing), then ``load_weights(policy)``
    (pretrained weights load into the plain policy, before LoRA renames its wrapped modules), then
    LoRA, then ``train.freeze``."""
    if pi05_config.dtype != setup.dtype:
        raise ValueError(f"make_policy: PI05Config.dtype {pi05_config.dtype!r} differs from the setup's "
                         f"{setup.dtype!r}; build both from the same policy.dtype")
    if device is not None and pi05_config.device != device:
        pi05_config = copy.copy(pi05_config)  # PI05Policy moves itself to config.device (LeRobot's check knows no meta)
        pi05_config.device = device
    with torch.device(device) if device is not None else contextlib.nullcontext():
        policy = make_pi05_policy(pi05_config, setup.dims)
        loaded = load_weights(policy) if load_weights is not None else None
        wrapped = apply_lora(policy, setup.peft) if setup.peft is not None else 0
    apply_freeze(policy, setup.freeze)
    return BuiltPolicy(policy, compute_param_counts(policy), loaded, wrapped)


def compute_training_state_bytes(counts: ParamCounts, setup: PolicySetup) -> int:
    """Bytes a training step holds besides activations: the weights, a gradient and AdamW's two moments
    (``torch.zeros_like(param)``: the parameter's dtype) per trainable parameter the loss reaches, and
    the EMA of every trainable parameter (``train.ema``)."""
    ema = counts.trainable_bytes if setup.ema_decay is not None else 0
    return counts.weight_bytes + 3 * counts.graded_bytes + ema


def compute_full_finetuning_bytes(counts: ParamCounts) -> int:
    """:func:`compute_training_state_bytes` of full fine-tuning in float32 of the same parameters (what
    preflight's GPU table measured): 4 bytes of weight each, and gradient and moments where reached."""
    return 4 * counts.total + 3 * 4 * counts.reached


def compute_checkpoint_bytes(counts: ParamCounts, setup: PolicySetup) -> int:
    """Bytes of the tensors one checkpoint writes (``Trainer.save_model`` and ``save_state``), headers and
    small JSON files aside: ``pretrained_model`` (every weight, LoRA merged into the base: no adapter
    tensors), AdamW's state (two moments and a ``step`` per parameter with a gradient), the raw trainable
    weights (when ``pretrained_model`` holds others: EMA or LoRA), the EMA, and the adapter in PEFT's format."""
    pretrained = counts.weight_bytes - counts.lora_bytes
    optimizer = 2 * counts.graded_bytes + counts.graded_tensors * ADAM_STEP_BYTES
    ema = counts.trainable_bytes if setup.ema_decay is not None else 0
    raw = counts.trainable_bytes if setup.ema_decay is not None or setup.peft is not None else 0
    return pretrained + optimizer + raw + ema + counts.lora_bytes
