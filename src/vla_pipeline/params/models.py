"""What params.yaml may hold, as pydantic models: every key, its type, its allowed values and its default.

The defaults are params.yaml's values (a test holds them equal), and the one source of the library's
defaults: the config dataclasses take theirs from here (:func:`default`). No section takes a key it
does not declare (``extra="forbid"``). ``params/schema.py`` checks a mapping against these models and
words every problem; the library never reads params.yaml."""

import copy
import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vla_pipeline.params.fields import (
    BOOL,
    COUNT_OR_AUTO,
    EPISODES,
    PATH,
    SWITCH,
    Spec,
    choices_list,
    float_key,
    int_key,
    jitter_range,
    str_key,
)

WANDB_MODE = str_key("offline", "online", "disabled")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Base(Section):
    seed: int_key(0) = 0
    store: str_key(null=True, allowed="auto, null or a directory") = "auto"


class Dataset(Section):
    root: PATH = "data/demo"
    contract: PATH = "contracts/lekiwi_arm.yaml"
    exclude_episodes: EPISODES = []


class Demo(Section):
    root: PATH = "data/demo"
    repo_id: str_key() = "vla/lekiwi_demo"
    num_episodes: int_key(2) = 24
    min_length: int_key(1) = 40
    max_length: int_key(1) = 90
    image_height: int_key(8) = 96
    image_width: int_key(8) = 128
    fps: int_key(1) = 30
    seed: int_key(0) = 0
    poison: str_key(null=True, allowed="null or a fault class of data/faults.py") = None
    poison_episodes: EPISODES = []


class Quality(Section):
    still_fraction: float_key(0, 1) = 0.002
    frozen_state_frames: int_key(2) = 10
    follow_min_corr: float_key(-1, 1) = 0.3
    saturation_fraction: float_key(0, 1, lo_open=True) = 0.8
    glitch_fraction: float_key(0, lo_open=True) = 0.2
    wrap_fraction: float_key(0, lo_open=True) = 0.5
    idle_seconds: float_key(0, lo_open=True) = 1.0
    action_state_fraction: float_key(0) = 0.001
    lag_frames: int_key(1) = 3
    scale_ratio: float_key(1, lo_open=True) = 3.0
    duplicate_fraction: float_key(0) = 0.005
    drift_fraction: float_key(0, lo_open=True) = 0.1


class Validate(Section):
    report: PATH = "artifacts/validation/report.json"
    decode_samples: int_key(0) = 0
    dry_run: BOOL = True
    quality: Quality = Field(default_factory=Quality)


class Norms(Section):
    out_dir: PATH = "artifacts/norms"
    val_fraction: float_key(0, 1, lo_open=True, hi_open=True) = 0.2
    split_seed: int_key(0) = 0
    val_episodes: EPISODES = []


class FrameCache(Section):
    enable: BOOL = True
    dir: PATH = "artifacts/frame_cache"
    resize: BOOL = True
    num_workers: int_key(0) = 1


class DimsBlock(Section):
    width: int_key(1)
    depth: int_key(1)
    mlp_dim: int_key(1)
    num_heads: int_key(1)
    num_kv_heads: int_key(1)
    head_dim: int_key(1)


class VisionDims(Section):
    hidden_size: int_key(1) = 32
    intermediate_size: int_key(1) = 64
    num_hidden_layers: int_key(1) = 1
    num_attention_heads: int_key(1) = 2
    patch_size: int_key(1) = 14
    image_size: int_key(1) = 112


class Dims(Section):
    vlm: DimsBlock = Field(default_factory=lambda: DimsBlock(width=64, depth=2, mlp_dim=128, num_heads=8,
                                                             num_kv_heads=1, head_dim=16))
    expert: DimsBlock = Field(default_factory=lambda: DimsBlock(width=32, depth=2, mlp_dim=64, num_heads=8,
                                                                num_kv_heads=1, head_dim=16))
    vision: VisionDims = Field(default_factory=VisionDims)
    vocab_size: int_key(1) = 512


class Policy(Section):
    size: str_key("tiny", "full") = "tiny"
    dims: Dims = Field(default_factory=Dims)
    tokenizer: str_key(allowed="local, a hub id or a directory") = "local"
    pretrained: str_key(null=True, allowed="null, a hub id, a directory or a .safetensors file") = None
    chunk_size: int_key(1) = 10
    n_action_steps: int_key(1) = 10
    num_inference_steps: int_key(1) = 5
    tokenizer_max_length: int_key(1) = 64
    dtype: str_key("float32", "bfloat16") = "float32"
    normalization: str_key("QUANTILES", "MEAN_STD") = "QUANTILES"


class Phase(Section):
    """A phase's values of the train keys left null (``train.phase`` picks one); no default."""

    steps: int_key(1, null=True)
    batch_size: int_key(1, null=True)
    lr: float_key(0, lo_open=True, null=True)
    warmup_steps: int_key(0, null=True)
    decay_steps: int_key(1, null=True)
    decay_lr: float_key(0, null=True)
    log_every: int_key(1, null=True)
    save_every: int_key(0, null=True)
    eval_every: int_key(0, null=True)


PHASE_KEYS = tuple(Phase.model_fields)


class Peft(Section):
    preset: str_key("openpi", "expert", "explicit", null=True) = None
    targets: str_key(null=True) = None
    r: int_key(1, null=True) = None
    alpha: float_key(0, lo_open=True, null=True) = None
    dropout: float_key(0, 1, hi_open=True) = 0.0


class Ema(Section):
    decay: float_key(0, 1, lo_open=True, hi_open=True, null=True) = None


class Augment(Section):
    enable: BOOL = True
    seed: int_key(0) = 0
    max_num_transforms: int_key(1) = 2
    brightness: jitter_range(0) = [0.9, 1.1]
    contrast: jitter_range(0) = [0.9, 1.1]
    saturation: jitter_range(0) = None
    hue: jitter_range(-0.5, 0.5) = None
    sharpness: jitter_range(0) = None
    crop_scale: float_key(0.5, 1, null=True) = None


class Wandb(Section):
    project: str_key() = "vla-pipeline"
    mode: WANDB_MODE = "offline"
    dir: str_key(null=True, allowed="null (<store>/wandb) or a directory") = None


class TrainWandb(Wandb):
    init_timeout: float_key(0, lo_open=True) = 60
    log_checkpoints: BOOL = True


class Train(Section):
    launcher: str_key() = "python"
    out_dir: PATH = "artifacts/train"
    live_dir: PATH = "artifacts/train_live"
    phase: str_key(allowed="a phase named under `phases`") = "smoke"
    steps: int_key(1, null=True) = None
    batch_size: int_key(1, null=True) = None
    lr: float_key(0, lo_open=True, null=True) = None
    warmup_steps: int_key(0, null=True) = None
    decay_steps: int_key(1, null=True) = None
    decay_lr: float_key(0, null=True) = None
    log_every: int_key(1, null=True) = None
    save_every: int_key(0, null=True) = None
    eval_every: int_key(0, null=True) = None
    keep_last: int_key(0) = 2
    val_samples: int_key(1) = 128
    resume: str_key("auto", "never") = "auto"
    weight_decay: float_key(0) = 0.01
    grad_clip_norm: float_key(0, lo_open=True) = 1.0
    num_workers: COUNT_OR_AUTO = "auto"
    pin_memory: SWITCH = "auto"
    prefetch_factor: int_key(1) = 2
    device: str_key("auto", "cpu", "cuda") = "cpu"
    precision: str_key("auto", "bf16", "fp16", "fp32") = "auto"
    gradient_checkpointing: SWITCH = "auto"
    compile: SWITCH = "auto"
    deterministic: BOOL = False
    lr_scaling: str_key("none", "linear", "sqrt") = "none"
    attention: str_key("auto", "eager", "sdpa") = "auto"
    fused_optimizer: SWITCH = "auto"
    tf32: SWITCH = "auto"
    trim_prompt_padding: BOOL = True
    freeze: choices_list("vision", "language", "vlm", "expert_only",
                         allowed="a list of: vision, language, vlm, expert_only") = []
    peft: Peft = Field(default_factory=Peft)
    ema: Ema = Field(default_factory=Ema)
    augment: Augment = Field(default_factory=Augment)
    wandb: TrainWandb = Field(default_factory=TrainWandb)


def _phases() -> dict[str, Phase]:
    return {
        "smoke": Phase(steps=2000, batch_size=8, lr=2.0e-3, warmup_steps=20, decay_steps=2000, decay_lr=3.0e-5,
                       log_every=10, save_every=500, eval_every=250),
        "sanity": Phase(steps=4000, batch_size=8, lr=2.5e-5, warmup_steps=200, decay_steps=4000, decay_lr=2.5e-6,
                        log_every=10, save_every=500, eval_every=250),
        "scale": Phase(steps=30000, batch_size=32, lr=5.0e-5, warmup_steps=1000, decay_steps=30000, decay_lr=5.0e-6,
                       log_every=50, save_every=2500, eval_every=1000),
    }


class Preflight(Section):
    report: PATH = "artifacts/preflight/report.json"
    probe: BOOL = False
    memory_gib: float_key(0, lo_open=True, null=True) = None


class Evaluate(Section):
    out_dir: PATH = "artifacts/eval"
    stride: int_key(1, null=True) = None
    batch_size: int_key(1) = 16
    num_workers: COUNT_OR_AUTO = "auto"
    noise_seed: int_key(0) = 0
    saturation_margin: float_key(0, 0.5, hi_open=True) = 0.01
    videos: BOOL = True
    device: str_key("cpu", "cuda") = "cpu"
    wandb: Wandb = Field(default_factory=Wandb)


PHASES_SPEC = Spec("phases", "a mapping of phase names to their train defaults")


class Params(Section):
    """The whole file; ``Params()`` is params.yaml as shipped."""

    base: Base = Field(default_factory=Base)
    dataset: Dataset = Field(default_factory=Dataset)
    demo: Demo = Field(default_factory=Demo)
    validate_: Validate = Field(default_factory=Validate, alias="validate")  # BaseModel has a .validate
    norms: Norms = Field(default_factory=Norms)
    frame_cache: FrameCache = Field(default_factory=FrameCache)
    policy: Policy = Field(default_factory=Policy)
    train: Train = Field(default_factory=Train)
    phases: dict[str, Phase] = Field(default_factory=_phases, min_length=1)
    preflight: Preflight = Field(default_factory=Preflight)
    evaluate: Evaluate = Field(default_factory=Evaluate)


def fields_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by their key in params.yaml (the alias where there is one)."""
    return {f.alias or name: f for name, f in model.model_fields.items()}


def submodel(field) -> type[BaseModel] | None:
    """The section model a field holds, if it is a section."""
    tp = field.annotation
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


@functools.cache
def _shipped() -> Params:
    return Params()


def default(dotted: str) -> Any:
    """The default of ``dotted`` (``train.val_samples``), as params.yaml ships it (a fresh copy of a list)."""
    node: Any = _shipped()
    for part in dotted.split("."):
        if isinstance(node, dict):
            node = node[part]
        else:
            field = fields_of(type(node)).get(part)
            if field is None:
                raise KeyError(f"params: no key '{dotted}' (docs/parameters.md lists them)")
            node = getattr(node, next(n for n, f in type(node).model_fields.items() if f is field))
    return copy.deepcopy(node.model_dump(by_alias=True) if isinstance(node, BaseModel) else node)


def defaults() -> dict:
    """Every default: params.yaml as shipped, as a mapping."""
    return Params().model_dump(by_alias=True)
