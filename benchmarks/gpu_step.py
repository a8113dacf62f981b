"""Pi0.5 training step on a GPU: this project's step against LeRobot's own, same model, batch and precision.

For each batch size and gradient-checkpointing setting it builds LeRobot's ``PI05Policy`` (random
init, seeded: both sides get the same weights), one batch of the same images, prompts (LeRobot's
Pi0.5 preprocessor with the local tokenizer; task + discretized state) and actions, and times:

* ``lerobot``: ``lerobot_train.update_policy`` as LeRobot's train script calls it: eager attention,
  LeRobot's AdamW preset, prompts padded to ``tokenizer_max_length`` (200), accelerate bf16 autocast;
* ``ours``: ``vla_pipeline.train.optim.train_step`` with the train stage's GPU defaults: SDPA attention,
  fused AdamW, TF32, prompt padding trimmed, no host synchronisation inside the step; compile off
  (the AMD ROCm default);
* ``ours+compile`` (``--compile``): the same with ``torch.compile`` of ``PI05Pytorch.forward``; its
  compilation (the warm-up) is reported separately;
* ``ours+data`` (``--with-data``): ours with the train stage's whole data path in the loop (a 640x480
  two-camera demo dataset read through the frame cache, LeRobot's preprocessing, the pinned copy),
  against the bare step: the stage should stay within 10% of it.

It reports s/step, samples/s, peak GPU memory and MFU (model FLOPs 6 x params x tokens per part,
with LeRobot's padded prompt length for both sides, over ``--peak-tflops``: 989 for an H100 SXM's
dense bf16), and with ``--max-batch`` the largest batch that fits for full fine-tuning with
checkpointing on and off. Preprocessing is done once, outside the timed steps, on both sides.

    PYTHONPATH=src python benchmarks/gpu_step.py                       # full size, batch 8 and 32, ckpt on/off
    PYTHONPATH=src python benchmarks/gpu_step.py --compile --with-data --max-batch
    python benchmarks/gpu_step.py --device cpu --size tiny --batch-sizes 2 --steps 2   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import types
from pathlib import Path

import torch
from lerobot.utils.constants import ACTION, OBS_STATE

import vla_pipeline  # noqa: F401  (offline defaults, compat layer)
from vla_pipeline.data.demo import TASKS
from vla_pipeline.data.sampler import make_loader
from vla_pipeline.model.build import make_pi05_policy
from vla_pipeline.model.compat.attention import attention_kernel
from vla_pipeline.model.config import PolicyConfig, make_pi05_config
from vla_pipeline.model.dims import ModelDims
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.model.processors import make_processors
from vla_pipeline.model.tokenizer import make_local_tokenizer
from vla_pipeline.train.batch import BatchPreparer

REPO = Path(__file__).resolve().parents[1]
CAMERAS = {"observation.images.front": (3, 224, 224), "observation.images.wrist": (3, 224, 224)}
N_JOINTS, CHUNK, PROMPT = 6, 50, 200  # LeRobot's Pi0.5 defaults: chunk 50, prompts padded to 200 tokens


def make_policy(args, checkpointing: bool, device: str):
    dims = None
    if args.size == "tiny":
        dims = ModelDims.from_dict(json.loads((REPO.parent / "shared/testdata/pi05_tiny_ref.json").read_text())["dims"])
    cfg = PolicyConfig(dims=dims, chunk_size=CHUNK, n_action_steps=CHUNK, tokenizer_max_length=PROMPT,
                       dtype=args.dtype)
    config = make_pi05_config(cfg, N_JOINTS, CAMERAS, device, gradient_checkpointing=checkpointing,
                              image_resolution=(224, 224))
    torch.manual_seed(0)
    with torch.device(device):
        policy = make_pi05_policy(config, dims)
    return policy.to(device), config, dims


def make_raw_batch(batch_size: int) -> dict:
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand((batch_size, *s), generator=g) for k, s in CAMERAS.items()}
    batch[OBS_STATE] = torch.rand((batch_size, N_JOINTS), generator=g) * 2 - 1
    batch[ACTION] = torch.rand((batch_size, CHUNK, N_JOINTS), generator=g) * 2 - 1
    batch[f"{ACTION}_is_pad"] = torch.zeros((batch_size, CHUNK), dtype=torch.bool)
    batch["task"] = [TASKS[i % len(TASKS)] for i in range(batch_size)]
    return batch


def identity_stats() -> dict:
    q = {"q01": -torch.ones(N_JOINTS), "q99": torch.ones(N_JOINTS), "mean": torch.zeros(N_JOINTS),
         "std": torch.ones(N_JOINTS)}
    return {OBS_STATE: dict(q), ACTION: dict(q)}


def model_flops_per_sample(policy, prefix_tokens: int, suffix_tokens: int) -> float:
    """6 x params x tokens for each part: SigLIP on the image patches, the VLM on the prefix, the
    action expert on the suffix (embedding tables left out)."""
    parts = {"vision": 0, "vlm": 0, "expert": 0}
    for name, p in policy.named_parameters():
        if "embed_tokens" in name or "lm_head" in name:
            continue
        key = "vision" if ("vision_tower" in name or "multi_modal_projector" in name) else \
              "vlm" if "paligemma.model.language_model" in name else "expert" if "gemma_expert" in name else None
        if key:
            parts[key] += p.numel()
    return 6.0 * (parts["vision"] * image_tokens() + parts["vlm"] * prefix_tokens + parts["expert"] * suffix_tokens)


def image_tokens() -> int:
    """SigLIP patches over all cameras (14x14 patches: 256 per 224x224 image)."""
    return sum((s[1] // 14) * (s[2] // 14) for s in CAMERAS.values())


def time_steps(step, warmup: int, steps: int, device: str) -> tuple[float, float, float]:
    """(warm-up seconds, seconds per timed step, peak GiB)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm = time.perf_counter() - t0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return warm, (time.perf_counter() - t0) / steps, peak


def run_side(side: str, args, batch_size: int, checkpointing: bool, tokenizer: Path) -> dict:
    from accelerate import Accelerator

    from vla_pipeline.train.optim import make_optimizer_and_scheduler, train_step

    device = args.device
    policy, config, _ = make_policy(args, checkpointing, device)
    preprocessor, _ = make_processors(config, identity_stats(), tokenizer)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=args.precision)
    raw = make_raw_batch(batch_size)
    ours = side.startswith("ours")
    torch.backends.cuda.matmul.allow_tf32 = ours
    torch.backends.cudnn.allow_tf32 = ours
    optimizer, scheduler = make_optimizer_and_scheduler(policy, config, 10_000, fused=ours and device == "cuda")
    if side == "ours+data":  # the train stage's whole path: frame-cache loader, preprocessing, copy, step
        loader = make_loader(args.data, batch_size, 0, 0, pin_memory=device == "cuda")
        prepare = BatchPreparer(preprocessor, trim=True)
        batch = prepare(next(loader))
        model, optimizer = accelerator.prepare(Pi05Loss(policy), optimizer)

        def step():
            train_step(model, prepare(next(loader)), optimizer, scheduler, accelerator,
                       grad_clip_norm=config.optimizer_grad_clip_norm)
        kernel = "sdpa"
    elif ours:
        batch = BatchPreparer(preprocessor, trim=True)(raw)
        model, optimizer = accelerator.prepare(Pi05Loss(policy, compile_forward=side == "ours+compile"), optimizer)

        def step():
            train_step(model, batch, optimizer, scheduler, accelerator, grad_clip_norm=config.optimizer_grad_clip_norm)
        kernel = "sdpa"
    else:
        from lerobot.scripts.lerobot_train import update_policy

        batch = preprocessor(raw)
        model, optimizer = accelerator.prepare(policy, optimizer)

        def step():
            update_policy(types.SimpleNamespace(), model, batch, optimizer, config.optimizer_grad_clip_norm,
                          accelerator, scheduler)
        kernel = "eager"
    prompt = batch["observation.language.tokens"].shape[1]
    try:
        with attention_kernel(kernel):
            warm, seconds, peak = time_steps(step, args.warmup, args.steps, device)
        result = {"s_per_step": seconds, "samples_per_s": batch_size / seconds, "peak_gib": peak, "warmup_s": warm,
                  "prompt_tokens": prompt}
        flops = model_flops_per_sample(policy, image_tokens() + PROMPT, CHUNK)
        result["mfu"] = flops * result["samples_per_s"] / (args.peak_tflops * 1e12)
    except torch.OutOfMemoryError:
        result = {"oom": True}
    return result


def make_data(work: Path):
    """A 640x480 two-camera dataset from the demo generator, through a frame cache at 224x224."""
    from vla_pipeline.data.contract import load_contract
    from vla_pipeline.data.demo import DemoConfig, make_demo_dataset
    from vla_pipeline.data.factory import make_episode_dataset
    from vla_pipeline.data.frame_cache import FrameCacheConfig, load_frame_cache, save_frame_cache
    from vla_pipeline.provenance import compute_dataset_fingerprint

    contract_path = REPO / "contracts" / "lekiwi_arm.yaml"
    root = make_demo_dataset(DemoConfig(root=work / "data", num_episodes=6, min_length=40, max_length=60,
                                        image_height=480, image_width=640))
    cache = save_frame_cache(FrameCacheConfig(root, contract_path, work / "cache", resolution=(224, 224)))
    loaded = load_frame_cache(cache, compute_dataset_fingerprint(root), (224, 224))
    contract = load_contract(contract_path)
    return make_episode_dataset(root, contract, list(range(6)), CHUNK, loaded)


def release(device: str) -> None:
    """Free the last side's model and optimizer before the next one is built."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def find_max_batch(args, checkpointing: bool, tokenizer: Path) -> int:
    best = 0
    for batch_size in (8, 16, 24, 32, 48, 64, 96, 128, 192, 256):
        args_one = argparse.Namespace(**{**vars(args), "warmup": 1, "steps": 1})
        oom = run_side("ours", args_one, batch_size, checkpointing, tokenizer).get("oom")
        release(args.device)
        if oom:
            print(describe_oom_at(args, batch_size, checkpointing), flush=True)
            break
        best = batch_size
    return best


def describe_oom_at(args, batch_size: int, checkpointing: bool) -> str:
    """The message the train stage stops with when this batch runs out of memory."""
    from vla_pipeline.train.perf import describe_oom

    cfg = types.SimpleNamespace(batch_size=batch_size)
    runtime = types.SimpleNamespace(precision=args.precision, gradient_checkpointing=checkpointing)
    return f"the train stage's message at batch {batch_size}: {describe_oom(cfg, runtime, 1)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="PI05Config.dtype (parameters); the step runs under bf16 autocast either way")
    parser.add_argument("--precision", choices=["bf16", "fp16", "no"], default="bf16")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--checkpointing", choices=["on", "off", "both"], default="both")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile (slow warm-up)")
    parser.add_argument("--max-batch", action="store_true", help="search the largest batch that fits (ours)")
    parser.add_argument("--with-data", action="store_true",
                        help="also time ours with the data path (640x480 demo dataset, frame cache, preprocessing)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--sides", nargs="+", choices=["lerobot", "ours", "ours+compile", "ours+data"],
                        help="which sides to time (default: lerobot, ours, and those the flags above add)")
    parser.add_argument("--memory-gib", type=float, help="cap the GPU memory this process may use (e.g. 80)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU: this benchmark needs CUDA or ROCm (or --device cpu --size tiny for a smoke run)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{args.size} Pi0.5 on {name}, torch {torch.__version__}, params {args.dtype}, autocast {args.precision}")
    sides = args.sides or (["lerobot", "ours"] + (["ours+compile"] if args.compile else [])
                           + (["ours+data"] if args.with_data else []))
    if args.memory_gib and args.device == "cuda":  # act as a smaller card: the allocator refuses beyond this
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * 2**30 / total))
        print(f"memory capped at {args.memory_gib} GiB of {total / 2**30:.0f}")
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.checkpointing]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab = 512 if args.size == "tiny" else 257152
        tokenizer = make_local_tokenizer(Path(tmp) / "tokenizer", vocab_size=vocab)
        if args.with_data or "ours+data" in sides:
            args.data = make_data(Path(tmp))
        for batch_size in args.batch_sizes:
            for checkpointing in settings:
                row = {"batch": batch_size, "checkpointing": checkpointing}
                for side in sides:
                    row[side] = run_side(side, args, batch_size, checkpointing, tokenizer)
                    release(args.device)
                results.append(row)
                print(format_row(row, sides), flush=True)
        if args.max_batch:
            for checkpointing in settings:
                print(f"largest batch that fits (ours, checkpointing {'on' if checkpointing else 'off'}): "
                      f"{find_max_batch(args, checkpointing, tokenizer)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def format_row(row: dict, sides: list[str]) -> str:
    parts = [f"batch {row['batch']:>3}, checkpointing {'on ' if row['checkpointing'] else 'off'}:"]
    base = row.get("lerobot", {}).get("samples_per_s")
    for side in sides:
        r = row[side]
        if r.get("oom"):
            parts.append(f"{side} OOM")
            continue
        speedup = f" x{r['samples_per_s'] / base:.2f}" if base else ""
        parts.append(f"{side} {r['s_per_step']:.3f} s/step {r['samples_per_s']:.1f} samples/s{speedup} "
                     f"{r['peak_gib']:.1f} GiB MFU {r['mfu']:.1%} (prompt {r['prompt_tokens']}, "
                     f"warm-up {r['warmup_s']:.0f} s)")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
