"""Run every preflight check in order (environment, numerics, compile, memory, disk, inputs,
tracking) for the run the params describe, and write the report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from lerobot.utils.constants import OBS_IMAGES

from vla_pipeline.errors import PreflightError
from vla_pipeline.model.setup import ParamCounts, make_policy
from vla_pipeline.params import optional_float, param
from vla_pipeline.preflight import (
    compile_checks,
    disk,
    environment,
    inputs,
    numerics,
    probe,
    resources,
    tracking_checks,
)
from vla_pipeline.preflight.report import Check, PreflightReport
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.runtime import detect_platform, resolve_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreflightConfig:
    train: TrainConfig  # the run to prove, as the train stage builds it
    report_path: Path
    testdata: Path | None = None  # reference vectors (None: ../shared/testdata, else the shipped copy)
    allow_cuda_graphs: bool = False
    probe: bool = False  # measure one step per batch size (probe.py) instead of predicting from the table
    memory_gib: float | None = None  # the memory budget; None: the GPU's (the host's for a CPU probe)

    @classmethod
    def from_params(cls, p: dict) -> PreflightConfig:
        return cls(train=TrainConfig.from_params(p), report_path=param(p, "preflight.report", Path),
                   probe=param(p, "preflight.probe", bool),
                   memory_gib=param(p, "preflight.memory_gib", optional_float))


@dataclass(frozen=True)
class Target:
    """Where and how the run would execute (``auto`` resolved as the train stage resolves it)."""

    platform: str  # cpu | cuda | rocm
    device: str  # cpu | cuda
    precision: str
    attention: str
    checkpointing: bool
    compile: bool

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> Target:
        opts = cfg.runtime
        platform = detect_platform() if opts.device != "cpu" else "cpu"
        on_gpu = platform != "cpu"
        precision = "fp32" if opts.device == "cuda" and not on_gpu else resolve_precision(opts.precision, platform)
        return cls(platform, "cuda" if on_gpu else "cpu", precision,
                   ("sdpa" if on_gpu else "eager") if opts.attention == "auto" else opts.attention,
                   on_gpu if opts.gradient_checkpointing == "auto" else bool(opts.gradient_checkpointing),
                   False if opts.compile == "auto" else bool(opts.compile))


def run_preflight(cfg: PreflightConfig, *, version_of: Callable = environment.installed_version,
                  gpu_memory_gib: float | None = None, is_reachable: Callable = inputs.reachable) -> PreflightReport:
    """Every check, in order; the report is written to ``cfg.report_path`` (also when a check fails)."""
    train, target, report = cfg.train, Target.resolve(cfg.train), PreflightReport()
    report.add(*environment.check_versions(version_of))
    report.add(*environment.check_torch_build(train.runtime.device, environment.torch_build(),
                                              torch.cuda.is_available(), environment.rocm_machine()))
    report.add(*environment.check_gpus())
    testdata = numerics.find_testdata(cfg.testdata)
    report.add(*numerics.check_reference(testdata, target.device, target.attention, target.compile))
    report.add(*numerics.check_autocast(testdata, target.precision, target.device))
    report.add(*compile_checks.check_compile(target.compile, target.platform, "max-autotune", cfg.allow_cuda_graphs))
    counts = count_parameters(train)
    report.add(*check_memory(cfg, target, gpu_memory_gib, counts))
    report.add(*resources.check_disk(disk.disk_needs(train, counts, Path.cwd())))
    report.add(*inputs.check_dataset(train.dataset_root))
    report.add(*inputs.check_pretrained(train.policy.pretrained))
    report.add(*inputs.check_tokenizer(train.policy.tokenizer))
    report.add(*tracking_checks.check_wandb(train.wandb_mode, tracking_checks.wandb_key_present(), is_reachable))
    report.add(*tracking_checks.check_live_dir(train.live_dir))
    report.save(cfg.report_path)
    report.save_verdict(verdict_path(cfg.report_path))
    return report


def check_memory(cfg: PreflightConfig, target: Target, gpu_memory_gib: float | None = None,
                 counts: ParamCounts | None = None) -> list:
    """Peak memory of a step: measured by the probe (``cfg.probe``), else predicted from the GPU table and
    the parameter counts of the policy the run builds (``counts``: ``count_parameters``)."""
    train = cfg.train
    if cfg.memory_gib is not None:
        gpu_memory_gib = cfg.memory_gib
    elif gpu_memory_gib is None and target.device == "cuda":
        gpu_memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    if cfg.probe:
        budget = gpu_memory_gib if gpu_memory_gib is not None else host_memory_gib()
        where = torch.cuda.get_device_name(0) if target.device == "cuda" else "cpu (host memory)"
        try:
            measured = probe.run_probe(probe_spec(train, target))
        except probe.ProbeError as e:
            return [Check("memory", "probe", "fail", str(e), "lower train.batch_size, or run without --probe "
                          "to see the table's prediction")]
        built = ParamCounts(**measured.counts).describe(train.policy_setup(target.attention))
        return probe.check_probe(measured.peaks, train.batch_size, budget, f"{where}, {built}")
    counts = counts if counts is not None else count_parameters(train)
    return resources.check_memory(resources.MemoryCase(train.policy_setup(target.attention), counts, target.precision,
                                                       train.batch_size, target.checkpointing, gpu_memory_gib))


def probe_spec(train: TrainConfig, target: Target) -> probe.ProbeSpec:
    from vla_pipeline.data.contract import load_contract
    from vla_pipeline.model.config import compute_image_resolution

    contract = load_contract(train.contract_path)
    h, w = compute_image_resolution(train.policy)
    return probe.ProbeSpec(
        dims=train.policy.dims.to_dict() if train.policy.dims else None, chunk_size=train.policy.chunk_size,
        prompt_tokens=train.policy.tokenizer_max_length, dtype=train.policy.dtype, n_joints=len(contract.joints),
        cameras={f"{OBS_IMAGES}.{name}": [3, h, w] for name in contract.cameras}, device=target.device,
        precision=target.precision, checkpointing=target.checkpointing, freeze=list(train.freeze),
        batches=probe.make_batches(train.batch_size), peft=asdict(train.peft) if train.peft else None,
        ema_decay=train.ema_decay, attention=target.attention, compile=target.compile,
        fused_optimizer=train.runtime.fused_optimizer, tf32=train.runtime.tf32, grad_clip_norm=train.grad_clip_norm)


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def verdict_path(report_path: Path) -> Path:
    return Path(report_path).with_name("verdict.json")


def count_parameters(cfg: TrainConfig) -> ParamCounts:
    """The counts of the policy the run builds, through the Trainer's builder (``make_policy``: size,
    dtype, LoRA, freeze) on the meta device: shapes only, no memory, no weights. Pi0.5 pads state and
    action to its maximum dims and every camera shares the vision tower: the features change no parameter."""
    from vla_pipeline.model.config import make_pi05_config

    config = make_pi05_config(cfg.policy, 1, {}, "cpu")
    return make_policy(cfg.policy_setup(), config, device="meta").counts


def require_preflight(cfg: PreflightConfig, **kwargs) -> PreflightReport:
    """Run the checks, print the table; a failed check stops here (the report is written either way)."""
    report = run_preflight(cfg, **kwargs)
    log.info("%s", report.format_table())
    log.info("preflight report: %s", cfg.report_path)
    if not report.ok:
        failed = [f"{c.group}/{c.name}" for c in report.checks if c.status == "fail"]
        raise PreflightError(f"preflight failed: {', '.join(failed)}; the table above says what to do for each "
                             f"(report: {cfg.report_path})")
    return report
