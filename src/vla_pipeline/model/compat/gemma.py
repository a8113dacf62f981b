"""OpenPI's Gemma changes, expressed as replacements for stock transformers 4.53.3 Gemma.

LeRobot 0.4.2's Pi0.5 port was written against a transformers branch carrying OpenPI's
"transformers_replace" files. Relative to stock Gemma, that branch:

* turns ``GemmaRMSNorm`` into an adaptive RMSNorm: with ``cond_dim`` it owns a ``dense``
  layer mapping the condition to (scale, shift, gate); without it, it keeps the usual
  ``weight``. Either way ``forward(x, cond=None)`` returns ``(normed, gate)``;
* adds ``modeling_gemma._gated_residual(x, y, gate)`` (``x + y * gate``) and uses it in
  the decoder layer;
* drops the ``sqrt(hidden_size)`` scaling of ``inputs_embeds`` in ``GemmaModel.forward``
  (LeRobot scales the language embeddings itself);
* casts the residual stream to bfloat16 when the layers hold bfloat16 weights;
* lets attention read a prefix KV cache without appending to it when ``use_cache=False``
  (the denoising loop reuses one prefix cache for every step).

Nothing here is written to disk: :func:`install` rebinds attributes of the imported
modules. The functions below are the replacement bodies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.gemma import modeling_gemma


class AdaptiveRMSNorm(nn.Module):
    """Gemma RMSNorm with OpenPI's optional adaptive (conditioned) scale, shift and gate."""

    def __init__(self, dim: int, eps: float = 1e-6, cond_dim: int | None = None):
        super().__init__()
        self.eps = eps
        self.dim = dim
        self.cond_dim = cond_dim
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, dim * 3, bias=True)
            nn.init.zeros_(self.dense.weight)
            nn.init.zeros_(self.dense.bias)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = x.dtype
        normed = self._norm(x.float())
        if self.dense is None:
            if cond is not None:
                raise ValueError("this RMSNorm has no adaptive layer but was given a condition")
            return (normed * (1.0 + self.weight.float())).to(dtype), None
        if cond is None:
            raise ValueError("this adaptive RMSNorm needs a condition (adarms_cond) and got None")
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(f"adaptive RMSNorm expects a condition of width {self.cond_dim}, got {cond.shape[-1]}")
        modulation = self.dense(cond.to(self.dense.weight.dtype))
        if x.ndim == 3:
            modulation = modulation.unsqueeze(1)
        scale, shift, gate = torch.chunk(modulation, 3, dim=-1)
        normed = normed * (1.0 + scale.float()) + shift.float()
        return normed.to(dtype), gate.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, cond_dim={self.cond_dim}"


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    if gate is None:
        return x + y
    return x + y * gate


def _adarms_dim(config) -> int | None:
    return config.adarms_cond_dim if getattr(config, "use_adarms", False) else None


def make_decoder_layer_init(original_init: Callable) -> Callable:
    def __init__(self, config, layer_idx: int):  # noqa: N807
        original_init(self, config, layer_idx)
        cond_dim = _adarms_dim(config)
        self.input_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)
        self.post_attention_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    return __init__


def make_model_init(original_init: Callable) -> Callable:
    def __init__(self, config):  # noqa: N807
        original_init(self, config)
        self.norm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, _adarms_dim(config))
        self._init_weights(self.norm)

    return __init__


def make_init_weights(original: Callable) -> Callable:
    def _init_weights(self, module):
        # children are initialised before their parent, so this runs after the dense Linear's own init
        if isinstance(module, AdaptiveRMSNorm):
            if module.dense is None:
                module.weight.data.fill_(1.0)
            else:
                module.dense.weight.data.zero_()
                module.dense.bias.data.zero_()
            return
        original(self, module)

    return _init_weights


def attention_forward(
    self,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor | None,
    past_key_value=None,
    cache_position: torch.LongTensor | None = None,
    use_cache: bool = False,
    **kwargs,
):
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

    cos, sin = position_embeddings
    query_states, key_states = modeling_gemma.apply_rotary_pos_emb(query_states, key_states, cos, sin)

    if past_key_value is not None:
        if use_cache:
            cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
            key_states, value_states = past_key_value.update(
                key_states, value_states, self.layer_idx, cache_kwargs
            )
        else:  # read the prefix cache, leave it untouched for the next denoising step
            cached_keys, cached_values = past_key_value[self.layer_idx]
            key_states = torch.cat([cached_keys, key_states], dim=2)
            value_states = torch.cat([cached_values, value_states], dim=2)

    attention_interface = modeling_gemma.eager_attention_forward
    if self.config._attn_implementation != "eager":
        attention_interface = modeling_gemma.ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
    attn_output, attn_weights = attention_interface(
        self,
        query_states,
        key_states,
        value_states,
        attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout,
        scaling=self.scaling,
        **kwargs,
    )
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    return self.o_proj(attn_output), attn_weights


def decoder_layer_forward(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    past_key_value=None,
    output_attentions: bool | None = False,
    use_cache: bool | None = False,
    cache_position: torch.LongTensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    adarms_cond: torch.Tensor | None = None,
    **kwargs,
):
    residual = hidden_states
    hidden_states, gate = self.input_layernorm(hidden_states, cond=adarms_cond)
    hidden_states, attn_weights = self.self_attn(
        hidden_states=hidden_states,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_value=past_key_value,
        use_cache=use_cache,
        cache_position=cache_position,
        position_embeddings=position_embeddings,
        **kwargs,
    )
    hidden_states = gated_residual(residual, hidden_states, gate)

    residual = hidden_states
    hidden_states, gate = self.post_attention_layernorm(hidden_states, cond=adarms_cond)
    if self.mlp.up_proj.weight.dtype == torch.bfloat16:
        hidden_states = hidden_states.to(torch.bfloat16)
    hidden_states = self.mlp(hidden_states)
    hidden_states = gated_residual(residual, hidden_states, gate)

    outputs = (hidden_states,)
    if output_attentions:
        outputs += (attn_weights,)
    return outputs


def model_forward(
    self,
    input_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    past_key_values=None,
    inputs_embeds: torch.FloatTensor | None = None,
    use_cache: bool | None = None,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    cache_position: torch.LongTensor | None = None,
    adarms_cond: torch.Tensor | None = None,
    **kwargs,
) -> BaseModelOutputWithPast:
    """Stock ``GemmaModel.forward`` without the embedding scaling, with ``adarms_cond`` and bf16 casts."""
    output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
    output_hidden_states = (
        output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
    )
    use_cache = use_cache if use_cache is not None else self.config.use_cache
    if (input_ids is None) ^ (inputs_embeds is not None):
        raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
    if self.gradient_checkpointing and self.training and use_cache:
        use_cache = False
    if inputs_embeds is None:
        inputs_embeds = self.embed_tokens(input_ids)
    if use_cache and past_key_values is None:
        past_key_values = DynamicCache()
    if cache_position is None:
        past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        cache_position = torch.arange(past_seen, past_seen + inputs_embeds.shape[1], device=inputs_embeds.device)
    if position_ids is None:
        position_ids = cache_position.unsqueeze(0)

    causal_mask = create_causal_mask(
        config=self.config,
        input_embeds=inputs_embeds,
        attention_mask=attention_mask,
        cache_position=cache_position,
        past_key_values=past_key_values,
        position_ids=position_ids,
    )

    hidden_states = inputs_embeds
    if len(self.layers) > 0 and self.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16:
        hidden_states = hidden_states.to(torch.bfloat16)
    position_embeddings = self.rotary_emb(hidden_states, position_ids)

    all_hidden_states = () if output_hidden_states else None
    all_attentions = () if output_attentions else None
    for decoder_layer in self.layers[: self.config.num_hidden_layers]:
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        layer_outputs = decoder_layer(
            hidden_states,
            attention_mask=causal_mask,
            position_ids=position_ids,
            past_key_value=past_key_values,
            output_attentions=output_attentions,
            use_cache=use_cache,
            cache_position=cache_position,
            position_embeddings=position_embeddings,
            adarms_cond=adarms_cond,
            **kwargs,
        )
        hidden_states = layer_outputs[0]
        if output_attentions:
            all_attentions += (layer_outputs[1],)

    hidden_states, _ = self.norm(hidden_states, cond=adarms_cond)
    if output_hidden_states:
        all_hidden_states += (hidden_states,)
    return BaseModelOutputWithPast(
        last_hidden_state=hidden_states,
        past_key_values=past_key_values if use_cache else None,
        hidden_states=all_hidden_states,
        attentions=all_attentions,
    )
