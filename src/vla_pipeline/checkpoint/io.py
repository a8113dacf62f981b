"""Checkpoints in LeRobot's ``pretrained_model`` layout, plus what makes them self-describing:
the tiny model's dims, the tokenizer, the contract, the frozen stats and the resolved config."""


from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lerobot.configs.policies import PreTrainedConfig
from lerobot.processor import PolicyProcessorPipeline
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import (
    POLICY_POSTPROCESSOR_DEFAULT_NAME,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)
from safetensors.torch import load_file

from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINT_SPLIT_FILE,
    CHECKPOINT_STATS_FILE,
    CONTRACT_FILE,
    LAST_FILE,
    PRETRAINED_DIR,
    RUN_STATE_FILE,
    TOKENIZER_DIR,
    TRAIN_CONFIG_FILE,
    TRAINING_STATE_DIR,
    VERSIONS_FILE,
    find_last,
    read_run_state,
)
from vla_pipeline.checkpoint.manifest import (
    compute_files_id,
    require_verified,
    verify_checkpoint,  # noqa: F401  (io's API: tests and callers import it from here)
    write_manifest,  # noqa: F401
)
from vla_pipeline.checkpoint.processor_steps import install_processor_guard
from vla_pipeline.errors import CheckpointError, read_json_artifact
from vla_pipeline.model.dims import load_dims, save_dims
from vla_pipeline.model.setup import PolicySetup, make_policy
from vla_pipeline.phases import timed
from vla_pipeline.provenance import collect_versions


@dataclass
class LoadedCheckpoint:
    policy: object
    preprocessor: PolicyProcessorPipeline
    postprocessor: PolicyProcessorPipeline
    directory: Path
    train_config: dict
    norm_stats: dict
    split: dict | None  # train/val episodes (None: a checkpoint from before splits were saved)
    files: dict | None = None  # the manifest entries of ``directory`` as loading verified them (the checkpoint id)


def save_pretrained_model(
    directory: Path, policy, preprocessor, postprocessor, *, dims, tokenizer: str, contract_path: Path,
    norm_stats: dict, split: dict, train_config: dict, provenance: dict, weights: dict | None = None,
) -> Path:
    """Write ``directory/pretrained_model``: LeRobot's layout plus what makes it self-describing.
    ``directory`` is a checkpoint being assembled (the checkpointer renames it into place when complete).
    ``weights``: the state dict to write instead of the policy's own (LoRA merged into the base weights),
    as LeRobot's ``save_pretrained`` writes it (tied tensors stored once)."""
    out = Path(directory) / PRETRAINED_DIR
    if weights is None:
        policy.save_pretrained(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        policy.config._save_pretrained(out)
        save_state_dict(weights, out / "model.safetensors")
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)
    save_dims(out, dims)
    if Path(tokenizer).is_dir():
        shutil.copytree(tokenizer, out / TOKENIZER_DIR)
    shutil.copyfile(contract_path, out / CONTRACT_FILE)
    (out / CHECKPOINT_STATS_FILE).write_text(json.dumps(norm_stats, indent=2))
    (out / CHECKPOINT_SPLIT_FILE).write_text(json.dumps(split, indent=2))
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(train_config, indent=2, default=str))
    (out / VERSIONS_FILE).write_text(json.dumps({**collect_versions(), **provenance}, indent=2))
    return out


def save_state_dict(state: dict, path: Path) -> None:
    """What ``safetensors.torch.save_model`` does for a module, for a state dict: shared tensors once."""
    from safetensors.torch import _remove_duplicate_names, save_file

    state = dict(state)
    for removed in _remove_duplicate_names(state).values():
        for name in removed:
            del state[name]
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def load_state_strict(policy, state: dict, source: Path | str) -> dict[str, int]:
    """Load ``state`` into ``policy``; hard-fail on any missing, unexpected or mis-shaped tensor
    (LeRobot 0.4.2's ``from_pretrained`` prints and returns random weights instead)."""
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{source}: tensors do not fit the model ({str(e).splitlines()[-1].strip()}); "
                              f"the checkpoint was made for another model size or action dimension") from e
    params = policy.state_dict(keep_vars=True)
    missing = [k for k in missing if not _is_tied_to_loaded(params, k, state)]
    counts = {"loaded": len(state) - len(unexpected), "missing": len(missing), "unexpected": len(unexpected)}
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: {counts['loaded']} tensors loaded, {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); the checkpoint does not match the model"
        )
    return counts


def load_policy_weights(policy, directory: Path) -> dict[str, int]:
    """Strict load of a checkpoint's ``model.safetensors``."""
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint has no weights")
    return load_state_strict(policy, load_file(str(path)), path)


def _is_tied_to_loaded(params: dict, key: str, loaded: dict) -> bool:
    """safetensors stores a tied weight once (PaliGemma's embed_tokens is its lm_head)."""
    ptr = params[key].data_ptr()
    return any(k in loaded and params[k].data_ptr() == ptr for k in params if k != key)


def _pipeline(directory: Path, name: str, overrides: dict, **kwargs) -> PolicyProcessorPipeline:
    install_processor_guard()  # LeRobot builds no step the allow-list does not name, whatever the file says now
    return PolicyProcessorPipeline.from_pretrained(
        str(directory), config_filename=f"{name}.json", overrides=overrides, **kwargs
    )


def load_checkpoint(directory: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Policy and its own saved processors from a checkpoint (``.../pretrained_model`` or its parent)."""
    directory = Path(directory)
    if (directory / PRETRAINED_DIR).is_symlink():
        raise CheckpointError(f"{directory / PRETRAINED_DIR} is a symbolic link: a checkpoint holds regular files only; "
                              f"load the directory it points to, or copy the checkpoint without links (`cp -rL`)")
    if (directory / PRETRAINED_DIR).is_dir():
        directory = directory / PRETRAINED_DIR
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory} is not a pretrained_model directory (no config.json)")
    files = require_verified(directory, "load this checkpoint")
    with timed("loading", f"checkpoint {directory} (the model built, its weights read)"):
        config = PreTrainedConfig.from_pretrained(str(directory))
        config.device = device
        setup = PolicySetup(dims=load_dims(directory), dtype=config.dtype)  # inference: no LoRA, freeze or EMA
        policy = make_policy(setup, config, load_weights=lambda p: load_policy_weights(p, directory)).policy
    policy.eval()
    overrides = {"device_processor": {"device": device}}
    if (directory / TOKENIZER_DIR).is_dir():
        overrides["tokenizer_processor"] = {"tokenizer_name": str(directory / TOKENIZER_DIR)}
    pre = _pipeline(directory, POLICY_PREPROCESSOR_DEFAULT_NAME, overrides)
    post = _pipeline(
        directory, POLICY_POSTPROCESSOR_DEFAULT_NAME, {},
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action,
    )
    return LoadedCheckpoint(
        policy=policy, preprocessor=pre, postprocessor=post, directory=directory,
        train_config=read_json_artifact(directory / TRAIN_CONFIG_FILE, "train"),
        norm_stats=read_json_artifact(directory / CHECKPOINT_STATS_FILE, "train", ("features",)),
        split=read_json_artifact(directory / CHECKPOINT_SPLIT_FILE, "train", ("train", "val"))
        if (directory / CHECKPOINT_SPLIT_FILE).is_file() else None,
        files=files,
    )


def resolve_checkpoint(path: Path, pick: str = "last") -> Path:
    """A checkpoint path as given to `vla evaluate`: a train run dir (its ``last``/``best``
    checkpoint), a step dir of ``checkpoints/`` or a ``pretrained_model`` dir."""
    path = Path(path)
    if (path / LAST_FILE).is_file():
        return find_last(path, BEST_FILE if pick == "best" else LAST_FILE)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; pass a train run dir (e.g. artifacts/train), one of "
                              f"its checkpoints/<step> dirs or a pretrained_model dir")
    return path


def read_checkpoint_state(ckpt: LoadedCheckpoint | Path) -> dict:
    """The step and run key of a checkpoint the train stage wrote ({} for a bare pretrained_model)."""
    step_dir = pretrained_dir_of(ckpt).parent
    return read_run_state(step_dir) if (step_dir / TRAINING_STATE_DIR / RUN_STATE_FILE).is_file() else {}


def pretrained_dir_of(ckpt: LoadedCheckpoint | Path) -> Path:
    if isinstance(ckpt, LoadedCheckpoint):
        return ckpt.directory
    return Path(ckpt) / PRETRAINED_DIR if (Path(ckpt) / PRETRAINED_DIR).is_dir() else Path(ckpt)


def compute_checkpoint_id(checkpoint: LoadedCheckpoint | Path) -> str:
    """The checkpoint id: sha256 over ``<sha256>  <path>`` of every file of its ``pretrained_model``
    (weights, config, processors, tokenizer, contract, stats; sorted by path), from the hashes that
    verification computed of the files themselves (those ``load_checkpoint`` checked, or verified now): the
    same id means the same policy files, any changed byte another id. A checkpoint that does not verify
    has none (CheckpointError)."""
    if isinstance(checkpoint, LoadedCheckpoint) and checkpoint.files is not None:
        return compute_files_id(checkpoint.files)
    return compute_files_id(require_verified(pretrained_dir_of(checkpoint), "identify this checkpoint"))
