"""The arm-only action adapter: the policy predicts the contract's joints, the robot wants its own
action names. Matched by name; an action name the policy does not drive gets the contract's declared
value (``deploy.hold``: a number such as 0.0 for LeKiwi's base velocities, or ``"state"`` to hold a
position joint where the observation says it is), never a silent drop; every driven joint is
clamped to the contract's range, counted per joint. A robot whose names do not cover the contract's
joints, or that has names the contract declares nothing for, is refused at connect with the list."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vla_pipeline.data.contract import Contract
from vla_pipeline.errors import ContractError


@dataclass
class ActionAdapter:
    contract: Contract
    robot_names: tuple[str, ...]  # the robot's action names, in its order
    clamped: collections.Counter = field(default_factory=collections.Counter)  # joint -> actions clamped
    actions: int = 0  # robot actions produced

    @classmethod
    def connect(cls, contract: Contract, robot_names: Sequence[str]) -> ActionAdapter:
        """Check the robot against the contract once, before the first action."""
        robot_names = tuple(robot_names)
        missing = [j for j in contract.joints if j not in robot_names]
        undeclared = [n for n in robot_names if n not in contract.joints and n not in contract.hold]
        if missing or undeclared:
            problems = []
            if missing:
                problems.append(f"the robot has no action named {missing} (the policy drives them)")
            if undeclared:
                problems.append(f"the robot's actions {undeclared} are not driven by the policy and have no "
                                f"deploy.hold value in the contract")
            raise ContractError(f"robot does not match contract '{contract.name}': {'; '.join(problems)}. Robot "
                                f"actions: {list(robot_names)}; contract joints: {list(contract.joints)}. Use the "
                                f"contract made for this robot, or declare deploy.hold (a number, or 'state')")
        return cls(contract, robot_names)

    def to_robot_action(self, action: Sequence[float], observation: Mapping[str, float]) -> dict[str, float]:
        """One policy action (contract order) -> the robot's action dict (robot order)."""
        joints = self.contract.joints
        if len(action) != len(joints):
            raise ContractError(f"policy action has {len(action)} values; contract '{self.contract.name}' has "
                                f"{len(joints)} joints")
        driven = {j: self._clamp(j, float(v)) for j, v in zip(joints, action, strict=True)}
        out = {}
        for name in self.robot_names:
            if name in driven:
                out[name] = driven[name]
            elif self.contract.hold[name] == "state":
                out[name] = self._observed(name, observation)
            else:
                out[name] = float(self.contract.hold[name])
        self.actions += 1
        return out

    def _clamp(self, joint: str, value: float) -> float:
        if not math.isfinite(value):  # NaN passes every comparison: it would reach the motors unclamped
            raise ContractError(f"the policy predicted {value} for {joint}; nothing is sent to the robot. A checkpoint "
                                f"that predicts non-finite actions is broken: evaluate it (`vla evaluate`) before serving")
        lo, hi = self.contract.ranges.get(joint, (float("-inf"), float("inf")))
        if value < lo or value > hi:
            self.clamped[joint] += 1
            return min(max(value, lo), hi)
        return value

    def _observed(self, name: str, observation: Mapping[str, float]) -> float:
        if name not in observation:
            raise ContractError(f"deploy.hold.{name} is 'state' but the robot's observation has no {name!r}")
        return float(observation[name])
