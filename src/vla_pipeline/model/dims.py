"""The sizes of LeRobot's Pi0.5 parts (Gemma VLM and action expert, SigLIP, vocabulary), saved beside
a checkpoint so the tiny size loads back as it was trained; ``None`` means LeRobot's full size."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

DIMS_FILENAME = "vla_model_dims.json"


@dataclass(frozen=True)
class GemmaDims:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class VisionDims:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int = 14
    image_size: int = 224


@dataclass(frozen=True)
class ModelDims:
    """Shrunk Pi0.5 dimensions, in the ``dims`` format of ``shared/testdata/*.json``."""

    vlm: GemmaDims
    expert: GemmaDims
    vision: VisionDims
    vocab_size: int

    @classmethod
    def from_dict(cls, d: dict) -> ModelDims:
        return cls(
            vlm=GemmaDims(**d["vlm"]),
            expert=GemmaDims(**d["expert"]),
            vision=VisionDims(**d["vision"]),
            vocab_size=int(d["vocab_size"]),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def save_dims(directory: Path, dims: ModelDims | None) -> None:
    """Record a tiny model's dims beside LeRobot's ``config.json`` (nothing for full size)."""
    if dims is not None:
        (Path(directory) / DIMS_FILENAME).write_text(json.dumps(dims.to_dict(), indent=2))


def load_dims(directory: Path) -> ModelDims | None:
    path = Path(directory) / DIMS_FILENAME
    return ModelDims.from_dict(json.loads(path.read_text())) if path.exists() else None
