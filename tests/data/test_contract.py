"""The action contract file: every field as parsed, the defaults of the optional ones, each refusal
naming the file and the field, and joint selection by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from vla_pipeline.data.contract import Contract, load_contract
from vla_pipeline.errors import ContractError
from vla_pipeline.provenance import compute_contract_hash

from conftest import CONTRACT

MINIMAL = {
    "name": "minimal",
    "keys": {"action": "act", "state": "obs", "cameras": {"top": "cam.top"}},
    "joints": ["a", "b"],
    "fps": 15,
}


def write(tmp_path: Path, raw: dict | str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def with_(**changes) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    raw.update(changes)
    return raw


def test_shipped_contract_parses_every_field() -> None:
    c = load_contract(CONTRACT)
    assert c == Contract(
        name="lekiwi_arm", robot="lekiwi", action_key="action", state_key="observation.state",
        cameras={"front": "observation.images.front", "wrist": "observation.images.wrist"},
        joints=("arm_shoulder_pan.pos", "arm_shoulder_lift.pos", "arm_elbow_flex.pos", "arm_wrist_flex.pos",
                "arm_wrist_roll.pos", "arm_gripper.pos"),
        ranges={"arm_shoulder_pan.pos": (-110.0, 110.0), "arm_shoulder_lift.pos": (-110.0, 110.0),
                "arm_elbow_flex.pos": (-110.0, 110.0), "arm_wrist_flex.pos": (-110.0, 110.0),
                "arm_wrist_roll.pos": (-180.0, 180.0), "arm_gripper.pos": (0.0, 100.0)},
        fps=30, timestamp_tolerance_s=0.001, semantics="absolute",
        units={**{j: "deg" for j in ("arm_shoulder_pan.pos", "arm_shoulder_lift.pos", "arm_elbow_flex.pos",
                                     "arm_wrist_flex.pos", "arm_wrist_roll.pos")}, "arm_gripper.pos": "percent"},
        required_cameras=("front", "wrist"), state_required=True, max_action_jump=30.0,
        hold={"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0},
    )
    assert isinstance(c.max_action_jump, float) and all(isinstance(x, float) for r in c.ranges.values() for x in r)


def test_optional_fields_take_their_defaults(tmp_path) -> None:
    c = load_contract(write(tmp_path, MINIMAL))
    assert c == Contract(name="minimal", action_key="act", state_key="obs", cameras={"top": "cam.top"},
                         joints=("a", "b"), ranges={}, fps=15, required_cameras=("top",))
    assert (c.robot, c.semantics, c.units, c.required_cameras) == ("", "absolute", {}, ("top",))
    assert c.timestamp_tolerance_s == 1e-3 and c.state_required is True and c.max_action_jump is None


def test_optional_fields_are_read_when_given(tmp_path) -> None:
    c = load_contract(write(tmp_path, with_(
        robot="so101", semantics="delta", units={"a": "rad"}, ranges={"b": [-1, 2.5]}, timestamp_tolerance_s=0.02,
        state_required=False, max_action_jump=7, fps="25", name=12)))
    assert (c.robot, c.semantics, c.units, c.ranges) == ("so101", "delta", {"a": "rad"}, {"b": (-1.0, 2.5)})
    assert c.timestamp_tolerance_s == 0.02 and c.state_required is False and c.max_action_jump == 7.0
    assert c.fps == 25 and c.name == "12"  # coerced: an int fps, a str name


def test_a_contract_without_cameras_has_none(tmp_path) -> None:
    raw = with_()
    raw["keys"]["cameras"] = None
    c = load_contract(write(tmp_path, raw))
    assert c.cameras == {} and c.required_cameras == ()


@pytest.mark.parametrize(("change", "message"), [
    ({"semantics": "velocity"}, r"semantics 'velocity' is not one of \['absolute', 'delta'\]"),
    ({"required_cameras": ["top", "side"]}, r"required_cameras \['side'\] have no key under keys.cameras"),
    ({"required_cameras": []}, r"cameras \['top'\] are under keys.cameras but not in required_cameras; the policy "
                               r"reads every camera under keys.cameras, so add them to required_cameras"),
])
def test_inconsistent_fields_are_refused_naming_the_file(tmp_path, change, message) -> None:
    path = write(tmp_path, with_(**change))
    with pytest.raises(ContractError, match=message) as e:
        load_contract(path)
    assert str(e.value).startswith(f"contract {path}: ")
    assert "missing or malformed" not in str(e.value)  # the specific message, not the generic wrapper


@pytest.mark.parametrize(("raw", "message"), [
    ({k: v for k, v in MINIMAL.items() if k != "fps"}, r"missing or malformed field 'fps'; compare with "
                                                         r"contracts/lekiwi_arm.yaml"),
    (with_(fps="fast"), r"missing or malformed field invalid literal for int\(\)"),
    (with_(max_action_jump="far"), r"missing or malformed field could not convert string to float"),
    (with_(ranges={"a": [0]}), r"missing or malformed field not enough values to unpack"),
    (with_(joints=None), r"missing or malformed field 'NoneType' object is not iterable"),
    ("", r"missing or malformed field 'keys'"),  # an empty file
])
def test_missing_or_malformed_fields_are_one_contract_error(tmp_path, raw, message) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(ContractError, match=message) as e:
        load_contract(path)
    assert str(e.value).startswith(f"contract {path}: missing or malformed field ")
    assert isinstance(e.value.__cause__, KeyError | TypeError | ValueError)


def test_invalid_yaml_and_missing_file_are_contract_errors(tmp_path) -> None:
    path = write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ContractError, match=rf"contract {path} is not valid YAML: ") as e:
        load_contract(path)
    assert isinstance(e.value.__cause__, yaml.YAMLError)
    with pytest.raises(ContractError, match=rf"contract file {tmp_path / 'nope.yaml'} not found; see contracts/"):
        load_contract(tmp_path / "nope.yaml")
    with pytest.raises(ContractError, match="not found"):  # a directory is no contract file
        load_contract(tmp_path)


def test_load_contract_takes_a_string_path(tmp_path) -> None:
    assert load_contract(str(write(tmp_path, MINIMAL))).name == "minimal"


def test_joints_are_selected_by_name_in_contract_order() -> None:
    c = load_contract(CONTRACT)
    names = ["x.vel", *reversed(c.joints), "y.vel"]
    assert c.select_indices(names, "action") == [6, 5, 4, 3, 2, 1]


def test_missing_joints_are_named_with_the_closest_dataset_names() -> None:
    c = Contract(name="arm", action_key="action", state_key="state", cameras={}, joints=("elbow", "wrist", "zzz", "grip"),
                 ranges={}, fps=30)
    with pytest.raises(ContractError) as e:
        c.select_indices(["elbow", "wrist_flex", "gripper"], "observation.state")
    assert str(e.value) == (
        "contract 'arm': joints ['wrist', 'zzz', 'grip'] are not among the dataset's names for 'observation.state': "
        "['elbow', 'wrist_flex', 'gripper']; did you mean 'wrist_flex' for 'wrist', 'gripper' for 'grip'? Fix the "
        "contract's joints, or choose the contract that matches this dataset (dataset.contract)")


def test_missing_joints_without_a_close_name_have_no_hint() -> None:
    c = Contract(name="arm", action_key="a", state_key="s", cameras={}, joints=("elbow",), ranges={}, fps=30)
    with pytest.raises(ContractError) as e:
        c.select_indices(["qqq"], "a")
    assert str(e.value) == ("contract 'arm': joint 'elbow' is not among the dataset's names for 'a': ['qqq']; "
                            "fix the contract's joints, or choose the contract that matches this dataset "
                            "(dataset.contract)")


def test_a_typo_in_joints_is_named_as_a_joint_the_dataset_lacks(tmp_path) -> None:
    """A contract whose ranges and units name the right joint while ``joints`` has a typo loads (the typo is
    not reported as a range without a joint); selecting the joints names it, with the dataset's name."""
    raw = with_(joints=["shoulder_pann.pos", "b"], ranges={"shoulder_pan.pos": [0, 1]}, units={"shoulder_pan.pos": "deg"})
    c = load_contract(write(tmp_path, raw))
    assert c.unknown_joint_refs() == {"ranges": ["shoulder_pan.pos"], "units": ["shoulder_pan.pos"]}
    with pytest.raises(ContractError) as e:
        c.select_indices(["shoulder_pan.pos", "b"], "action")
    assert str(e.value).startswith("contract 'minimal': joint 'shoulder_pann.pos' is not among the dataset's names "
                                   "for 'action': ['shoulder_pan.pos', 'b']; did you mean 'shoulder_pan.pos'? Fix")


def test_contract_hash_is_the_sha256_of_the_file(tmp_path) -> None:
    path = write(tmp_path, MINIMAL)
    assert compute_contract_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert compute_contract_hash(str(path)) == compute_contract_hash(path)
