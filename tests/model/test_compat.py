"""The compatibility layer reproduces LeRobot's Pi0.5 on its reference transformers exactly,
and the comparison is sharp enough to catch a single stock behaviour put back."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers
from transformers.cache_utils import DynamicCache
from transformers.models.gemma import modeling_gemma
from transformers.models.paligemma import modeling_paligemma

import vla_pipeline.model.compat as compat
from vla_pipeline.cli import main
from vla_pipeline.model.compat import gemma
from vla_pipeline.model.reference import (
    TOLERANCES,
    build_reference_model,
    compare_with_reference,
    compute_errors,
    compute_reference_outputs,
    load_reference,
)

from conftest import TESTDATA

REFERENCES = ["pi05_tiny_ref.safetensors", "pi05_tiny_ref_bf16.safetensors"]


@pytest.mark.parametrize("name", REFERENCES)
def test_matches_reference(name: str) -> None:
    errors = compare_with_reference(TESTDATA / name)
    assert {e.name for e in errors} == {"loss", "sample_actions", "image_embedding0"}
    for e in errors:
        assert e.ok, f"{name}: {e.name} differs by {e.max_abs_error} > {e.atol}"


def _errors_with(name: str, owner, attribute: str, replacement, monkeypatch) -> dict[str, float]:
    """Build the reference model with the layer in place, then put one stock behaviour back."""
    meta, tensors = load_reference(TESTDATA / name)
    model = build_reference_model(meta, tensors)
    monkeypatch.setattr(owner, attribute, replacement)
    outputs = compute_reference_outputs(model, tensors, meta["num_inference_steps"])
    return {e.name: e for e in compute_errors(outputs, tensors, TOLERANCES[meta["dtype"]])}


@pytest.mark.parametrize("name", REFERENCES)
def test_stock_image_feature_scaling_is_caught(name: str, monkeypatch) -> None:
    stock = compat.ORIGINALS[(modeling_paligemma.PaliGemmaModel, "get_image_features")]
    errors = _errors_with(name, modeling_paligemma.PaliGemmaModel, "get_image_features", stock, monkeypatch)
    assert not errors["image_embedding0"].ok
    assert not errors["loss"].ok


def test_stock_embedding_scaling_is_caught(monkeypatch) -> None:
    def scaled_forward(self, *args, inputs_embeds=None, **kwargs):
        return gemma.model_forward(self, *args, inputs_embeds=inputs_embeds * self.config.hidden_size**0.5, **kwargs)

    errors = _errors_with(REFERENCES[0], modeling_gemma.GemmaModel, "forward", scaled_forward, monkeypatch)
    assert not errors["sample_actions"].ok  # the prefix/suffix forwards go through GemmaModel.forward
    assert errors["image_embedding0"].ok


def test_ignoring_the_condition_is_caught(monkeypatch) -> None:
    """Accepting ``cond=`` and ignoring it (the shortcut the reference README warns about) fails."""
    original = gemma.AdaptiveRMSNorm.forward

    def ignore_cond(self, x, cond=None):
        out, gate = original(self, x, cond)
        return (out, None) if gate is not None else (out, gate)

    errors = _errors_with(REFERENCES[0], gemma.AdaptiveRMSNorm, "forward", ignore_cond, monkeypatch)
    assert not errors["loss"].ok and not errors["sample_actions"].ok


def test_prefix_cache_is_written_once_and_only_read_while_denoising(monkeypatch) -> None:
    """The prefix pass fills the KV cache once per layer; denoising steps read it, never append."""
    meta, tensors = load_reference(TESTDATA / REFERENCES[0])
    model = build_reference_model(meta, tensors)
    updates = []
    original_update = DynamicCache.update

    def counting_update(self, key_states, *args, **kwargs):
        updates.append(key_states.shape[2])
        return original_update(self, key_states, *args, **kwargs)

    monkeypatch.setattr(DynamicCache, "update", counting_update)
    compute_reference_outputs(model, tensors, meta["num_inference_steps"])
    prefix_len = 2 * 256 + tensors["in/tokens"].shape[1]  # two 224x224 images of 16x16 patches + tokens
    assert updates == [prefix_len] * meta["dims"]["vlm"]["depth"]


def test_lerobot_check_passes_only_when_installed(monkeypatch) -> None:
    from transformers.models.siglip import check

    assert check.check_whether_transformers_replace_is_installed_correctly()
    monkeypatch.setattr(
        modeling_paligemma.PaliGemmaModel, "get_image_features",
        compat.ORIGINALS[(modeling_paligemma.PaliGemmaModel, "get_image_features")],
    )
    assert not check.check_whether_transformers_replace_is_installed_correctly()


def test_site_packages_untouched() -> None:
    site = Path(transformers.__file__).parent
    assert not (site / "models" / "siglip" / "check.py").exists()
    assert "cond" not in (site / "models" / "gemma" / "modeling_gemma.py").read_text().split("class GemmaMLP")[0]


def test_other_transformers_version_refused(monkeypatch) -> None:
    monkeypatch.setattr(compat, "ORIGINALS", {})
    monkeypatch.setattr(compat, "installed_transformers_version", lambda: "4.57.0")
    with pytest.raises(compat.CompatError, match="4.53.3"):
        compat.install()


@pytest.mark.parametrize("name", REFERENCES)
def test_check_compat_cli(name: str, capsys) -> None:
    assert main(["check-compat", str(TESTDATA / name)]) == 0
    out = capsys.readouterr().out
    for output in ("loss", "sample_actions", "image_embedding0"):
        assert f"{output}: max abs error" in out
    assert "compat: PASS" in out


def test_check_compat_cli_missing_file(tmp_path: Path, capsys) -> None:
    assert main(["check-compat", str(tmp_path / "nope.safetensors")]) == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", REFERENCES)
def test_sdpa_attention_matches_reference(name: str) -> None:
    """PyTorch's fused attention in place of LeRobot's eager one stays within the reference tolerance
    (float32 1e-5, bfloat16 2e-2) and is really in use (the loss is not bit-identical to eager's)."""
    from vla_pipeline.model.compat.attention import attention_kernel

    meta, tensors = load_reference(TESTDATA / name)
    model = build_reference_model(meta, tensors)
    outputs = {}
    for kind in ("eager", "sdpa"):
        with attention_kernel(kind):
            outputs[kind] = compute_reference_outputs(model, tensors, meta["num_inference_steps"])
        for e in compute_errors(outputs[kind], tensors, TOLERANCES[meta["dtype"]]):
            assert e.ok, f"{name} with {kind} attention: {e.name} differs by {e.max_abs_error} > {e.atol}"
    assert not outputs["sdpa"]["loss"].equal(outputs["eager"]["loss"])
    assert modeling_gemma.eager_attention_forward is compat.attention.EAGER  # restored afterwards
