"""A checkpoint's processors are data, not code. LeRobot 0.4.2 builds each step of a pipeline config
(``policy_preprocessor.json``, ``policy_postprocessor.json``) from its ``registry_name`` (a class LeRobot
registered) or from its ``class``: any dotted path, imported and called with the step's ``config``
(``{"class": "subprocess.Popen", "config": {"args": [...]}}`` runs a command). Here a pipeline config is
read (its size bounded first) and refused unless every step is one of the registry steps our checkpoints
use, before LeRobot sees it: nothing is imported, nothing is called."""


from __future__ import annotations

import json
from pathlib import Path

from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from vla_pipeline.checkpoint.layout import read_small_file
from vla_pipeline.errors import CheckpointError

#: the LeRobot registry names of the steps LeRobot's Pi0.5 pre/post processors consist of (model/processors.py)
ALLOWED_PROCESSOR_STEPS = (
    "device_processor", "normalizer_processor", "pi05_prepare_state_tokenizer_processor_step",
    "rename_observations_processor", "to_batch_processor", "tokenizer_processor", "unnormalizer_processor",
)
PROCESSOR_CONFIG_FILES = (f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json", f"{POLICY_POSTPROCESSOR_DEFAULT_NAME}.json")
MAX_PROCESSOR_CONFIG_BYTES = 1 << 20  # ours are a few KiB
STEP_KEYS = ("registry_name", "config", "state_file")


def read_processor_config(path: Path) -> dict:
    """The pipeline config at ``path``, checked (:func:`check_processor_config`; its state files must lie
    beside it)."""
    path = Path(path)
    data = read_small_file(path, MAX_PROCESSOR_CONFIG_BYTES)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path} is not valid JSON") from None
    check_processor_config(doc, str(path), path.parent)
    return doc


def check_processor_config(doc, source: str, directory: Path | None) -> None:
    """Refuse a pipeline config unless it is ``{"steps": [...]}`` of allow-listed registry steps, each with
    an object as its config and, if any, a state file by its bare name (present in ``directory`` when given)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise CheckpointError(f"{source} is not a processor pipeline (an object with a list of 'steps')")
    for index, step in enumerate(doc["steps"]):
        problem = _step_problem(step, directory)
        if problem is not None:
            raise CheckpointError(
                f"{source}: step {index} {problem}. A checkpoint's processor steps are LeRobot registry steps, "
                f"by 'registry_name', one of: {', '.join(ALLOWED_PROCESSOR_STEPS)}; nothing was imported"
            )


def _step_problem(step, directory: Path | None) -> str | None:
    if not isinstance(step, dict):
        return f"is a JSON {type(step).__name__}, not an object"
    if "class" in step:
        return (f"names a class to import, {_short(step['class'])}: refused (LeRobot would import it and call it "
                f"with the step's config)")
    name = step.get("registry_name")
    if name not in ALLOWED_PROCESSOR_STEPS:
        return "has no 'registry_name'" if name is None else f"is {_short(name)}, not an allowed step"
    unknown = sorted(str(k) for k in step if k not in STEP_KEYS)
    if unknown:
        return f"({name}) has keys LeRobot does not read: {_short(unknown)}"
    if not isinstance(step.get("config", {}), dict):
        return f"({name}) has a config that is not an object"
    if "state_file" in step:
        return _state_file_problem(name, step["state_file"], directory)
    return None


def _state_file_problem(name: str, state_file, directory: Path | None) -> str | None:
    if not isinstance(state_file, str) or state_file in ("", ".", "..") or any(c in state_file for c in "/\\\0"):
        return f"({name}) has a state_file that is not a file name: {_short(state_file)}"
    if directory is not None and (not (directory / state_file).is_file() or (directory / state_file).is_symlink()):
        return f"({name}) has its state_file {state_file} missing from {directory}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def install_processor_guard() -> None:
    """Every pipeline this process loads with LeRobot's ``DataProcessorPipeline.from_pretrained`` goes
    through :func:`read_processor_config` (a local directory or file) or, for a hub repository, through
    :func:`check_processor_config` once LeRobot has downloaded it, before a step is built. Idempotent."""
    from lerobot.processor.pipeline import DataProcessorPipeline

    if getattr(DataProcessorPipeline._load_config, "vla_checked", False):
        return
    original = DataProcessorPipeline._load_config.__func__

    def _load_config(cls, model_id: str, config_filename: str, hub_download_kwargs: dict) -> tuple[dict, Path]:
        path = Path(model_id)
        if path.is_dir() or path.is_file():
            file = path / config_filename if path.is_dir() else path
            return read_processor_config(file), file.parent
        config, base_path = original(cls, model_id, config_filename, hub_download_kwargs)
        check_processor_config(config, f"{model_id}: {config_filename}", None)
        return config, base_path

    _load_config.vla_checked = True
    DataProcessorPipeline._load_config = classmethod(_load_config)
