"""What a validation run reads: the dataset, the contract, the exclusions and the thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.params import int_list, param


@dataclass(frozen=True)
class ValidateConfig:
    dataset_root: Path
    contract_path: Path
    report_path: Path
    exclude_episodes: tuple[int, ...] = ()
    min_episode_length: int = 1  # the policy's chunk size: shorter episodes get a warning
    decode_samples: int = 0  # frames to decode per video file (0: container metadata only)

    @classmethod
    def from_params(cls, p: dict) -> ValidateConfig:
        return cls(
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            report_path=param(p, "validate.report", Path),
            exclude_episodes=tuple(param(p, "dataset.exclude_episodes", int_list)),
            min_episode_length=param(p, "policy.chunk_size", int),
            decode_samples=param(p, "validate.decode_samples", int),
        )
