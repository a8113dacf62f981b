"""The action contract: what an action *is* for a whole run.

One YAML file per robot setup (``contracts/``) says which dataset keys hold the action, the
state and the cameras, which joints (by name, never by index) make up the arm-only action the
policy learns, their semantics, units and physical ranges, and the fps and timestamp tolerance
the data must have. Selecting by name takes the arm out of a wider vector (LeKiwi's 9-dim
action without its base velocities, one arm of a bimanual robot).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pipeline.errors import ContractError

SEMANTICS = ("absolute", "delta")


@dataclass(frozen=True)
class Contract:
    name: str
    action_key: str
    state_key: str
    cameras: dict[str, str]
    joints: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    fps: int
    timestamp_tolerance_s: float = 1e-3
    semantics: str = "absolute"
    units: dict[str, str] = field(default_factory=dict)
    required_cameras: tuple[str, ...] = ()
    state_required: bool = True
    max_action_jump: float | None = None
    robot: str = ""
    #: deploy.hold: what the robot gets for an action name the policy does not drive: a number (e.g.
    #: 0.0 for LeKiwi's base velocities) or "state" (hold the joint where the observation says it is)
    hold: dict[str, float | str] = field(default_factory=dict)

    def select_indices(self, names: list[str], key: str) -> list[int]:
        """Positions of the contract's joints in a dataset vector whose names are ``names``."""
        missing = [j for j in self.joints if j not in names]
        if missing:
            raise ContractError(f"contract '{self.name}': " + format_missing_joints(
                missing, names, key, "fix the contract's joints, or choose the contract that matches this dataset "
                                     "(dataset.contract)"))
        return [names.index(j) for j in self.joints]

    def unknown_joint_refs(self) -> dict[str, list[str]]:
        """Joints that ``ranges`` and ``units`` name but ``joints`` does not ("ranges" / "units" -> names).
        Validation reports them once the joints are known to be the dataset's (a typo in ``joints`` is
        then named as a joint the dataset lacks, not as a range without a joint)."""
        refs = {"ranges": sorted(set(self.ranges) - set(self.joints)),
                "units": sorted(set(self.units) - set(self.joints))}
        return {field_: names for field_, names in refs.items() if names}


def format_missing_joints(missing: list[str], names: list[str], key: str, advice: str) -> str:
    """The joints a dataset vector lacks, with the closest names it has, then ``advice``: ``joint
    'shoulder_pann.pos' is not among the dataset's names for 'action': [...]; did you mean
    'shoulder_pan.pos'? Fix ...``"""
    close = {j: difflib.get_close_matches(j, names, n=1) for j in missing}
    hints = [(j, c[0]) for j, c in close.items() if c]
    what = f"joint '{missing[0]}' is" if len(missing) == 1 else f"joints {list(missing)} are"
    text = f"{what} not among the dataset's names for '{key}': {list(names)}"
    if not hints:
        return f"{text}; {advice}"
    hint = f"'{hints[0][1]}'" if len(missing) == 1 else ", ".join(f"'{c}' for '{j}'" for j, c in hints)
    return f"{text}; did you mean {hint}? {advice[:1].upper()}{advice[1:]}"


def _parse(raw: dict, path: Path) -> Contract:
    keys = raw["keys"]
    joints = tuple(raw["joints"])
    # ranges or units naming a joint outside `joints` are reported by validation (Contract.unknown_joint_refs),
    # after the joints are compared with the dataset's names: a typo in `joints` is named there as such
    ranges = {j: (float(lo), float(hi)) for j, (lo, hi) in (raw.get("ranges") or {}).items()}
    semantics = raw.get("semantics", "absolute")
    if semantics not in SEMANTICS:
        raise ContractError(f"contract {path}: semantics {semantics!r} is not one of {list(SEMANTICS)}")
    cameras = dict(keys.get("cameras") or {})
    required = tuple(raw.get("required_cameras", list(cameras)))
    missing_cams = [c for c in required if c not in cameras]
    if missing_cams:
        raise ContractError(f"contract {path}: required_cameras {missing_cams} have no key under keys.cameras")
    optional = [c for c in cameras if c not in required]
    if optional:
        raise ContractError(f"contract {path}: cameras {optional} are under keys.cameras but not in required_cameras; "
                            f"the policy reads every camera under keys.cameras, so add them to required_cameras "
                            f"or remove them from keys.cameras")
    jump = raw.get("max_action_jump")
    hold = _parse_hold((raw.get("deploy") or {}).get("hold") or {}, joints, path)
    return Contract(
        hold=hold,
        name=str(raw["name"]),
        robot=str(raw.get("robot", "")),
        action_key=str(keys["action"]),
        state_key=str(keys["state"]),
        cameras=cameras,
        joints=joints,
        ranges=ranges,
        fps=int(raw["fps"]),
        timestamp_tolerance_s=float(raw.get("timestamp_tolerance_s", 1e-3)),
        semantics=semantics,
        units=dict(raw.get("units") or {}),
        required_cameras=required,
        state_required=bool(raw.get("state_required", True)),
        max_action_jump=None if jump is None else float(jump),
    )


def _parse_hold(raw: dict, joints: tuple[str, ...], path: Path) -> dict[str, float | str]:
    driven = sorted(set(raw) & set(joints))
    if driven:
        raise ContractError(f"contract {path}: deploy.hold names {driven}, which the policy drives (joints)")
    hold: dict[str, float | str] = {}
    for name, value in raw.items():
        if value == "state":
            hold[str(name)] = "state"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            hold[str(name)] = float(value)
        else:
            raise ContractError(f"contract {path}: deploy.hold.{name} = {value!r}; give a number (e.g. 0.0 for a "
                                f"velocity) or \"state\" (hold the position the robot reports)")
    return hold


def load_contract(path: Path) -> Contract:
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"contract file {path} not found; see contracts/ for the shipped ones")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return _parse(raw, path)
    except yaml.YAMLError as e:
        raise ContractError(f"contract {path} is not valid YAML: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ContractError):
            raise
        raise ContractError(f"contract {path}: missing or malformed field {e}; compare with contracts/lekiwi_arm.yaml") from e


