"""Build LeRobot's own Pi0.5 (``PI05Pytorch`` / ``PI05Policy``) at full or tiny size.

Full size is LeRobot's default (gemma_2b + gemma_300m + SigLIP so400m). The tiny size
exists for CPU tests and the demo: the *same classes*, constructed while LeRobot's
hard-coded numbers (the Gemma variants, SigLIP's dimensions, the 257152-token vocabulary,
the 2048-wide projector) are swapped for the ``dims`` of ``shared/testdata/*.json``.
Nothing of the model is re-implemented.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict

from lerobot.policies.pi05 import modeling_pi05
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.pi05.modeling_pi05 import PI05Policy, PI05Pytorch

from vla_pipeline.model import compat  # installs the layer; it patches classes, so import order is free
from vla_pipeline.model.dims import ModelDims


@contextlib.contextmanager
def shrunk_pi05(dims: ModelDims) -> Iterator[None]:
    """While active, LeRobot's Pi0.5 constructors build models at ``dims`` instead of full size."""
    original_variant = modeling_pi05.get_gemma_config
    original_paligemma = modeling_pi05.PaliGemmaForConditionalGeneration
    original_gemma = modeling_pi05.GemmaForCausalLM

    def get_gemma_config(variant: str):
        by_variant = {"gemma_2b": dims.vlm, "gemma_300m": dims.expert}
        if variant not in by_variant:
            raise ValueError(f"Unknown variant: {variant}")
        return modeling_pi05.GemmaConfig(**asdict(by_variant[variant]))

    def build_paligemma(config):
        for field, value in asdict(dims.vision).items():
            setattr(config.vision_config, field, value)
        config.vision_config.projection_dim = dims.vlm.width
        config.projection_dim = dims.vlm.width
        config.text_config.num_image_tokens = (dims.vision.image_size // dims.vision.patch_size) ** 2
        config._vocab_size = dims.vocab_size
        config.text_config.vocab_size = dims.vocab_size
        config.image_token_index = dims.vocab_size - 1
        return original_paligemma(config=config)

    def build_gemma(config):
        config.vocab_size = dims.vocab_size
        return original_gemma(config=config)

    modeling_pi05.get_gemma_config = get_gemma_config
    modeling_pi05.PaliGemmaForConditionalGeneration = build_paligemma
    modeling_pi05.GemmaForCausalLM = build_gemma
    try:
        yield
    finally:
        modeling_pi05.get_gemma_config = original_variant
        modeling_pi05.PaliGemmaForConditionalGeneration = original_paligemma
        modeling_pi05.GemmaForCausalLM = original_gemma


def _size_context(dims: ModelDims | None):
    return shrunk_pi05(dims) if dims is not None else contextlib.nullcontext()


def make_pi05_model(config: PI05Config, dims: ModelDims | None = None) -> PI05Pytorch:
    """LeRobot's ``PI05Pytorch``; full size when ``dims`` is None."""
    compat.require()
    with _size_context(dims):
        return PI05Pytorch(config)


def make_pi05_policy(config: PI05Config, dims: ModelDims | None = None) -> PI05Policy:
    """LeRobot's ``PI05Policy``; full size when ``dims`` is None."""
    compat.require()
    with _size_context(dims):
        return PI05Policy(config)
