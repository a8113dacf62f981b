"""OpenPI's PaliGemma and SigLIP changes for stock transformers 4.53.3.

* ``PaliGemmaModel.get_image_features`` returns the projector output as is: the stock
  division by ``sqrt(text hidden_size)`` is removed (OpenPI's weights were trained without it).
* SigLIP's embeddings stay float32 under LeRobot's selective bf16 cast (patch and position
  embeddings are kept in float32) while the encoder runs in bfloat16, so the embedding output
  is cast to the encoder's dtype.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling


def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.Tensor:
    image_outputs = self.vision_tower(pixel_values)
    return self.multi_modal_projector(image_outputs.last_hidden_state)


def vision_transformer_forward(
    self,
    pixel_values: torch.FloatTensor,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    interpolate_pos_encoding: bool | None = False,
) -> BaseModelOutputWithPooling:
    """Stock ``SiglipVisionTransformer.forward`` with the embeddings cast to the encoder's dtype."""
    output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
    output_hidden_states = (
        output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
    )
    hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    if len(self.encoder.layers) > 0:
        hidden_states = hidden_states.to(self.encoder.layers[0].layer_norm1.weight.dtype)
    encoder_outputs = self.encoder(
        inputs_embeds=hidden_states,
        output_attentions=output_attentions,
        output_hidden_states=output_hidden_states,
    )
    last_hidden_state = self.post_layernorm(encoder_outputs.last_hidden_state)
    pooler_output = self.head(last_hidden_state) if self.use_head else None
    return BaseModelOutputWithPooling(
        last_hidden_state=last_hidden_state,
        pooler_output=pooler_output,
        hidden_states=encoder_outputs.hidden_states,
        attentions=encoder_outputs.attentions,
    )
