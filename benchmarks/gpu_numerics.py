"""Pi0.5 numerics on a device: the compat layer against shared/testdata, per attention kernel, and
whether autocast really runs the matmuls in the requested precision.

For each reference (float32, bfloat16) and attention kernel (LeRobot's eager, PyTorch's SDPA) it
builds LeRobot's tiny ``PI05Pytorch`` from the reference weights on ``--device``, computes the loss,
``sample_actions`` and an image embedding from the reference inputs, and prints the max abs error
against the reference (computed on CPU by the README's oracle) with the tolerance; then SDPA
against eager on the same device (a bad fused kernel shows here even when both are near the
reference), and the dtypes that every ``nn.Linear`` outputs in one forward under accelerate's
autocast for each precision.

    PYTHONPATH=src python benchmarks/gpu_numerics.py --device cuda
    PYTHONPATH=src python benchmarks/gpu_numerics.py --device cpu        # the same on this CPU
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

import vla_pipeline  # noqa: F401  (offline defaults, compat layer)
from vla_pipeline.model.reference import (
    build_reference_model,
    load_reference,
)
from vla_pipeline.preflight.numerics import run_reference as preflight_reference  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCES = ["pi05_tiny_ref.safetensors", "pi05_tiny_ref_bf16.safetensors"]


def run_reference(path: Path, kernel: str, device: str) -> tuple[dict, dict]:
    """The preflight's reference run (``preflight.numerics.run_reference``), errors as JSON-ready dicts."""
    outputs, errors = preflight_reference(path, kernel, device)
    return outputs, {e.name: {"max_abs_error": e.max_abs_error, "atol": e.atol, "ok": e.ok} for e in errors}


def linear_output_dtypes(path: Path, precision: str, device: str) -> dict[str, int]:
    """Run one reference forward under accelerate's autocast and count each nn.Linear's output dtype."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # one Accelerator per precision in this process
    meta, tensors = load_reference(path)
    model = build_reference_model(meta, tensors).to(device).train()
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision)
    counts: collections.Counter = collections.Counter()
    hooks = [m.register_forward_hook(lambda _m, _i, out: counts.update([str(out.dtype)]))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    t = {k: v.to(device) for k, v in tensors.items()}
    with accelerator.autocast():
        model.forward([t["in/image0"], t["in/image1"]], [t["in/img_mask0"], t["in/img_mask1"]], t["in/tokens"],
                      t["in/masks"], t["in/actions"], noise=t["in/noise"].clone(), time=t["in/time"].clone())
    for h in hooks:
        h.remove()
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--testdata", type=Path, default=REPO.parent / "shared" / "testdata")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"Pi0.5 tiny reference on {name}, torch {torch.__version__}")
    results: dict = {"device": name, "torch": torch.__version__, "reference": {}, "sdpa_vs_eager": {}}
    failed = False
    for ref in REFERENCES:
        outputs = {}
        for kernel in ("eager", "sdpa"):
            outputs[kernel], errors = run_reference(args.testdata / ref, kernel, args.device)
            results["reference"][f"{ref}:{kernel}"] = errors
            for out, e in errors.items():
                failed |= not e["ok"]
                print(f"{ref:34s} {kernel:5s} {out:17s} max err {e['max_abs_error']:.2e} "
                      f"(tolerance {e['atol']:.0e}) {'ok' if e['ok'] else 'FAIL'}")
        diff = {k: (outputs["sdpa"][k] - outputs["eager"][k]).abs().max().item() for k in outputs["eager"]}
        results["sdpa_vs_eager"][ref] = diff
        print(f"{ref:34s} sdpa vs eager: " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    precisions = ["no", "bf16"] + (["fp16"] if args.device == "cuda" else [])
    results["autocast_linear_dtypes"] = {p: linear_output_dtypes(args.testdata / REFERENCES[0], p, args.device)
                                         for p in precisions}
    for p, counts in results["autocast_linear_dtypes"].items():
        print(f"autocast {p:4s}: nn.Linear outputs {counts}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
