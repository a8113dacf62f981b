"""Compare LeRobot's Pi0.5 on stock transformers with the reference vectors in shared/testdata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vla_pipeline.model.build import make_pi05_model
from vla_pipeline.model.dims import ModelDims

SHIPPED_REFERENCE = Path(__file__).resolve().parent / "reference_vectors" / "pi05_tiny_ref.safetensors"

#: tolerance per reference dtype (shared/testdata/README.md)
TOLERANCES = {"float32": 1e-5, "bfloat16": 2e-2}


@dataclass(frozen=True)
class OutputError:
    name: str
    max_abs_error: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.atol  # NaN compares False: a NaN output fails


def load_reference(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``NAME.safetensors`` and the ``NAME.json`` beside it; a clear error if either is missing."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    for p in (path, meta_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"reference file {p} not found; pass a .safetensors file from shared/testdata "
                f"with its .json beside it"
            )
    return json.loads(meta_path.read_text()), load_file(str(path))


def load_reference_dims(path: Path = SHIPPED_REFERENCE) -> ModelDims:
    """The tiny dims of the reference vectors shipped in the package (a copy of shared/testdata's)."""
    return ModelDims.from_dict(json.loads(Path(path).with_suffix(".json").read_text())["dims"])


def build_reference_model(meta: dict, tensors: dict[str, torch.Tensor]):
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    config = PI05Config(
        chunk_size=meta["chunk_size"],
        n_action_steps=meta["chunk_size"],
        dtype=meta["dtype"],
        device="cpu",
        num_inference_steps=meta["num_inference_steps"],
    )
    model = make_pi05_model(config, ModelDims.from_dict(meta["dims"]))
    params = {k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")}
    model.load_state_dict(params, strict=True)
    return model.eval()


@torch.no_grad()
def compute_reference_outputs(model, tensors: dict[str, torch.Tensor], num_steps: int) -> dict[str, torch.Tensor]:
    images = [tensors["in/image0"], tensors["in/image1"]]
    img_masks = [tensors["in/img_mask0"], tensors["in/img_mask1"]]
    tokens, masks = tensors["in/tokens"], tensors["in/masks"]
    return {
        "loss": model.forward(
            images, img_masks, tokens, masks, tensors["in/actions"],
            noise=tensors["in/noise"].clone(), time=tensors["in/time"].clone(),
        ),
        "sample_actions": model.sample_actions(
            images, img_masks, tokens, masks, noise=tensors["in/noise"].clone(), num_steps=num_steps
        ),
        "image_embedding0": model.paligemma_with_expert.embed_image(tensors["in/image0"]),
    }


def compute_errors(outputs: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], atol: float) -> list[OutputError]:
    errors = []
    for name, actual in outputs.items():
        expected = tensors[f"out/{name}"]
        if actual.shape != expected.shape:
            raise ValueError(f"output {name}: shape {tuple(actual.shape)} != reference {tuple(expected.shape)}")
        errors.append(OutputError(name, (actual.float() - expected.float()).abs().max().item(), atol))
    return errors


def compare_with_reference(path: Path) -> list[OutputError]:
    """Build the model the reference describes, run it, and return the max abs error per output."""
    meta, tensors = load_reference(path)
    model = build_reference_model(meta, tensors)
    outputs = compute_reference_outputs(model, tensors, meta["num_inference_steps"])
    return compute_errors(outputs, tensors, TOLERANCES[meta["dtype"]])
