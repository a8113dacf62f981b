"""Training throughput as the loop sees it, and what an out-of-memory step should tell the user."""

from __future__ import annotations

import contextlib
import time

import torch


class Interval:
    """Throughput over the steps since the last log, validation and checkpoint time left out; timed
    after the loss was read, so it covers the GPU's work and not only the kernel launches."""

    def __init__(self, step: int):
        self.step, self.t0, self.excluded = step, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def excluded_time(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0

    def measure(self, step: int, global_batch: int) -> dict:
        now = time.perf_counter()
        seconds = max(now - self.t0 - self.excluded, 1e-9) / max(step - self.step, 1)
        self.step, self.t0, self.excluded = step, now, 0.0
        out = {"perf/step_time_s": seconds, "perf/samples_per_s": global_batch / seconds}
        if torch.cuda.is_available():
            out["perf/gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


def describe_oom(cfg, runtime, step: int) -> str:
    """The batch, GPU, precision and checkpointing that ran out of memory, and what to change."""
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0
    advice = ("set train.gradient_checkpointing: true or lower train.batch_size" if not runtime.gradient_checkpointing
              else "lower train.batch_size (or freeze part of the model: train.freeze)")
    return (f"train.batch_size={cfg.batch_size} does not fit on this GPU ({total:.0f} GiB) at precision "
            f"{runtime.precision}, gradient checkpointing {'on' if runtime.gradient_checkpointing else 'off'}: "
            f"step {step} ran out of GPU memory. {advice[0].upper()}{advice[1:]}; docs/performance.md "
            f"lists the largest batches measured per GPU.")
