"""Resuming a run. Beside each checkpoint's ``pretrained_model`` sits LeRobot's ``training_state``
(step, optimizer, scheduler, RNG of python/numpy/torch/CUDA) plus every other process's RNG and
``run_state.json`` (run key, sampler position, best validation loss so far).

A run is identified by its *run key*: the resolved config (minus bookkeeping such as intervals,
directories and W&B settings), the frozen stats, the code and the package versions. ``resume:
auto`` continues only a run with the same key; anything else starts a new run."""


from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lerobot.datasets.utils import flatten_dict, unflatten_dict
from lerobot.processor import NormalizerProcessorStep
from lerobot.utils.random_utils import deserialize_rng_state, load_rng_state, serialize_rng_state
from lerobot.utils.train_utils import load_training_state, save_training_state
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import load_policy_weights
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    LAST_FILE,
    PRETRAINED_DIR,
    RAW_WEIGHTS_FILE,
    RUN_STATE_FILE,
    SET_ASIDE_DIR,
    TRAINING_STATE_DIR,
    list_checkpoints,
    read_pointer,
    read_run_state,
    write_pointer,
)
from vla_pipeline.checkpoint.manifest import verify_checkpoint
from vla_pipeline.errors import CheckpointError, TrainInputError, warn_loudly
from vla_pipeline.norms import make_processor_stats
from vla_pipeline.phases import timed

RESUME_MODES = ("auto", "never")


def save_state(step_dir: Path, step: int, optimizer, scheduler, run_state: dict, rank: int) -> None:
    """This process's part of the training state (process 0 writes LeRobot's files and run_state)."""
    state_dir = Path(step_dir) / TRAINING_STATE_DIR
    if rank == 0:
        save_training_state(Path(step_dir), step, optimizer, scheduler)
        (state_dir / RUN_STATE_FILE).write_text(json.dumps(run_state, indent=2))
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        save_file(flatten_dict(serialize_rng_state()), state_dir / f"rng_state_rank{rank}.safetensors")


def restore_rng(step_dir: Path, rank: int) -> None:
    """Put this process's RNG streams back where they were when ``step_dir`` was saved."""
    state_dir = Path(step_dir) / TRAINING_STATE_DIR
    if rank == 0:
        load_rng_state(state_dir)
    else:
        deserialize_rng_state(unflatten_dict(load_file(state_dir / f"rng_state_rank{rank}.safetensors")))


def save_trainable_tensors(step_dir: Path, file: str, tensors: dict, metadata: dict | None = None) -> None:
    """One tensor per trainable parameter (by name) into ``training_state/<file>``."""
    state_dir = Path(step_dir) / TRAINING_STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, state_dir / file, metadata=metadata)


def load_trainable_tensors(step_dir: Path, file: str, names: list[str]) -> dict:
    """``save_trainable_tensors``' file, refused unless it holds exactly ``names``."""
    path = Path(step_dir) / TRAINING_STATE_DIR / file
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no {file}: it was saved with other train.ema / train.peft "
                              f"settings; resume with the same ones, or start over (train.resume: never)")
    tensors = load_file(path)
    if set(tensors) != set(names):
        differ = sorted(set(tensors) ^ set(names))
        raise CheckpointError(f"{path} holds other parameters than this run trains ({len(differ)} differ, e.g. "
                              f"{differ[:2]}): train.freeze or train.peft changed")
    return tensors


def save_raw_weights(step_dir: Path, policy) -> None:
    """The trainable weights as training has them, when ``pretrained_model`` holds others (the EMA
    applied, or the LoRA adapters merged)."""
    save_trainable_tensors(step_dir, RAW_WEIGHTS_FILE,
                           {n: p for n, p in policy.named_parameters() if p.requires_grad})


def load_raw_weights(step_dir: Path, policy) -> None:
    """Put ``save_raw_weights``' tensors back: exactly the parameters that train, no other."""
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    raw = load_trainable_tensors(step_dir, RAW_WEIGHTS_FILE, list(params))
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(raw[name])


def load_state(step_dir: Path, policy, optimizer, scheduler, rank: int, *, raw: bool = False,
               wrapped: bool = False) -> tuple[int, dict]:
    """Weights, optimizer, scheduler and RNG from ``step_dir``; returns (step, run_state). ``raw``: the
    trainable weights come from ``training_state`` (EMA or LoRA runs); ``wrapped``: the policy has
    LoRA adapters, so its frozen base stays as built (``pretrained_model`` holds merged weights)."""
    try:
        with timed("loading", f"training state of {step_dir}"):
            return _load_state(step_dir, policy, optimizer, scheduler, rank, raw=raw, wrapped=wrapped)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file makes the checkpoint unusable
        raise CheckpointError(f"{step_dir}: cannot load the training state ({type(e).__name__}: {e})") from e


def _load_state(step_dir: Path, policy, optimizer, scheduler, rank: int, *, raw: bool, wrapped: bool
                ) -> tuple[int, dict]:
    if not wrapped:
        load_policy_weights(policy, Path(step_dir) / PRETRAINED_DIR)
    if raw:
        load_raw_weights(step_dir, policy)
    step, _, _ = load_training_state(Path(step_dir), optimizer, scheduler)
    restore_rng(step_dir, rank)
    return step, read_run_state(step_dir)


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path | None  # None: start a new run
    discard: list[Path]  # step directories (and leftovers) the new or resumed run does not use: set aside


def plan_resume(run_dir: Path, run_key: str, mode: str) -> ResumePlan:
    """Which checkpoint to continue from: the newest complete one of this run. Incomplete or corrupt
    ones are reported and set aside; so are checkpoints of another run (other config, data, code), with
    how to start from their weights. Nothing is deleted (:func:`set_aside`)."""
    run_dir = Path(run_dir)
    leftovers = [p for p in (run_dir / CHECKPOINTS_DIR).glob("*.tmp")] if (run_dir / CHECKPOINTS_DIR).is_dir() else []
    steps = list_checkpoints(run_dir)
    if mode == "never" or not steps:
        if steps:
            print(f"train.resume=never: starting a new run; the {len(steps)} checkpoint(s) in {run_dir} are set aside")
        return ResumePlan(None, leftovers + steps)
    newer: list[Path] = []
    for i, step_dir in enumerate(steps):
        problem = verify_checkpoint(step_dir)
        if problem is None:
            key = read_run_state(step_dir).get("run_key")
            if key == run_key:
                return ResumePlan(step_dir, leftovers + newer)
            print(f"{run_dir} holds checkpoints of another run (config, data, code or versions differ); starting a "
                  f"new run, they are set aside. To go on from that run's weights (more steps, another lr), set "
                  f"policy.pretrained: {set_aside_path(run_dir, step_dir) / PRETRAINED_DIR}")
            return ResumePlan(None, leftovers + steps)
        then = "falling back to the previous one" if i + 1 < len(steps) else "no usable checkpoint is left: a new run starts"
        warn_loudly(f"checkpoint {step_dir} is unusable: {problem}; it is set aside; {then}")
        newer.append(step_dir)
    return ResumePlan(None, leftovers + steps)


def set_aside_path(run_dir: Path, path: Path) -> Path:
    """Where :func:`set_aside` moves ``path``: ``<run>/set_aside/<this run's start>/<name>``."""
    return Path(run_dir) / SET_ASIDE_DIR / _SET_ASIDE_STAMP / Path(path).name


_SET_ASIDE_STAMP = time.strftime("%Y%m%d-%H%M%S")  # one folder per process: what one start set aside


def set_aside(run_dir: Path, paths: list[Path]) -> list[Path]:
    """Move ``paths`` (checkpoints the run does not use, saves a kill left unfinished) out of the run's
    checkpoints into ``<run>/set_aside/``, each with a line saying where; never delete them. The run's
    pointers go with its last checkpoint. Returns the new locations."""
    moved = []
    for path in (Path(p) for p in paths):
        if not path.exists():
            continue
        dest = set_aside_path(run_dir, path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest = dest.with_name(f"{dest.name}.{len(list(dest.parent.glob(dest.name + '*')))}")
        shutil.move(str(path), str(dest))
        print(f"set aside {path} -> {dest} (kept; delete it yourself once it is not needed)")
        moved.append(dest)
    if not list_checkpoints(run_dir):
        for name in (LAST_FILE, BEST_FILE):
            (Path(run_dir) / name).unlink(missing_ok=True)
    return moved


def repair_pointers(run_dir: Path, step_dir: Path, run_state: dict) -> None:
    """The run resumes from ``step_dir``: its last pointer names it, and its best pointer the best of its
    run state (checkpoints moved into a run directory arrive without pointers; a kill can leave the
    pointer of a checkpoint that was then found unusable)."""
    run_dir, step_dir = Path(run_dir), Path(step_dir)
    last = read_pointer(run_dir, LAST_FILE)
    rel = str(step_dir.relative_to(run_dir))
    if last is None or last.get("path") != rel:
        write_pointer(run_dir, LAST_FILE, step_dir, step=run_state["step"], val_loss=None)
    best = run_state.get("best")
    best_dir = run_dir / CHECKPOINTS_DIR / f"{best['step']:06d}" if best else None
    if best_dir is not None and best_dir.is_dir() and read_pointer(run_dir, BEST_FILE) != {
            "path": str(best_dir.relative_to(run_dir)), **best}:
        write_pointer(run_dir, BEST_FILE, best_dir, **best)


def check_resumed_stats(step_dir: Path, preprocessor, stats_doc: dict) -> None:
    """After a resume, the stats the checkpoint's saved (un)normalizer steps hold, and those of the live
    preprocessor, must equal the frozen stats exactly."""
    frozen = {f"{feature}.{k}": v for feature, stats in make_processor_stats(stats_doc).items() for k, v in stats.items()}
    sources = {str(f): load_file(f) for f in sorted((Path(step_dir) / PRETRAINED_DIR).glob("*normalizer_processor.safetensors"))}
    live = next(step for step in preprocessor.steps if isinstance(step, NormalizerProcessorStep))
    sources["live preprocessor"] = {f"{feature}.{k}": torch.as_tensor(v).cpu().float() for feature, stats in live.stats.items()
                                  for k, v in stats.items()}
    for name, stats in sources.items():
        if stats.keys() != frozen.keys() or not all(torch.equal(stats[k], frozen[k]) for k in frozen):
            raise TrainInputError(f"after resuming from {step_dir}: the stats of {name} differ from the frozen stats; "
                                  f"run with train.resume=never, or restore the norms stage's output")
