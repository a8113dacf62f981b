"""One source of defaults: params.yaml as shipped is the schema's defaults (params/models.py), and every
config dataclass of the library that has a default for a params key has that one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from vla_pipeline.data.augment import AugmentConfig
from vla_pipeline.data.demo import DemoConfig
from vla_pipeline.data.frame_cache import FrameCacheConfig
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.model.config import PolicyConfig
from vla_pipeline.model.lora import LoraSpec
from vla_pipeline.model.setup import PolicySetup
from vla_pipeline.norms import NormsConfig
from vla_pipeline.params.models import default, defaults
from vla_pipeline.params.schema import ALL_KEYS
from vla_pipeline.preflight.run import PreflightConfig
from vla_pipeline.tracking import TrackingConfig
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.runtime import RuntimeOptions
from vla_pipeline.validate.config import QualityThresholds, ValidateConfig

from conftest import REPO

SECTIONS = {k.rsplit(".", 1)[0] for k in ALL_KEYS}  # a section-valued field (PolicyConfig.dims, TrainConfig.peft)
#: is not a default of keys: None there means off (peft) or LeRobot's full size (dims, as policy.size: full)
WANDB = {"wandb_project": "wandb.project", "wandb_mode": "wandb.mode"}
#: each config dataclass, the section its fields are keys of, and the fields named otherwise than their key
CONFIGS = [
    (PolicyConfig, "policy", {}),
    (TrainConfig, "train", {**{k: f"train.{v}" for k, v in WANDB.items()}, "wandb_init_timeout": "train.wandb.init_timeout",
                            "wandb_log_checkpoints": "train.wandb.log_checkpoints", "ema_decay": "train.ema.decay",
                            "seed": "base.seed"}),
    (RuntimeOptions, "train", {}),
    (AugmentConfig, "train.augment", {}),
    (LoraSpec, "train.peft", {}),
    (PolicySetup, "policy", {"freeze": "train.freeze", "ema_decay": "train.ema.decay"}),
    (TrackingConfig, "train", {**{k: f"train.{v}" for k, v in WANDB.items()},
                               "init_timeout": "train.wandb.init_timeout"}),
    (EvaluateConfig, "evaluate", {k: f"evaluate.{v}" for k, v in WANDB.items()}),
    (ValidateConfig, "validate", {"exclude_episodes": "dataset.exclude_episodes"}),
    (QualityThresholds, "validate.quality", {}),
    (NormsConfig, "norms", {"seed": "norms.split_seed"}),
    (FrameCacheConfig, "frame_cache", {}),
    (DemoConfig, "demo", {}),
    (PreflightConfig, "preflight", {}),
]
#: library defaults that still differ from params.yaml, each with where it is fixed (an empty set is the goal)
KNOWN_DRIFT: set[str] = set()  # none left


def _plain(value):
    """A dataclass default as params.yaml would hold it (tuples as lists, paths as strings)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def find_drift(configs) -> tuple[list[str], int]:
    """Every dataclass default that differs from the schema's for the same key; and how many were compared."""
    drift, compared = [], 0
    for cls, section, renamed in configs:
        for f in dataclasses.fields(cls):
            key = renamed.get(f.name, f"{section}.{f.name}")
            if key not in ALL_KEYS or key in SECTIONS or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                continue
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if dataclasses.is_dataclass(value):
                continue  # a nested config: checked as its own class
            compared += 1
            shipped = default(key)
            if _plain(value) != shipped or isinstance(value, bool) != isinstance(shipped, bool):
                drift.append(f"{cls.__name__}.{f.name} = {value!r}, params.yaml: {shipped!r}")
    return drift, compared


def test_params_yaml_is_the_schemas_defaults() -> None:
    """Changing a value in params.yaml means changing its default in params/models.py (and docs/parameters.md):
    the library then follows."""
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    assert defaults() == shipped
    assert default("train.val_samples") == shipped["train"]["val_samples"] == 128


def test_no_config_dataclass_default_drifts_from_params_yaml() -> None:
    drift, compared = find_drift(CONFIGS)
    assert set(drift) == KNOWN_DRIFT, "take these defaults from params.models.default(key):\n" + "\n".join(
        sorted(set(drift) - KNOWN_DRIFT))
    assert compared >= 60  # the check is not vacuous: most fields of these configs are params keys


def test_the_drift_check_sees_a_drifting_default() -> None:
    """The drifts of before (val_samples 256, num_inference_steps 10, tokenizer_max_length 48) are caught."""
    @dataclasses.dataclass
    class Drifted:
        val_samples: int = 256
        keep_last: int = 2
        freeze: tuple[str, ...] = ()
        brightness: tuple[float, float] | None = (0.9, 1.2)
        deterministic: int = 0  # a bool key: False, not 0

    @dataclasses.dataclass
    class Policy:
        num_inference_steps: int = 10
        tokenizer_max_length: int = 48

    drift, compared = find_drift([(Drifted, "train", {"brightness": "train.augment.brightness"}),
                                  (Policy, "policy", {})])
    assert compared == 7
    assert drift == ["Drifted.val_samples = 256, params.yaml: 128",
                     "Drifted.brightness = (0.9, 1.2), params.yaml: [0.9, 1.1]",
                     "Drifted.deterministic = 0, params.yaml: False",
                     "Policy.num_inference_steps = 10, params.yaml: 5",
                     "Policy.tokenizer_max_length = 48, params.yaml: 64"]
