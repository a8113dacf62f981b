"""The units `vla contract init` guesses per joint from its name and observed values: a gripper's
fraction or percent, velocities, raw servo encoder ticks (integer values, e.g. 0..4095 from
Feetech/Dynamixel encoders, or an integer dtype), degrees and radians. Always a guess."""

from __future__ import annotations

import math

import numpy as np

_GRIPPER_WORDS = ("gripper", "hand", "finger", "claw", "jaw")
TICKS = "ticks"  # raw servo encoder counts: not an angle until calibrated


def is_integer_valued(values: np.ndarray) -> np.ndarray:
    """Per column of ``values`` (n, dim): every finite value is a whole number (and there is one)."""
    finite = np.isfinite(values)
    whole = np.where(finite, np.equal(np.mod(np.where(finite, values, 0.0), 1.0), 0.0), True)
    return whole.all(axis=0) & finite.any(axis=0)


def guess_unit(name: str, lo: float, hi: float, integer: bool = False) -> tuple[str, str]:
    """(unit, why) for a joint from its name and observed values: a gripper/hand in 0..1 is a
    ``fraction``, in 0..100 ``percent``; a velocity ``m/s`` (x/y) or deg/s, rad/s; ``integer``
    values (an integer dtype, or only whole numbers) that are >= 0 and beyond 2π are raw servo
    ``ticks``; an angle beyond ±2π is in ``deg``, within ±2π ``rad``. Always a guess."""
    n = name.lower()
    last = n.rsplit(".", 1)[-1]
    amax = max(abs(lo), abs(hi)) if math.isfinite(lo) and math.isfinite(hi) else float("nan")
    if not math.isfinite(amax):
        return "unknown", "no finite values"
    if any(w in n for w in _GRIPPER_WORDS) and lo >= -0.01:
        if hi <= 1.01:
            return "fraction", "gripper-like name, values within 0..1"
        if hi <= 101:
            return "percent", "gripper-like name, values within 0..100"
    if last in ("vel", "velocity") or n.endswith("_vel"):
        if n.split(".", 1)[0] in ("x", "y", "z"):
            return "m/s", "linear velocity name"
        return ("deg/s", "velocity beyond ±2π") if amax > 2 * math.pi else ("rad/s", "velocity within ±2π")
    if integer and lo >= 0 and amax > 2 * math.pi + 1e-6:
        if hi <= 4095:
            return TICKS, "whole numbers within 0..4095: raw 12-bit encoder ticks as Feetech/Dynamixel give, not an angle"
        return TICKS, "whole numbers >= 0 beyond 2π: raw encoder ticks, not an angle"
    if amax > 2 * math.pi + 1e-6:
        return "deg", "values beyond ±2π"
    if amax <= math.pi + 1e-6:
        return "rad", "values within ±π"
    return "rad", "values within ±2π (small moves in deg look the same)"


def format_ticks_note(units: dict[str, str]) -> list[str]:
    """The note `vla contract init` prints when it labels joints as ticks."""
    ticks = [j for j, u in units.items() if u == TICKS]
    if not ticks:
        return []
    return [f"joints {ticks} look like raw servo encoder ticks (whole numbers, e.g. 0..4095), not calibrated "
            f"angles: their units are 'ticks', and ranges and max_action_jump are in ticks; confirm against the "
            f"robot's driver"]
