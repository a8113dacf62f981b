"""Resuming a run. Beside each checkpoint's ``pretrained_model`` sits LeRobot's ``training_state``
(step, optimizer, scheduler, RNG of python/numpy/torch/CUDA) plus every other process's RNG and
``run_state.json`` (run key, sampler position, best validation loss so far). ``save_train_state`` writes
a ``Trainer.state_dict()`` there and ``read_train_state`` reads it back for ``Trainer.load_state_dict``.

A run is identified by its *run key*: the resolved config (minus bookkeeping such as intervals,
directories and W&B settings), the frozen stats, the code and the package versions. ``resume:
auto`` continues only a run with the same key; anything else starts a new run."""


from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lerobot.datasets.utils import flatten_dict, unflatten_dict
from lerobot.optim.optimizers import load_optimizer_state, save_optimizer_state
from lerobot.optim.schedulers import load_scheduler_state, save_scheduler_state
from lerobot.processor import NormalizerProcessorStep
from lerobot.utils.constants import RNG_STATE
from lerobot.utils.train_utils import load_training_step, save_training_step
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import load_state_strict
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    EMA_FILE,
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

log = logging.getLogger(__name__)


class _StateHolder:
    """A state dict behind ``state_dict``/``load_state_dict``: LeRobot's optimizer and scheduler
    (de)serializers take objects, this lets them write a training state's dicts and read into them,
    so the files stay LeRobot's own."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return dict(self.state)  # LeRobot pops param_groups from what it gets

    def load_state_dict(self, state: dict) -> None:
        self.state = state


def save_train_state(step_dir: Path, state: dict, run_state: dict, rank: int, *, raw: bool = False) -> None:
    """This process's part of a training state (``Trainer.state_dict()``) in ``training_state/``.
    Process 0 writes LeRobot's files (step, RNG, optimizer, scheduler), ``run_state.json``, the EMA when
    the state holds one and, when ``raw`` (``pretrained_model`` holds other weights: EMA or LoRA), the
    trainable weights; every other process its own RNG."""
    state_dir = Path(step_dir) / TRAINING_STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    if rank != 0:
        save_file(flatten_dict(state["rng"]), state_dir / f"rng_state_rank{rank}.safetensors")
        return
    if raw:
        save_trainable_tensors(step_dir, RAW_WEIGHTS_FILE, state["weights"])
    if state.get("ema") is not None:
        save_trainable_tensors(step_dir, EMA_FILE, state["ema"]["shadow"], metadata={"decay": repr(state["ema"]["decay"])})
    save_training_step(state["step"], state_dir)
    save_file(flatten_dict(state["rng"]), state_dir / RNG_STATE)
    save_optimizer_state(_StateHolder(state["optimizer"]), state_dir)
    save_scheduler_state(_StateHolder(state["scheduler"]), state_dir)
    (state_dir / RUN_STATE_FILE).write_text(json.dumps(run_state, indent=2))


def read_rng(step_dir: Path, rank: int) -> dict:
    """This process's RNG streams as ``step_dir`` saved them (``serialize_rng_state``'s form)."""
    state_dir = Path(step_dir) / TRAINING_STATE_DIR
    name = RNG_STATE if rank == 0 else f"rng_state_rank{rank}.safetensors"
    return unflatten_dict(load_file(state_dir / name))


def read_train_state(step_dir: Path, template: dict, rank: int, *, raw: bool = False, wrapped: bool = False) -> dict:
    """The training state ``save_train_state`` (and ``pretrained_model``) left in ``step_dir``, shaped as
    ``template`` (the live ``Trainer.state_dict()``: its optimizer's param groups, scheduler, EMA and
    trainable names). ``model``: every weight of ``pretrained_model`` (not for a LoRA-``wrapped`` policy:
    it holds merged weights); ``weights``: the trainable ones as training had them (``raw``: EMA or LoRA
    runs, whose ``pretrained_model`` holds others; else None, ``model`` has them). Any unreadable file
    is a ``CheckpointError``."""
    try:
        with timed("loading", f"training state of {step_dir}"):
            return _read_train_state(Path(step_dir), template, rank, raw=raw, wrapped=wrapped)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file makes the checkpoint unusable
        raise CheckpointError(f"{step_dir}: cannot load the training state ({type(e).__name__}: {e})") from e


def _read_train_state(step_dir: Path, template: dict, rank: int, *, raw: bool, wrapped: bool) -> dict:
    state_dir = step_dir / TRAINING_STATE_DIR
    if not state_dir.is_dir():
        raise NotADirectoryError(state_dir)
    weights = step_dir / PRETRAINED_DIR / "model.safetensors"
    if not wrapped and not weights.is_file():
        raise CheckpointError(f"{weights} not found: the checkpoint has no weights")
    optimizer, scheduler = _StateHolder(template["optimizer"]), _StateHolder(template["scheduler"])
    load_optimizer_state(optimizer, state_dir)
    load_scheduler_state(scheduler, state_dir)
    run_state = read_run_state(step_dir)
    ema = template.get("ema")
    return {
        "step": load_training_step(state_dir), "best": run_state.get("best"),
        "optimizer": optimizer.state, "scheduler": scheduler.state, "rng": read_rng(step_dir, rank),
        "model": None if wrapped else load_file(weights), "model_source": str(weights),
        "weights": load_trainable_tensors(step_dir, RAW_WEIGHTS_FILE, list(template["weights"])) if raw else None,
        "ema": None if ema is None else {**ema, "shadow": load_trainable_tensors(step_dir, EMA_FILE, list(ema["shadow"]))},
    }


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


def trainable_weights(policy) -> dict:
    """The trainable parameters by name (references, as ``state_dict`` gives them)."""
    return {n: p.detach() for n, p in policy.named_parameters() if p.requires_grad}


def load_weights(policy, state: dict) -> None:
    """A training state's weights into ``policy``: every weight of ``pretrained_model`` strictly (``model``,
    when read from a checkpoint), then the trainable ones as training had them (``weights``: exactly the
    parameters that train, no other)."""
    if state.get("model") is not None:
        load_state_strict(policy, state["model"], state.get("model_source", "training state"))
    if state.get("weights") is None:
        return
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    if set(params) != set(state["weights"]):
        differ = sorted(set(params) ^ set(state["weights"]))
        raise CheckpointError(f"the training state holds other parameters than this run trains ({len(differ)} differ, "
                              f"e.g. {differ[:2]}): train.freeze or train.peft changed")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state["weights"][name])


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
            log.info("train.resume=never: starting a new run; the %d checkpoint(s) in %s are set aside", len(steps), run_dir)
        return ResumePlan(None, leftovers + steps)
    newer: list[Path] = []
    for i, step_dir in enumerate(steps):
        problem = verify_checkpoint(step_dir)
        if problem is None:
            key = read_run_state(step_dir).get("run_key")
            if key == run_key:
                return ResumePlan(step_dir, leftovers + newer)
            log.info("%s holds checkpoints of another run (config, data, code or versions differ); starting a new "
                     "run, they are set aside. To go on from that run's weights (more steps, another lr), set "
                     "policy.pretrained: %s", run_dir, set_aside_path(run_dir, step_dir) / PRETRAINED_DIR)
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
        log.info("set aside %s -> %s (kept; delete it yourself once it is not needed)", path, dest)
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
