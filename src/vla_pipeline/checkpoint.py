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
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME
from safetensors.torch import load_file

from vla_pipeline.errors import CheckpointError
from vla_pipeline.model import load_dims, make_pi05_policy, save_dims

PRETRAINED_DIR = "pretrained_model"
TOKENIZER_DIR = "tokenizer"
CONTRACT_FILE = "contract.yaml"
STATS_FILE = "norm_stats.json"
TRAIN_CONFIG_FILE = "train_config.json"
LAST_FILE = "last_checkpoint.txt"
VERSIONS_FILE = "versions.json"


def collect_versions() -> dict[str, str | None]:
    """Package versions a checkpoint was trained with (fixed by the lock file, so reproducible)."""
    import platform

    import lerobot
    import torch
    import transformers

    from vla_pipeline import __version__

    return {"vla_pipeline": __version__, "lerobot": lerobot.__version__, "transformers": transformers.__version__,
            "torch": str(torch.__version__), "cuda": torch.version.cuda, "hip": torch.version.hip,
            "python": platform.python_version()}


@dataclass
class LoadedCheckpoint:
    policy: object
    preprocessor: PolicyProcessorPipeline
    postprocessor: PolicyProcessorPipeline
    directory: Path
    train_config: dict
    norm_stats: dict


def save_checkpoint(
    directory: Path, policy, preprocessor, postprocessor, *, dims, tokenizer: str, contract_path: Path,
    norm_stats: dict, train_config: dict,
) -> Path:
    """Write ``directory/pretrained_model`` atomically (a temporary directory, then a rename)."""
    final = Path(directory) / PRETRAINED_DIR
    tmp = final.with_name(PRETRAINED_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp)
    preprocessor.save_pretrained(tmp)
    postprocessor.save_pretrained(tmp)
    save_dims(tmp, dims)
    if Path(tokenizer).is_dir():
        shutil.copytree(tokenizer, tmp / TOKENIZER_DIR)
    shutil.copyfile(contract_path, tmp / CONTRACT_FILE)
    (tmp / STATS_FILE).write_text(json.dumps(norm_stats, indent=2))
    (tmp / TRAIN_CONFIG_FILE).write_text(json.dumps(train_config, indent=2, default=str))
    (tmp / VERSIONS_FILE).write_text(json.dumps(collect_versions(), indent=2))
    if final.exists():  # replace without a moment where no complete checkpoint exists
        old = final.with_name(PRETRAINED_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


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
    return PolicyProcessorPipeline.from_pretrained(
        str(directory), config_filename=f"{name}.json", overrides=overrides, **kwargs
    )


def load_checkpoint(directory: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Policy and its own saved processors from a checkpoint (``.../pretrained_model`` or its parent)."""
    directory = Path(directory)
    if (directory / PRETRAINED_DIR).is_dir():
        directory = directory / PRETRAINED_DIR
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory} is not a pretrained_model directory (no config.json)")
    config = PreTrainedConfig.from_pretrained(str(directory))
    config.device = device
    policy = make_pi05_policy(config, load_dims(directory))
    load_policy_weights(policy, directory)
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
        train_config=json.loads((directory / TRAIN_CONFIG_FILE).read_text()),
        norm_stats=json.loads((directory / STATS_FILE).read_text()),
    )


def write_last(run_dir: Path, checkpoint_dir: Path) -> None:
    (Path(run_dir) / LAST_FILE).write_text(str(Path(checkpoint_dir).relative_to(run_dir)) + "\n")


def find_last(run_dir: Path) -> Path:
    path = Path(run_dir) / LAST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: no finished checkpoint in {run_dir}; run the train stage first")
    return Path(run_dir) / path.read_text().strip()
