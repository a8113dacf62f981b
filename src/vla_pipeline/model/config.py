"""The ``policy:`` section as a typed config, and LeRobot's ``PI05Config`` built from it for an
arm-only contract (features, image resolution, tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline.errors import ConfigError
from vla_pipeline.model.dims import ModelDims
from vla_pipeline.params import at_least, choice, param
from vla_pipeline.params.models import default

PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"


@dataclass(frozen=True)
class PolicyConfig:
    """What the train stage needs to build the policy (params section ``policy``); the defaults are
    params.yaml's (``params/models.py``), but for ``dims``: the dataclass alone describes a full-size policy."""

    dims: ModelDims | None = None  # None: LeRobot's full size (gemma_2b + gemma_300m)
    tokenizer: str = default("policy.tokenizer")  # "local": the project's offline tokenizer; else a hub id or directory
    pretrained: str | None = default("policy.pretrained")  # hub id (lerobot/pi05_base), local directory or .safetensors; None: random init
    chunk_size: int = default("policy.chunk_size")
    n_action_steps: int = default("policy.n_action_steps")
    num_inference_steps: int = default("policy.num_inference_steps")
    tokenizer_max_length: int = default("policy.tokenizer_max_length")
    dtype: str = default("policy.dtype")
    normalization: str = default("policy.normalization")  # or MEAN_STD

    @classmethod
    def from_params(cls, p: dict) -> PolicyConfig:
        """From the ``policy`` section; every key is required (params.yaml is the one source)."""
        size = choice(param(p, "size", str), ("tiny", "full"), "policy.size")
        cfg = cls(
            dims=ModelDims.from_dict(param(p, "dims")) if size == "tiny" else None,
            tokenizer=param(p, "tokenizer", str),
            pretrained=param(p, "pretrained", lambda v: None if v in (None, "") else str(v)),
            chunk_size=int(at_least(param(p, "chunk_size", int), 1, "policy.chunk_size")),
            n_action_steps=param(p, "n_action_steps", int),
            num_inference_steps=int(at_least(param(p, "num_inference_steps", int), 1, "policy.num_inference_steps")),
            tokenizer_max_length=param(p, "tokenizer_max_length", int),
            dtype=choice(param(p, "dtype", str), ("float32", "bfloat16"), "policy.dtype"),
            normalization=choice(param(p, "normalization", str), ("QUANTILES", "MEAN_STD"), "policy.normalization"),
        )
        if not 1 <= cfg.n_action_steps <= cfg.chunk_size:
            raise ConfigError(f"params: policy.n_action_steps={cfg.n_action_steps} must be in [1, chunk_size]")
        return cfg


def compute_image_resolution(cfg: PolicyConfig) -> tuple[int, int]:
    """The (H, W) Pi0.5 resizes camera images to: a tiny vision tower's image size, else LeRobot's 224x224."""
    if cfg.dims is not None:  # a tiny vision tower may take smaller images than the full 224x224
        return (cfg.dims.vision.image_size, cfg.dims.vision.image_size)
    return tuple(PI05Config.__dataclass_fields__["image_resolution"].default)


def make_pi05_config(
    cfg: PolicyConfig, n_joints: int, cameras: dict[str, tuple[int, int, int]], device: str, **overrides
) -> PI05Config:
    """LeRobot's ``PI05Config`` with the contract's arm-only features; ``overrides`` sets further PI05Config fields."""
    mode = NormalizationMode[cfg.normalization]
    overrides.setdefault("image_resolution", compute_image_resolution(cfg))
    return PI05Config(
        chunk_size=cfg.chunk_size,
        n_action_steps=cfg.n_action_steps,
        num_inference_steps=cfg.num_inference_steps,
        tokenizer_max_length=cfg.tokenizer_max_length,
        dtype=cfg.dtype,
        device=device,
        input_features={
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(n_joints,)),
            **{k: PolicyFeature(type=FeatureType.VISUAL, shape=s) for k, s in cameras.items()},
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(n_joints,))},
        normalization_mapping={"VISUAL": NormalizationMode.IDENTITY, "STATE": mode, "ACTION": mode},
        **overrides,
    )


def resolve_tokenizer(cfg: PolicyConfig, build_dir: Path) -> str:
    """A tokenizer name or directory; ``local`` builds the project's offline tokenizer into ``build_dir``."""
    if cfg.tokenizer != "local":
        return cfg.tokenizer
    from vla_pipeline.model.tokenizer import make_local_tokenizer

    vocab = cfg.dims.vocab_size if cfg.dims is not None else 257152
    return str(make_local_tokenizer(Path(build_dir), vocab_size=vocab))
