"""What a validation run reads: the dataset, the contract, the exclusions and the thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from vla_pipeline.params import int_list, param
from vla_pipeline.params.models import default


@dataclass(frozen=True)
class QualityThresholds:
    """The behavioural checks' thresholds (``validate.quality`` in params.yaml; docs/validation.md
    justifies each default). Fractions of a joint's range are of the contract's range for the joint
    (its robust span in the dataset when the contract declares none)."""

    still_fraction: float = default("validate.quality.still_fraction")  # a joint moving less than this fraction of its range in a frame is still
    frozen_state_frames: int = default("validate.quality.frozen_state_frames")  # state unchanged this many frames in a row while the action moves
    follow_min_corr: float = default("validate.quality.follow_min_corr")  # the state follows its action with at least this correlation
    saturation_fraction: float = default("validate.quality.saturation_fraction")  # share of an episode pinned at a contract limit or one value
    glitch_fraction: float = default("validate.quality.glitch_fraction")  # a one-frame excursion of this fraction of the range, back the next frame
    wrap_fraction: float = default("validate.quality.wrap_fraction")  # a one-frame jump of this fraction of the range (encoder wraparound)
    idle_seconds: float = default("validate.quality.idle_seconds")  # a static lead-in or lead-out longer than this
    action_state_fraction: float = default("validate.quality.action_state_fraction")  # actions within this of the same frame's state: recorded as the state
    lag_frames: int = default("validate.quality.lag_frames")  # the action trailing the state by more frames than this
    scale_ratio: float = default("validate.quality.scale_ratio")  # an episode's span this many times the others' (or 1/this): other units
    duplicate_fraction: float = default("validate.quality.duplicate_fraction")  # episodes closer than this (mean over joints and time): near duplicates
    drift_fraction: float = default("validate.quality.drift_fraction")  # first vs last quarter of the session differing by this

    @classmethod
    def from_mapping(cls, values: dict | None) -> QualityThresholds:
        known = {f.name: f.type for f in fields(cls)}
        values = values or {}
        return cls(**{k: (int if known[k] == "int" else float)(v) for k, v in values.items() if k in known})


@dataclass(frozen=True)
class ValidateConfig:
    dataset_root: Path
    contract_path: Path
    report_path: Path
    exclude_episodes: tuple[int, ...] = tuple(default("dataset.exclude_episodes"))
    min_episode_length: int = 1  # the policy's chunk size (the stage: policy.chunk_size): shorter ones get a warning
    decode_samples: int = default("validate.decode_samples")  # frames to decode per video file (0: container metadata only)
    quality: QualityThresholds = field(default_factory=QualityThresholds)

    @classmethod
    def from_params(cls, p: dict) -> ValidateConfig:
        return cls(
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            report_path=param(p, "validate.report", Path),
            exclude_episodes=tuple(param(p, "dataset.exclude_episodes", int_list)),
            min_episode_length=param(p, "policy.chunk_size", int),
            decode_samples=param(p, "validate.decode_samples", int),
            quality=QualityThresholds.from_mapping(param(p, "validate.quality", dict, default={})),
        )
