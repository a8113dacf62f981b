"""torch.compile: which modes the run would use, and on ROCm a refusal of the modes that use CUDA
graphs (they silently slowed convergence on MI300X, pytorch #187715) unless asked for explicitly."""

from __future__ import annotations

from vla_pipeline.preflight.report import Check

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile(compile_on: bool, platform: str, lerobot_mode: str, allow_cuda_graphs: bool = False) -> list[Check]:
    if not compile_on:
        return [Check("compile", "mode", "pass", "off (train.compile)")]
    value = (f"on: the training forward with torch.compile's default mode (no CUDA graphs), LeRobot's "
             f"sample_actions with mode {lerobot_mode!r}")
    if platform == "rocm" and lerobot_mode in CUDA_GRAPH_MODES and not allow_cuda_graphs:
        return [Check("compile", "mode", "fail", value + " on ROCm",
                      f"mode {lerobot_mode!r} uses CUDA graphs, which slowed convergence on MI300X (pytorch #187715): "
                      f"keep train.compile: false on ROCm, or pass --allow-cuda-graphs to accept it")]
    return [Check("compile", "mode", "pass", value)]
