"""Memory and disk before the run: peak GPU memory predicted from the builder's parameter counts and
figures measured on a GPU (or unknown, said so), and free disk where the run's copies will go.

The memory model (docs/preflight.md): the H200 table below measured full fine-tuning of full-size
Pi0.5 with float32 parameters; its line through two batch sizes gives an activation slope per sample
and an intercept. A run's peak is ``intercept - full fine-tuning state + this run's state + slope x
batch``, the states counted from the policy ``model.setup.make_policy`` builds (weights, gradients and
AdamW's moments of what trains, the EMA). Full fine-tuning in float32 reproduces the table; LoRA,
frozen parts and bfloat16 parameters predict less. The slope stays full fine-tuning's: an upper bound
where less trains (frozen parts keep fewer activations for the backward pass)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.model.setup import (
    ParamCounts,
    PolicySetup,
    compute_full_finetuning_bytes,
    compute_training_state_bytes,
)
from vla_pipeline.preflight.report import Check

#: peak GiB of one training step, full-size Pi0.5, float32 parameters, bf16 autocast, full fine-tuning,
#: AdamW, SDPA, prompt trimmed: measured on an NVIDIA H200 on 2026-12-04 (benchmarks/gpu_step.py,
#: docs/performance.md) at batch 8 and 32; gradient checkpointing -> ((batch, GiB), (batch, GiB))
MEASURED_PEAK_GIB = {False: ((8, 63.7), (32, 125.4)), True: ((8, 52.5), (32, 60.0))}
MARGIN = 0.95  # leave the allocator this share of the card
#: autocast precisions whose activations the table's bf16 figures cover (fp16 keeps them as wide)
COVERED_PRECISIONS = ("bf16", "fp16")
GIB = 2**30


def compute_state_gib(counts: ParamCounts, setup: PolicySetup) -> tuple[float, float]:
    """(this run's training state, full fine-tuning's in float32 of the same parameters: what the table
    measured), GiB."""
    return compute_training_state_bytes(counts, setup) / GIB, compute_full_finetuning_bytes(counts) / GIB


def predict_peak_gib(batch: int, checkpointing: bool, state_gib: tuple[float, float] | None = None) -> float:
    """The table's line through its two measured points, for full fine-tuning in float32 (``state_gib``
    None, or equal states); for another setup, that run's state plus the activations the line leaves
    above full fine-tuning's state, never below zero. Without gradient checkpointing the line's
    intercept (43.1 GiB) is below that state (49.8 GiB at full size): subtracting it whole would predict
    a LoRA run below its own weights at small batches."""
    (b0, m0), (b1, m1) = MEASURED_PEAK_GIB[checkpointing]
    line = m0 + (m1 - m0) * (batch - b0) / (b1 - b0)
    if state_gib is None or state_gib[0] == state_gib[1]:
        return line
    run_state, full_state = state_gib
    return run_state + max(line - full_state, 0.0)


def largest_batch(memory_gib: float, checkpointing: bool, state_gib: tuple[float, float] | None = None) -> int:
    batch = 0
    while predict_peak_gib(batch + 1, checkpointing, state_gib) <= memory_gib * MARGIN and batch < 4096:
        batch += 1
    return batch


@dataclass(frozen=True)
class MemoryCase:
    setup: PolicySetup  # what the run builds (size, dtype, LoRA, freeze, EMA)
    counts: ParamCounts  # of the policy make_policy builds for it (on the meta device)
    precision: str  # resolved train.precision
    batch: int
    checkpointing: bool
    gpu_memory_gib: float | None  # None: no GPU

    @property
    def size(self) -> str:
        return "tiny" if self.setup.dims is not None else "full"

    def describe(self) -> str:
        state = compute_training_state_bytes(self.counts, self.setup) / GIB
        return f"{self.counts.describe(self.setup)}, training state {state:.1f} GiB"


def check_memory(case: MemoryCase) -> list[Check]:
    if case.gpu_memory_gib is None:
        status = "warn" if case.size == "full" else "pass"
        return [Check("memory", "gpu_peak", status, f"no GPU: a {case.size} model trains in host memory "
                      f"({case.describe()})",
                      "full size on CPU is for checks only; train it on a GPU" if status == "warn" else "")]
    if case.size != "full" or case.precision not in COVERED_PRECISIONS:
        why = ("the table is full size" if case.size != "full" else
               f"precision {case.precision} keeps float32 activations, the table's are {'/'.join(COVERED_PRECISIONS)}")
        return [Check("memory", "gpu_peak", "warn" if case.size == "full" else "pass",
                      f"no measured figures for size {case.size}, precision {case.precision} ({why}); "
                      f"{case.describe()}",
                      "measure this setting with `vla preflight --probe` or benchmarks/gpu_step.py on the GPU "
                      "before a long run" if case.size == "full" else "")]
    state = compute_state_gib(case.counts, case.setup)
    peak = predict_peak_gib(case.batch, case.checkpointing, state)
    value = (f"predicted {peak:.1f} GiB at batch {case.batch}, gradient checkpointing "
             f"{'on' if case.checkpointing else 'off'}, on a {case.gpu_memory_gib:.0f} GiB GPU; {case.describe()}; "
             f"activations from full fine-tuning's figures (an estimate when less trains: measure with --probe)")
    if peak <= case.gpu_memory_gib * MARGIN:
        return [Check("memory", "gpu_peak", "pass", value)]
    fits = largest_batch(case.gpu_memory_gib, case.checkpointing, state)
    options = [f"train.batch_size: {fits}" if fits else "no batch fits as configured"]
    if not case.checkpointing:
        options.append(f"train.gradient_checkpointing: true (then up to batch "
                       f"{largest_batch(case.gpu_memory_gib, True, state)})")
    options.append("train.peft (LoRA), train.freeze (vision, language), policy.dtype: bfloat16, or a bigger GPU")
    return [Check("memory", "gpu_peak", "fail", value, "it does not fit: " + "; ".join(options))]


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(needs: dict[str, tuple]) -> list[Check]:
    """``needs``: what -> (where, bytes it will write there[, how they were counted]); places on one
    filesystem add up."""
    checks = []
    for what, (where, need, *note) in needs.items():
        free = free_bytes(where)
        on_same = sum(n for w, n, *_ in needs.values() if same_filesystem(w, where))
        ok = on_same <= free
        checks.append(Check("disk", what, "pass" if ok else "fail",
                            f"{where}: needs {need / 2**30:.2f} GiB ({on_same / 2**30:.2f} GiB with the rest on that "
                            f"disk), {free / 2**30:.1f} GiB free" + "".join(f"; {n}" for n in note),
                            "" if ok else "free space there, or point base.store / train.out_dir at a bigger disk "
                            "(or lower train.keep_last; `[cache] type = hardlink` in .dvc/config keeps DVC's copy "
                            "as links on one disk)"))
    return checks


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or their nearest existing parents) are on one filesystem (``st_dev``):
    where a hard link between them is possible."""
    def device_of(p: Path) -> int:
        p = Path(p).resolve()
        while not p.exists():
            p = p.parent
        return p.stat().st_dev
    return device_of(a) == device_of(b)
