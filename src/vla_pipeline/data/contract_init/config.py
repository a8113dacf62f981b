"""What `vla contract init` is asked for, and the starter contract it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MIN_PAD_FRACTION = 0.01  # a range is widened by at least 1% of its values' magnitude ...
MIN_PAD = 0.01  # ... and at least this much (joint units), so a joint that never moved gets a range


@dataclass(frozen=True)
class InitConfig:
    dataset_root: Path
    out: Path
    joints: tuple[str, ...] = ()  # name patterns (glob; regex with a 're:' prefix); () = every action name
    cameras: tuple[str, ...] = ()  # camera names or dataset keys, in the policy's order; () = every camera
    action_key: str | None = None  # None: guessed (guess_keys)
    state_key: str | None = None
    name: str | None = None  # None: the stem of ``out``
    margin: float = 0.1  # fraction of the observed span added on each side of a range
    jump_quantile: float = 0.99  # max_action_jump = jump_factor x this quantile of per-frame max |Δaction|
    jump_factor: float = 2.0
    timestamp_tolerance_s: float = 1e-3
    force: bool = False  # overwrite an existing ``out``


@dataclass
class Starter:
    """A starter contract: its YAML text and what went into it."""

    text: str
    name: str
    action_key: str
    state_key: str | None
    cameras: dict[str, str]
    joints: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    observed: dict[str, tuple[float, float]]  # joint -> observed (min, max) over action and state
    units: dict[str, str]
    max_action_jump: float | None
    fps: int
    notes: list[str] = field(default_factory=list)  # what the user must look at (the CLI prints them)
