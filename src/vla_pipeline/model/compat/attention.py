"""The attention kernel behind Pi0.5's Gemma layers: LeRobot's ``eager`` (transformers'
``eager_attention_forward``: matmul, additive mask, float32 softmax, matmul) or PyTorch's fused
``scaled_dot_product_attention`` (``sdpa``: flash / memory-efficient kernels on GPUs).

LeRobot's Pi0.5 calls ``modeling_gemma.eager_attention_forward`` by name, from its joint
VLM + action-expert layers and (through the compat layer's ``GemmaAttention.forward``) from the
prefix-only pass, so one rebinding switches both. The model, its weights and its masks are
unchanged; only the arithmetic order differs. How far the two kernels agree is measured against
``shared/testdata`` (``tests/model/test_compat.py``, docs/performance.md, *GPU step*): float32 within the
reference tolerance, bfloat16 within the bf16 tolerance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F  # noqa: N812
from transformers.models.gemma import modeling_gemma

from vla_pipeline.errors import ConfigError

EAGER = modeling_gemma.eager_attention_forward
KERNELS = ("eager", "sdpa")


def sdpa_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """``eager_attention_forward``'s contract (``(B, L, H, D)`` output, weights) on PyTorch's SDPA.
    The attention weights are not materialised (``None``): Pi0.5 never reads them."""
    key = modeling_gemma.repeat_kv(key, module.num_key_value_groups)
    value = modeling_gemma.repeat_kv(value, module.num_key_value_groups)
    mask = None
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]].to(query.dtype)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                         dropout_p=dropout if module.training else 0.0)
    return out.transpose(1, 2).contiguous(), None


def check_kernel(kind: str) -> str:
    if kind not in KERNELS:
        raise ConfigError(f"attention kernel {kind!r}; expected one of {list(KERNELS)}")
    return kind


@contextlib.contextmanager
def attention_kernel(kind: str) -> Iterator[None]:
    """While active, Pi0.5's attention runs on ``kind`` (``eager`` | ``sdpa``); restored afterwards."""
    previous = modeling_gemma.eager_attention_forward
    modeling_gemma.eager_attention_forward = EAGER if check_kernel(kind) == "eager" else sdpa_attention_forward
    try:
        yield
    finally:
        modeling_gemma.eager_attention_forward = previous
