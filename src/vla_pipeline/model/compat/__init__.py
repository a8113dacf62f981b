"""Run LeRobot 0.4.2's unmodified Pi0.5 on stock ``transformers==4.53.3``.

Importing this package installs the compatibility layer (idempotent). It rebinds a few
attributes of already-imported transformers modules in this process and registers the
``transformers.models.siglip.check`` module that LeRobot's ``PI05Pytorch`` asks for; it
never writes into site-packages. What changes, and why, is documented in
:mod:`vla_pipeline.model.compat.gemma` and :mod:`vla_pipeline.model.compat.paligemma`; equality with
LeRobot on its reference transformers is proven by :mod:`vla_pipeline.model.reference`
against ``shared/testdata``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
import types

from transformers.models.gemma import modeling_gemma
from transformers.models.paligemma import modeling_paligemma
from transformers.models.siglip import modeling_siglip

from vla_pipeline.errors import CompatError
from vla_pipeline.model.compat import gemma, paligemma

SUPPORTED_TRANSFORMERS = "4.53.3"
CHECK_MODULE = "transformers.models.siglip.check"

# (owner, attribute, make replacement from the original)
_PATCHES: list[tuple[object, str, object]] = [
    (modeling_gemma, "GemmaRMSNorm", lambda _orig: gemma.AdaptiveRMSNorm),
    (modeling_gemma, "_gated_residual", lambda _orig: gemma.gated_residual),
    (modeling_gemma.GemmaDecoderLayer, "__init__", gemma.make_decoder_layer_init),
    (modeling_gemma.GemmaModel, "__init__", gemma.make_model_init),
    (modeling_gemma.GemmaPreTrainedModel, "_init_weights", gemma.make_init_weights),
    (modeling_gemma.GemmaAttention, "forward", lambda _orig: gemma.attention_forward),
    (modeling_gemma.GemmaDecoderLayer, "forward", lambda _orig: gemma.decoder_layer_forward),
    (modeling_gemma.GemmaModel, "forward", lambda _orig: gemma.model_forward),
    (modeling_paligemma.PaliGemmaModel, "get_image_features", lambda _orig: paligemma.get_image_features),
    (modeling_siglip.SiglipVisionTransformer, "forward", lambda _orig: paligemma.vision_transformer_forward),
]

#: the stock objects, keyed by (owner, attribute), so tests can put one back and see the reference fail
ORIGINALS: dict[tuple[object, str], object] = {}


def installed_transformers_version() -> str:
    """The installed distribution's version (transformers swaps its own module object on import)."""
    return importlib.metadata.version("transformers")


def install() -> None:
    """Install the layer once per process. Raises :class:`CompatError` on another transformers."""
    if ORIGINALS:
        return
    found = installed_transformers_version()
    if found != SUPPORTED_TRANSFORMERS:
        raise CompatError(
            f"vla_pipeline.model.compat supports transformers=={SUPPORTED_TRANSFORMERS} only, found {found}. "
            f"Reinstall the locked environment: `make install`."
        )
    for owner, name, make in _PATCHES:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        ORIGINALS[(owner, name)] = original
        setattr(owner, name, make(original))
    check = types.ModuleType(CHECK_MODULE)
    check.check_whether_transformers_replace_is_installed_correctly = is_installed
    sys.modules[CHECK_MODULE] = check
    siglip_package = sys.modules["transformers.models.siglip"]
    siglip_package.check = check


def is_installed() -> bool:
    """True when every replacement is in place (what LeRobot's import-time check asks)."""
    if not ORIGINALS:
        return False
    return all(
        getattr(owner, name) is not ORIGINALS[(owner, name)] and getattr(owner, name) is not None
        for owner, name, _ in _PATCHES
    )


def require() -> None:
    """Install if needed; model builders call this so a version mismatch is a clear error."""
    install()


with contextlib.suppress(CompatError):  # a mismatch is reported by require() where a model is built
    install()
