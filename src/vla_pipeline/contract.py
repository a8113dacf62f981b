"""The action contract: which dataset keys hold action, state and cameras, and which joints
(by name, never by index) make up the arm-only action the policy learns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pipeline.errors import ContractError


@dataclass(frozen=True)
class Contract:
    name: str
    action_key: str
    state_key: str
    cameras: dict[str, str]
    joints: tuple[str, ...]
    semantics: str = "absolute"
    fps: int = 30
    units: dict = field(default_factory=dict)

    def select_indices(self, names: list[str], key: str) -> list[int]:
        """Positions of the contract's joints in a dataset vector whose names are ``names``."""
        missing = [j for j in self.joints if j not in names]
        if missing:
            raise ContractError(
                f"contract '{self.name}': joints {missing} are not in dataset key '{key}' "
                f"(its names: {names}); fix the contract's joints or choose another contract"
            )
        return [names.index(j) for j in self.joints]


def load_contract(path: Path) -> Contract:
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"contract file {path} not found; see contracts/ for the shipped ones")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        keys = raw["keys"]
        return Contract(
            name=raw["name"],
            action_key=keys["action"],
            state_key=keys["state"],
            cameras=dict(keys["cameras"]),
            joints=tuple(raw["joints"]),
            semantics=raw.get("semantics", "absolute"),
            fps=int(raw.get("fps", 30)),
            units=dict(raw.get("units", {})),
        )
    except (KeyError, TypeError) as e:
        raise ContractError(f"contract {path}: missing or malformed field {e}") from e


def compute_contract_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
