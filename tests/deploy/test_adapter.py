"""The arm-only action adapter: LeKiwi's 9 action names from the contract's 6 arm joints, base held
at the declared 0.0 and a position joint held at its observed state, actions clamped and counted,
a robot that does not match refused at connect with the differences."""

from __future__ import annotations

import pytest
import yaml

from vla_pipeline.data.contract import load_contract
from vla_pipeline.deploy.adapter import ActionAdapter
from vla_pipeline.errors import ContractError

from conftest import CONTRACT

ARM = ["arm_shoulder_pan.pos", "arm_shoulder_lift.pos", "arm_elbow_flex.pos", "arm_wrist_flex.pos",
       "arm_wrist_roll.pos", "arm_gripper.pos"]
LEKIWI = [*ARM, "x.vel", "y.vel", "theta.vel"]


def contract_with(tmp_path, hold: dict):
    raw = yaml.safe_load(CONTRACT.read_text())
    raw["deploy"] = {"hold": hold}
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_contract(path)


def test_lekiwi_base_is_held_at_zero_and_the_arm_follows_the_policy(tmp_path) -> None:
    contract = contract_with(tmp_path, {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0})
    adapter = ActionAdapter.connect(contract, LEKIWI)
    action = adapter.to_robot_action([10, -20, 30, -40, 50, 60], observation={})
    assert list(action) == LEKIWI  # the robot's order
    assert [action[j] for j in ARM] == [10, -20, 30, -40, 50, 60]
    assert (action["x.vel"], action["y.vel"], action["theta.vel"]) == (0.0, 0.0, 0.0)
    assert adapter.actions == 1 and not adapter.clamped


def test_a_position_joint_declared_state_holds_where_the_robot_is(tmp_path) -> None:
    contract = contract_with(tmp_path, {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0, "head_pan.pos": "state"})
    adapter = ActionAdapter.connect(contract, [*LEKIWI, "head_pan.pos"])
    action = adapter.to_robot_action([0] * 6, observation={"head_pan.pos": 12.5})
    assert action["head_pan.pos"] == 12.5
    with pytest.raises(ContractError, match="observation has no 'head_pan.pos'"):
        adapter.to_robot_action([0] * 6, observation={})


def test_actions_outside_the_ranges_are_clamped_and_counted(tmp_path) -> None:
    adapter = ActionAdapter.connect(contract_with(tmp_path, {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0}), LEKIWI)
    action = adapter.to_robot_action([200, -200, 0, 0, 0, 101], observation={})  # ranges +-110, gripper 0..100
    assert (action["arm_shoulder_pan.pos"], action["arm_shoulder_lift.pos"], action["arm_gripper.pos"]) == \
        (110, -110, 100)
    adapter.to_robot_action([111, 0, 0, 0, 0, -1], observation={})
    assert dict(adapter.clamped) == {"arm_shoulder_pan.pos": 2, "arm_shoulder_lift.pos": 1, "arm_gripper.pos": 2}
    assert adapter.actions == 2


def test_a_robot_that_does_not_match_is_refused_with_the_differences(tmp_path) -> None:
    contract = contract_with(tmp_path, {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0})
    so101_renamed = [n.removeprefix("arm_") for n in ARM]  # an SO-101: same joints, other names
    with pytest.raises(ContractError) as missing:
        ActionAdapter.connect(contract, so101_renamed)
    assert "no action named ['arm_shoulder_pan.pos'" in str(missing.value)
    assert "not driven by the policy and have no deploy.hold" in str(missing.value)  # its own names
    with pytest.raises(ContractError, match=r"\['z.vel'\] are not driven by the policy"):
        ActionAdapter.connect(contract, [*LEKIWI, "z.vel"])  # an extra joint the contract says nothing about
    with pytest.raises(ContractError, match="deploy.hold"):
        ActionAdapter.connect(contract_with(tmp_path, {}), LEKIWI)  # no deploy.hold: the base is not silently 0
    assert load_contract(CONTRACT).hold == {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0}  # the shipped LeKiwi one


def test_deploy_hold_is_checked_when_the_contract_loads(tmp_path) -> None:
    with pytest.raises(ContractError, match="deploy.hold names \\['arm_gripper.pos'\\], which the policy drives"):
        contract_with(tmp_path, {"arm_gripper.pos": 0.0})
    with pytest.raises(ContractError, match="give a number"):
        contract_with(tmp_path, {"x.vel": "zero"})


def test_a_non_finite_action_never_reaches_the_robot(tmp_path) -> None:
    """NaN compares false with both range ends: without a check it would pass the clamp untouched."""
    adapter = ActionAdapter.connect(contract_with(tmp_path, {"x.vel": 0.0, "y.vel": 0.0, "theta.vel": 0.0}), LEKIWI)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ContractError, match=f"predicted {bad} for arm_elbow_flex.pos; nothing is sent"):
            adapter.to_robot_action([0, 0, bad, 0, 0, 50], observation={})
    assert adapter.actions == 0
