"""Numerics on the target device: LeRobot's Pi0.5 through the compat layer against the reference
vectors (shared/testdata, or the copy shipped in the package) with the configured attention kernel;
SDPA against eager on the same device (a bad fused kernel, pytorch #147460); and whether autocast
really runs the matmuls in the requested precision (lerobot #3912)."""

from __future__ import annotations

import collections
from pathlib import Path

import torch

from vla_pipeline.model.compat.attention import attention_kernel
from vla_pipeline.model.reference import (
    TOLERANCES,
    OutputError,
    build_reference_model,
    compute_errors,
    compute_reference_outputs,
    load_reference,
)
from vla_pipeline.preflight.report import Check

REFERENCES = ("pi05_tiny_ref.safetensors", "pi05_tiny_ref_bf16.safetensors")
SHIPPED = Path(__file__).resolve().parents[1] / "model" / "reference_vectors"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def find_testdata(given: Path | None = None) -> Path:
    """``given``, else the repo's ``../shared/testdata``, else the copy shipped inside the package."""
    repo_copy = Path(__file__).resolve().parents[3].parent / "shared" / "testdata"
    for candidate in (given, repo_copy, SHIPPED):
        if candidate is not None and (Path(candidate) / REFERENCES[0]).is_file():
            return Path(candidate)
    return SHIPPED


def run_reference(path: Path, kernel: str, device: str, compiled: bool = False) -> tuple[dict, list]:
    """The reference outputs on ``device`` with ``kernel``; ``compiled``: the training forward under
    ``torch.compile`` as the train stage compiles it (``Pi05Loss``)."""
    meta, tensors = load_reference(path)
    model = build_reference_model(meta, tensors).to(device)
    if compiled:
        model.forward = torch.compile(model.forward)
    on_device = {k: v.to(device) for k, v in tensors.items()}
    with attention_kernel(kernel):
        outputs = compute_reference_outputs(model, on_device, meta["num_inference_steps"])
    outputs = {k: v.float().cpu() for k, v in outputs.items()}
    return outputs, compute_errors(outputs, tensors, TOLERANCES[meta["dtype"]])


def compiled_errors(testdata: Path, name: str, kernel: str, device: str) -> list:
    """Errors of the compiled forward (``compare_compiled``)."""
    outputs, _ = run_reference(testdata / name, kernel, device, compiled=True)
    return compare_compiled(outputs, testdata, name)


def compare_compiled(outputs: dict, testdata: Path, name: str) -> list:
    """Errors of compiled ``outputs`` against reference ``name``. Inductor computes a bf16 model's
    pointwise ops in fp32, so a compiled bf16 forward lands between the bf16 reference (eager's
    roundings) and the fp32 one (the exact math; the two differ by up to 1.8e-2): each output passes
    within the bf16 tolerance of either."""
    meta, tensors = load_reference(testdata / name)
    errors = compute_errors(outputs, tensors, TOLERANCES[meta["dtype"]])
    if meta["dtype"] != "bfloat16":
        return errors
    exact = compute_errors(outputs, load_reference(testdata / REFERENCES[0])[1], TOLERANCES["bfloat16"])
    exact = [OutputError(f"{e.name} vs the float32 reference", e.max_abs_error, e.atol) for e in exact]
    return [min(a, b, key=lambda e: e.max_abs_error) for a, b in zip(errors, exact, strict=True)]


def check_reference(testdata: Path, device: str, attention: str, compiled: bool = False) -> list[Check]:
    """Each reference with the configured kernel (and compile setting), then SDPA against eager."""
    checks = []
    for name in REFERENCES:
        outputs = {}
        for kernel in dict.fromkeys((attention, "eager", "sdpa")):
            outputs[kernel], errors = run_reference(testdata / name, kernel, device)
            if kernel != attention:
                continue
            if compiled:  # what the run computes: compiled; the SDPA/eager comparison stays eager-mode
                errors = compiled_errors(testdata, name, kernel, device)
            worst = max(errors, key=lambda e: e.max_abs_error / e.atol)
            ok = all(e.ok for e in errors)
            checks.append(Check("numerics", f"reference:{name.removesuffix('.safetensors')}:{kernel}"
                                f"{'+compile' if compiled else ''}", "pass" if ok else "fail",
                                f"{device}: max error {worst.max_abs_error:.2e} ({worst.name}), tolerance {worst.atol:g}",
                                "" if ok else "Pi0.5 does not compute what LeRobot's reference computes on this device and "
                                "kernel: try train.attention: eager; check the torch build (ROCm: AOTriton >= 0.8.2)"))
        tolerance = TOLERANCES[load_reference(testdata / name)[0]["dtype"]]
        diff = max((outputs["sdpa"][k] - outputs["eager"][k]).abs().max().item() for k in outputs["eager"])
        ok = diff <= tolerance  # NaN compares False
        checks.append(Check("numerics", f"sdpa_vs_eager:{name.removesuffix('.safetensors')}", "pass" if ok else "fail",
                            f"{device}: max difference {diff:.2e}, tolerance {tolerance:g}",
                            "" if ok else "PyTorch's fused attention differs from eager on this device (pytorch "
                            "#147460, #143242): set train.attention: eager"))
    return checks


def linear_output_dtypes(testdata: Path, precision: str, device: str) -> collections.Counter:
    """One reference training forward under torch's autocast (what accelerate enables): the dtype of
    every ``nn.Linear`` output."""
    meta, tensors = load_reference(testdata / REFERENCES[0])
    model = build_reference_model(meta, tensors).to(device).train()
    counts: collections.Counter = collections.Counter()
    hooks = [m.register_forward_hook(lambda _m, _i, out: counts.update([str(out.dtype).removeprefix("torch.")]))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    t = {k: v.to(device) for k, v in tensors.items()}
    dtype = AUTOCAST_DTYPES[precision]
    try:
        with torch.autocast(device_type=device, dtype=dtype, enabled=precision != "fp32"):
            model.forward([t["in/image0"], t["in/image1"]], [t["in/img_mask0"], t["in/img_mask1"]], t["in/tokens"],
                          t["in/masks"], t["in/actions"], noise=t["in/noise"].clone(), time=t["in/time"].clone())
    finally:
        for h in hooks:
            h.remove()
    return counts


def check_autocast(testdata: Path, precision: str, device: str) -> list[Check]:
    counts = linear_output_dtypes(testdata, precision, device)
    expected = str(AUTOCAST_DTYPES[precision]).removeprefix("torch.")
    ok = set(counts) == {expected}
    return [Check("numerics", "autocast", "pass" if ok else "fail",
                  f"{device}, precision {precision}: nn.Linear outputs {dict(counts)}",
                  "" if ok else f"the matmuls do not run in {expected}: the precision setting is not applied (lerobot "
                  f"#3912); check train.precision and the accelerate version")]
