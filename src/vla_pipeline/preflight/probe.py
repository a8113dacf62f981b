"""The one-step memory probe (``vla preflight --probe``): the configured policy built as the Trainer
builds it (``model.setup.make_policy``: size, dtype, LoRA, freeze) with random weights, the run's
accelerator and runtime (``train.runtime.make_accelerator``: precision, gradient checkpointing, compile,
fused AdamW, TF32), and the Trainer's own step (``train.optim.make_train_step`` and
:class:`~vla_pipeline.train.optim.TrainStep`: the EMA, LeRobot's AdamW and schedule presets, the
run's gradient clipping), one step per batch size under the run's attention kernel, in a child process
(a probe that runs out of memory must not take the preflight down with it). Peak memory per batch size,
and the largest batch that fits a budget from a straight line through the measured points (weights,
gradients and optimizer state are the constant part, activations the per-sample part).

Measured as: GPU, ``torch.cuda.max_memory_allocated`` of the step (weights included); CPU, the
process's peak resident memory during the step (VmHWM, reset before it) above what it held before
the model was built."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass, replace

import torch

from vla_pipeline.preflight.report import Check
from vla_pipeline.preflight.resources import MARGIN  # the share of the budget a run may use

FULL_VOCAB = 257152


@dataclass(frozen=True)
class ProbeSpec:
    """Everything the child needs, JSON-ready."""

    dims: dict | None  # None: LeRobot's full size
    chunk_size: int
    prompt_tokens: int  # policy.tokenizer_max_length: prompts padded to it (the worst case)
    dtype: str
    n_joints: int
    cameras: dict[str, list[int]]  # key -> (C, H, W) at the policy's resolution
    device: str
    precision: str  # bf16 | fp16 | fp32
    checkpointing: bool
    freeze: list[str]
    batches: list[int]  # ascending; the configured batch last
    peft: dict | None = None  # train.peft as ``asdict(LoraSpec)`` (None: full fine-tuning)
    ema_decay: float | None = None  # train.ema.decay: the EMA the run keeps (None: off)
    attention: str = "eager"  # the resolved kernel the step runs under
    compile: bool = False  # the resolved train.compile
    fused_optimizer: str | bool = "auto"  # train.fused_optimizer
    tf32: str | bool = "auto"  # train.tf32
    grad_clip_norm: float = 1.0  # train.grad_clip_norm

    def runtime_options(self):
        """The :class:`RuntimeOptions` the child's accelerator is made from (as the Trainer's is)."""
        from vla_pipeline.train.runtime import RuntimeOptions

        return RuntimeOptions(device=self.device, precision=self.precision, gradient_checkpointing=self.checkpointing,
                              compile=self.compile, attention=self.attention, fused_optimizer=self.fused_optimizer,
                              tf32=self.tf32)

    def setup(self):
        """The :class:`PolicySetup` the run builds with (model/setup.py), rebuilt from the JSON."""
        from vla_pipeline.model.dims import ModelDims
        from vla_pipeline.model.lora import LoraSpec
        from vla_pipeline.model.setup import PolicySetup

        peft = None if self.peft is None else LoraSpec(**{**self.peft, "full": tuple(self.peft.get("full", ()))})
        return PolicySetup(dims=ModelDims.from_dict(self.dims) if self.dims else None, dtype=self.dtype, peft=peft,
                           freeze=tuple(self.freeze), ema_decay=self.ema_decay, attention=self.attention)


@dataclass(frozen=True)
class ProbeResult:
    """Peak bytes per batch size (None: out of memory at that batch) and the child's parameter counts
    (``asdict(ParamCounts)`` of the policy it built)."""

    peaks: dict[int, float | None]
    counts: dict
    built: dict  # what else the child ran with: {"ema_tensors": ..., "attention": ...}


def make_batches(configured: int) -> list[int]:
    """1 and 2 (the line's slope even when the configured batch does not fit), then the configured one."""
    return sorted({1, 2, configured})


def run_probe(spec: ProbeSpec, timeout_s: float = 1800.0) -> ProbeResult:
    """Peak bytes per batch size (None: out of memory at that batch). On a GPU one child measures every
    batch (the allocator's peak resets); on the CPU one child per batch (a process's peak resident
    memory never goes down, and the first step's lazily loaded libraries would hide batch 1)."""
    if spec.device != "cpu":
        return _run_child(spec, timeout_s)
    peaks: dict[int, float | None] = {}
    for batch in spec.batches:
        result = _run_child(replace(spec, batches=[batch]), timeout_s)
        peaks.update(result.peaks)
    return ProbeResult(peaks, result.counts, result.built)


def _run_child(spec: ProbeSpec, timeout_s: float) -> ProbeResult:
    cmd = [sys.executable, "-m", __name__]
    try:
        done = subprocess.run(cmd, input=json.dumps(asdict(spec)), capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"the probe did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        killed = done.returncode < 0 or done.returncode == 137
        why = "it was killed (out of host memory?)" if killed else f"exit {done.returncode}: {' | '.join(tail)}"
        raise ProbeError(f"the probe process failed at batch {spec.batches}: {why}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return ProbeResult({int(b): p for b, p in out["peaks"].items()}, out["counts"], out["built"])


class ProbeError(RuntimeError):
    pass


def compute_largest_batch(peaks: dict[int, float | None], budget_bytes: float) -> int:
    """The largest batch whose peak, on the line through the two largest measured batches, fits."""
    measured = sorted((b, p) for b, p in peaks.items() if p is not None)
    if not measured:
        return 0
    if len(measured) == 1:
        return measured[0][0] if measured[0][1] <= budget_bytes else 0
    (b0, p0), (b1, p1) = measured[-2:]
    slope = max((p1 - p0) / (b1 - b0), 1.0)
    return max(int(math.floor(b0 + (budget_bytes - p0) / slope)), 0)


def check_probe(peaks: dict[int, float | None], batch: int, budget_gib: float, where: str) -> list[Check]:
    """Pass when the configured batch ran and its peak fits ``MARGIN`` of the budget, else fail with
    the largest batch that fits and the options."""
    budget = budget_gib * 2**30 * MARGIN
    measured = ", ".join(f"batch {b}: {'out of memory' if p is None else f'{p / 2**30:.3f} GiB'}"
                         for b, p in sorted(peaks.items()))
    value = f"probe on {where}: {measured}; budget {budget_gib:.2f} GiB"
    peak = peaks.get(batch)
    if peak is not None and peak <= budget:
        return [Check("memory", "probe", "pass", value)]
    fits = compute_largest_batch(peaks, budget)
    first = f"train.batch_size: {fits} (the largest that fits)" if fits else "no batch fits as configured"
    return [Check("memory", "probe", "fail", value,
                  f"batch {batch} does not fit: {first}; or train.gradient_checkpointing: true, train.freeze "
                  f"(vision, language), policy.dtype: bfloat16, or a bigger GPU")]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Restart the peak resident memory (VmHWM) from now, so that what importing the libraries touched
    does not count (Linux >= 4.0; elsewhere the peak stays the process's lifetime one)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _max_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def make_random_batch(spec: ProbeSpec, batch: int, vocab: int) -> dict:
    """A preprocessed batch of the run's shapes: images at the policy's resolution, prompts padded to
    ``tokenizer_max_length``, action chunks."""
    from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

    g = torch.Generator().manual_seed(batch)
    out = {k: torch.rand((batch, *shape), generator=g) for k, shape in spec.cameras.items()}
    out[OBS_LANGUAGE_TOKENS] = torch.randint(0, vocab, (batch, spec.prompt_tokens), generator=g)
    out[OBS_LANGUAGE_ATTENTION_MASK] = torch.ones((batch, spec.prompt_tokens), dtype=torch.bool)
    out[ACTION] = torch.rand((batch, spec.chunk_size, spec.n_joints), generator=g) * 2 - 1
    return {k: v.to(spec.device) for k, v in out.items()}


def prepared(batch: dict) -> dict:
    """The probe's batches are made as the model takes them (``make_random_batch``): nothing to prepare."""
    return batch


def make_probe_step(spec: ProbeSpec):
    """(In the child.) The run's accelerator and runtime, its policy through the one builder
    (``make_policy``, random weights) and the Trainer's step (``make_train_step``); returns
    (runtime, built policy, step)."""
    from vla_pipeline.model.config import PolicyConfig, make_pi05_config
    from vla_pipeline.model.setup import make_policy
    from vla_pipeline.train.optim import make_train_step
    from vla_pipeline.train.runtime import make_accelerator

    setup = spec.setup()
    accelerator, runtime = make_accelerator(spec.runtime_options())
    policy_cfg = PolicyConfig(dims=setup.dims, chunk_size=spec.chunk_size, n_action_steps=spec.chunk_size,
                              tokenizer_max_length=spec.prompt_tokens, dtype=spec.dtype)
    config = make_pi05_config(policy_cfg, spec.n_joints, {k: tuple(v) for k, v in spec.cameras.items()}, runtime.device,
                              gradient_checkpointing=runtime.gradient_checkpointing, compile_model=runtime.compile)
    built = make_policy(setup, config, device=runtime.device)
    step = make_train_step(built.policy, config, 10, runtime, accelerator, ema_decay=setup.ema_decay, prepare=prepared,
                           grad_clip_norm=spec.grad_clip_norm)
    return runtime, built, step


def measure_peaks(spec: ProbeSpec) -> ProbeResult:
    """(In the child.) One Trainer step (``make_probe_step``) per batch size under the run's attention
    kernel; peak bytes, None where it ran out of memory."""
    from vla_pipeline.model.compat.attention import attention_kernel

    on_gpu = spec.device != "cpu"
    baseline = 0 if on_gpu else _rss_bytes()
    runtime, built, step = make_probe_step(spec)
    setup = spec.setup()
    vocab = setup.dims.vocab_size if setup.dims else FULL_VOCAB
    peaks: dict[int, float | None] = {}
    for batch in spec.batches:
        data = make_random_batch(spec, batch, vocab)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()
        try:
            with attention_kernel(runtime.attention):
                step(data)
        except torch.OutOfMemoryError:
            peaks[batch] = None
            break
        peaks[batch] = float(torch.cuda.max_memory_allocated() if on_gpu else _max_rss_bytes() - baseline)
        del data
    return ProbeResult(peaks, asdict(built.counts), {"ema_tensors": len(step.ema.names) if step.ema else 0,
                                                      "attention": runtime.attention})


def main() -> None:
    import vla_pipeline  # noqa: F401  (offline defaults, compat layer)
    from vla_pipeline.quiet import quiet_third_party

    quiet_third_party()
    spec = ProbeSpec(**json.loads(sys.stdin.read()))
    result = measure_peaks(spec)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()

