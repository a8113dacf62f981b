"""Where and how a run executes: accelerate (one process, or many under ``accelerate launch``),
device, precision, gradient checkpointing, torch.compile, seeding and determinism, plus the
environment facts a run records (versions, GPUs, git commit).

``auto`` settings follow the AMD/ROCm spec on every GPU: compile off, gradient checkpointing on,
bf16 where the device supports it, else fp16; on CPU: fp32 and no checkpointing. The speed options
(docs/performance.md, *GPU step*) default to what is safe on ROCm too: SDPA attention, fused AdamW and
TF32 (NVIDIA only) on GPUs; LeRobot's eager attention and foreach AdamW on CPU."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vla_pipeline.errors import ConfigError
from vla_pipeline.params import choice
from vla_pipeline.params.models import default

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SWITCHES = ("auto", True, False)
LR_SCALING = ("none", "linear", "sqrt")
ATTENTION = ("auto", "eager", "sdpa")
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class RuntimeOptions:
    """What params ask for (``train.device``, ``train.precision``, ...; the defaults are params.yaml's, from
    ``params.models``); ``auto`` is resolved at run time."""

    device: str = default("train.device")  # auto (a GPU when there is one) | cpu | cuda
    precision: str = default("train.precision")
    gradient_checkpointing: str | bool = default("train.gradient_checkpointing")
    compile: str | bool = default("train.compile")
    deterministic: bool = default("train.deterministic")
    lr_scaling: str = default("train.lr_scaling")
    attention: str = default("train.attention")  # auto (GPU: sdpa, CPU: eager) | eager | sdpa
    fused_optimizer: str | bool = default("train.fused_optimizer")  # auto (on for GPUs) | true | false
    tf32: str | bool = default("train.tf32")  # TF32 matmuls for the float32 parts on NVIDIA GPUs: auto | true | false

    def __post_init__(self) -> None:
        choice(self.device, DEVICES, "train.device")
        choice(self.precision, PRECISIONS, "train.precision")
        choice(self.gradient_checkpointing, SWITCHES, "train.gradient_checkpointing")
        choice(self.compile, SWITCHES, "train.compile")
        choice(self.lr_scaling, LR_SCALING, "train.lr_scaling")
        choice(self.attention, ATTENTION, "train.attention")
        choice(self.fused_optimizer, SWITCHES, "train.fused_optimizer")
        choice(self.tf32, SWITCHES, "train.tf32")


@dataclass(frozen=True)
class Runtime:
    """The resolved settings; logged with the run and saved beside every checkpoint."""

    platform: str  # cpu | cuda | rocm
    device: str
    precision: str
    gradient_checkpointing: bool
    compile: bool
    deterministic: bool
    world_size: int
    rank: int
    lr_scale: float
    attention: str = "eager"
    fused_optimizer: bool = False
    tf32: bool = False

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rank"}

    def describe(self) -> str:
        return (f"{self.platform} ({self.device}), precision {self.precision}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, compile {'on' if self.compile else 'off'}, "
                f"{self.world_size} process(es), lr x{self.lr_scale:g}, attention {self.attention}, "
                f"{'fused' if self.fused_optimizer else 'foreach'} AdamW, TF32 {'on' if self.tf32 else 'off'}")


def detect_platform() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return "rocm" if torch.version.hip else "cuda"


def compute_lr_scale(rule: str, world_size: int) -> float:
    """How the configured lr (tuned for one process's batch) scales with the number of processes."""
    return {"none": 1.0, "linear": float(world_size), "sqrt": float(world_size) ** 0.5}[rule]


def resolve_precision(requested: str, platform: str) -> str:
    if requested != "auto":
        if platform == "cpu" and requested == "fp16":
            raise ConfigError("params: train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return requested
    if platform == "cpu":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(opts: RuntimeOptions):
    """accelerate's ``Accelerator`` for this process and the resolved :class:`Runtime`."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    platform = detect_platform() if opts.device != "cpu" else "cpu"
    if opts.device == "cuda" and platform == "cpu":
        raise ConfigError("params: train.device=cuda but torch sees no GPU (CUDA or ROCm); use train.device=auto")
    precision = resolve_precision(opts.precision, platform)
    accelerator = Accelerator(
        cpu=platform == "cpu", mixed_precision=MIXED_PRECISION[precision], step_scheduler_with_optimizer=False,
        # Pi0.5's VLM head takes no part in the loss: DDP must not wait for its gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    on_gpu = platform != "cpu"
    runtime = Runtime(
        platform=platform, device=accelerator.device.type, precision=precision,  # "cuda" = this process's GPU
        gradient_checkpointing=on_gpu if opts.gradient_checkpointing == "auto" else bool(opts.gradient_checkpointing),
        compile=False if opts.compile == "auto" else bool(opts.compile),
        deterministic=opts.deterministic, world_size=accelerator.num_processes, rank=accelerator.process_index,
        lr_scale=compute_lr_scale(opts.lr_scaling, accelerator.num_processes),
        attention=("sdpa" if on_gpu else "eager") if opts.attention == "auto" else opts.attention,
        fused_optimizer=on_gpu if opts.fused_optimizer == "auto" else bool(opts.fused_optimizer),
        tf32=platform == "cuda" if opts.tf32 == "auto" else bool(opts.tf32),
    )
    if on_gpu:  # process-wide: only the training process runs here
        torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
        torch.backends.cudnn.allow_tf32 = runtime.tf32
    return accelerator, runtime


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> None:
    """python, numpy and torch (CPU and every GPU). Each process gets its own stream (``seed + rank``)
    so that processes draw different flow-matching noise; the data order comes from ``seed`` alone."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


