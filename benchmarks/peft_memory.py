"""Trainable parameters and training-state bytes of full-size Pi0.5 for full fine-tuning, each
train.freeze preset and each LoRA preset. The model is built on PyTorch's meta device (shapes only,
no weights, no GPU), so this runs anywhere in seconds.

    python benchmarks/peft_memory.py [--dtype float32|bfloat16]

Bytes per run: weights (the policy dtype; LoRA adds its adapters), gradients (one per trainable
parameter, its dtype) and AdamW's two moments (``exp_avg``, ``exp_avg_sq``, the parameter's dtype,
as torch keeps them). Activations come on top and depend on batch, precision and checkpointing:
measure them on a GPU with ``benchmarks/gpu_step.py`` or ``vla preflight --probe``.
"""

from __future__ import annotations

import argparse

import torch

import vla_pipeline  # noqa: F401  (compat layer)
from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.config import PolicyConfig, make_pi05_config
from vla_pipeline.model.freeze import apply_freeze
from vla_pipeline.model.lora import apply_lora, make_lora_spec

SETUPS = {  # name -> (train.freeze, train.peft.preset)
    "full fine-tuning": ((), None),
    "freeze vision": (("vision",), None),
    "freeze vlm": (("vlm",), None),
    "freeze expert_only": (("expert_only",), None),
    "LoRA openpi": ((), "openpi"),
    "LoRA expert": ((), "expert"),
}


def measure(dtype: str, freeze: tuple[str, ...], preset: str | None) -> dict[str, float]:
    cfg = PolicyConfig(dims=None, dtype=dtype)
    config = make_pi05_config(cfg, 6, {"observation.images.front": (3, 224, 224)}, "cpu")
    config.device = "meta"  # PI05Policy moves its model to config.device; LeRobot's check knows no "meta"
    with torch.device("meta"):
        policy = make_pi05_policy(config, None)
        if preset is not None:
            apply_lora(policy, make_lora_spec(preset))
    apply_freeze(policy, freeze)
    params = list(policy.parameters())
    trainable = [p for p in params if p.requires_grad]
    gib = 2**30
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in trainable),
        "weights_gib": sum(p.numel() * p.element_size() for p in params) / gib,
        "grads_gib": sum(p.numel() * p.element_size() for p in trainable) / gib,
        "adamw_gib": sum(2 * p.numel() * p.element_size() for p in trainable) / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    print(f"full-size Pi0.5, policy.dtype {args.dtype} (meta device: shapes only)")
    print("| setup | trainable params | share | weights GiB | grads GiB | AdamW state GiB | total GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (freeze, preset) in SETUPS.items():
        m = measure(args.dtype, freeze, preset)
        total = m["weights_gib"] + m["grads_gib"] + m["adamw_gib"]
        print(f"| {name} | {m['trainable']:,} | {m['trainable'] / m['params']:.1%} | {m['weights_gib']:.2f} | "
              f"{m['grads_gib']:.2f} | {m['adamw_gib']:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
