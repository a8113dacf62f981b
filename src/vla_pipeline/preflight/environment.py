"""The machine: locked package versions, the torch build against ``train.device`` (and a ROCm torch
swapped for a CUDA build, lerobot #4470), and the GPUs torch sees."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from vla_pipeline.preflight.report import Check

#: what the project is locked to (pyproject's dependencies; a test keeps them equal)
LOCKED = {"lerobot": "==0.4.2", "transformers": "==4.53.3", "torch": ">=2.2.1,<2.8.0", "torchvision": ">=0.21.0,<0.23.0"}
VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions(version_of: Callable[[str], str | None] = installed_version) -> list[Check]:
    checks = []
    for dist, spec in LOCKED.items():
        found = version_of(dist)
        try:
            ok = found is not None and Version(found) in SpecifierSet(spec)
        except InvalidVersion:
            ok = False
        fix = "" if ok else (f"install the locked environment (`make install`, or pip install -r requirements.lock): "
                             f"{dist}{spec}; the compat layer and the checkpoints are proven with it only")
        checks.append(Check("environment", dist, "pass" if ok else "fail", f"{found or 'not installed'} (locked {spec})",
                            fix))
    return checks


def torch_build(version=torch.version) -> str:
    return "rocm" if getattr(version, "hip", None) else "cuda" if getattr(version, "cuda", None) else "cpu"


def rocm_machine() -> bool:
    """An AMD GPU machine: its runtime is installed or its devices are named."""
    return Path("/opt/rocm").is_dir() or shutil.which("rocm-smi") is not None or "HIP_VISIBLE_DEVICES" in os.environ


def check_torch_build(device: str, build: str, gpu_available: bool, on_rocm_machine: bool) -> list[Check]:
    """``device``: train.device (auto | cpu | cuda); ``build``: cpu | cuda | rocm (of the installed torch)."""
    value = f"torch {torch.__version__}, {build} build, GPU {'visible' if gpu_available else 'not visible'}"
    if on_rocm_machine and build == "cuda":
        return [Check("environment", "torch_build", "fail", value + " on a ROCm machine",
                      "a CUDA build of torch replaced the ROCm one (lerobot #4470: installing a package pulled it); "
                      "reinstall torch from the ROCm wheel index, then run preflight again")]
    if device == "cpu":
        return [Check("environment", "torch_build", "pass", value + "; train.device=cpu")]
    if build == "cpu":
        status = "fail" if device == "cuda" else "warn"
        return [Check("environment", "torch_build", status, value + f"; train.device={device}",
                      "install torch's CUDA or ROCm build for this machine (the CPU wheel sees no GPU)"
                      + ("" if status == "fail" else "; as it is, training falls back to the CPU"))]
    if not gpu_available:
        status = "fail" if device == "cuda" else "warn"
        return [Check("environment", "torch_build", status, value + f"; train.device={device}",
                      f"torch's {build} build sees no GPU: check the driver and "
                      f"{'/'.join(VISIBLE_DEVICES)}" + ("" if status == "fail" else "; as it is, training runs on CPU"))]
    return [Check("environment", "torch_build", "pass", value + f"; train.device={device}")]


def check_gpus() -> list[Check]:
    visible = {k: os.environ[k] for k in VISIBLE_DEVICES if k in os.environ}
    if not torch.cuda.is_available():
        return [Check("environment", "gpus", "pass", f"none visible{'; ' + str(visible) if visible else ''}")]
    gpus = [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
            for i in range(torch.cuda.device_count())]
    return [Check("environment", "gpus", "pass", f"{len(gpus)}: {', '.join(gpus)}{'; ' + str(visible) if visible else ''}")]
