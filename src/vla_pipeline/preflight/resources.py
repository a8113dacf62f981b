"""Memory and disk before the run: peak GPU memory predicted from figures measured on a GPU (or
unknown, said so), and free disk where the frame cache, checkpoints and W&B files will go."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.preflight.report import Check

#: peak GiB of one training step, full-size Pi0.5, float32 parameters, bf16 autocast, full fine-tuning,
#: AdamW, SDPA, prompt trimmed: measured on an NVIDIA H200 on 2026-12-04 (benchmarks/gpu_step.py,
#: docs/performance.md) at batch 8 and 32; gradient checkpointing -> ((batch, GiB), (batch, GiB))
MEASURED_PEAK_GIB = {False: ((8, 63.7), (32, 125.4)), True: ((8, 52.5), (32, 60.0))}
MARGIN = 0.95  # leave the allocator this share of the card
FLOAT_BYTES = {"float32": 4, "bfloat16": 2}


def predict_peak_gib(batch: int, checkpointing: bool) -> float:
    """Linear in the batch through the two measured points (weights, gradients and AdamW state are the
    constant part, activations the per-sample part)."""
    (b0, m0), (b1, m1) = MEASURED_PEAK_GIB[checkpointing]
    return m0 + (m1 - m0) * (batch - b0) / (b1 - b0)


def largest_batch(memory_gib: float, checkpointing: bool) -> int:
    batch = 0
    while predict_peak_gib(batch + 1, checkpointing) <= memory_gib * MARGIN:
        batch += 1
    return batch


@dataclass(frozen=True)
class MemoryCase:
    size: str  # tiny | full
    dtype: str  # policy.dtype
    precision: str  # resolved train.precision
    freeze: tuple[str, ...]
    batch: int
    checkpointing: bool
    gpu_memory_gib: float | None  # None: no GPU


def check_memory(case: MemoryCase) -> list[Check]:
    if case.gpu_memory_gib is None:
        status = "warn" if case.size == "full" else "pass"
        return [Check("memory", "gpu_peak", status, f"no GPU: a {case.size} model trains in host memory",
                      "full size on CPU is for checks only; train it on a GPU" if status == "warn" else "")]
    measured = case.size == "full" and case.dtype == "float32" and case.precision == "bf16" and not case.freeze
    if not measured:
        return [Check("memory", "gpu_peak", "warn" if case.size == "full" else "pass",
                      f"no measured figures for size {case.size}, dtype {case.dtype}, precision {case.precision}, "
                      f"freeze {list(case.freeze)}",
                      "measure this setting with benchmarks/gpu_step.py on the GPU before a long run"
                      if case.size == "full" else "")]
    peak = predict_peak_gib(case.batch, case.checkpointing)
    value = (f"predicted {peak:.1f} GiB at batch {case.batch}, gradient checkpointing "
             f"{'on' if case.checkpointing else 'off'}, on a {case.gpu_memory_gib:.0f} GiB GPU")
    if peak <= case.gpu_memory_gib * MARGIN:
        return [Check("memory", "gpu_peak", "pass", value)]
    fits, fits_ckpt = largest_batch(case.gpu_memory_gib, case.checkpointing), largest_batch(case.gpu_memory_gib, True)
    options = [f"train.batch_size: {fits}" if fits else "no batch fits as configured"]
    if not case.checkpointing:
        options.append(f"train.gradient_checkpointing: true (then up to batch {fits_ckpt})")
    options.append("train.freeze (vision, language) or a bigger GPU")
    return [Check("memory", "gpu_peak", "fail", value, "it does not fit: " + "; ".join(options))]


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(needs: dict[str, tuple[Path, int]]) -> list[Check]:
    """``needs``: what -> (where, bytes it will write there); places on one filesystem add up."""
    checks = []
    for what, (where, need) in needs.items():
        free = free_bytes(where)
        on_same = sum(n for w, n in needs.values() if _same_fs(w, where))
        ok = on_same <= free
        checks.append(Check("disk", what, "pass" if ok else "fail",
                            f"{where}: needs {need / 2**30:.2f} GiB ({on_same / 2**30:.2f} GiB with the rest on that "
                            f"disk), {free / 2**30:.1f} GiB free",
                            "" if ok else "free space there, or point base.store / train.out_dir at a bigger disk "
                            "(or lower train.keep_last)"))
    return checks


def _same_fs(a: Path, b: Path) -> bool:
    def device_of(p: Path) -> int:
        p = Path(p).resolve()
        while not p.exists():
            p = p.parent
        return p.stat().st_dev
    return device_of(a) == device_of(b)
