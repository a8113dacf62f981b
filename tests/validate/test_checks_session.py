"""The session checks (validate/checks_session.py) on synthetic sessions built in memory: each planted
fault is found in the right episode, frames and joint with an exclusion suggested (drift: one dataset-level
warning per joint), and a healthy session (the state trailing the action by 2 frames with sensor noise,
varied episodes, small motions included) gives no finding."""

from __future__ import annotations

import numpy as np
import pytest
from test_checks import make_contract, make_info, make_view

from vla_pipeline.data import faults
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.demo import LEKIWI_NAMES, TASKS, DemoConfig, simulate_episodes
from vla_pipeline.validate.checks_session import (
    _unit_name,
    check_action_is_state,
    check_action_lag,
    check_drift,
    check_near_duplicate_episodes,
    check_scale_mismatch,
)
from vla_pipeline.validate.findings import Findings, View

from conftest import CONTRACT

JOINTS = tuple(f"j{i}" for i in range(5)) + ("gripper",)
NAMES = (*JOINTS, "x.vel")  # a base velocity the contract leaves out
RANGES = {**{j: (-100.0, 100.0) for j in JOINTS[:-1]}, "gripper": (0.0, 100.0)}
WIDTH = np.array([200.0] * 5 + [100.0])
FPS = 10  # test_checks' frame rate
LAG = 2  # frames the healthy state trails its action
NOISE = 0.1  # the sensors' noise (joint units)
SMALL = (3, 11, 17)  # episodes that barely move
CHECKS = (check_action_is_state, check_action_lag, check_scale_mismatch, check_near_duplicate_episodes, check_drift)


def motion(rng: np.random.Generator, n: int, small: bool = False) -> np.ndarray:
    """(n, 6) smooth joint targets: a sinusoid per joint about a random pose; the gripper about 50."""
    centre = np.r_[rng.uniform(-40, 40, 5), rng.uniform(40, 60)]
    amp = np.r_[rng.uniform(10, 50, 5), rng.uniform(20, 40)] * (0.03 if small else 1.0)
    t = np.arange(n)[:, None] / FPS
    return centre + amp * np.sin(2 * np.pi * rng.uniform(0.1, 0.4, 6) * t + rng.uniform(0, 2 * np.pi, 6))


def delayed(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` ``lag`` frames later: x[t - lag] (the first frame held before that)."""
    return np.concatenate([np.repeat(x[:1], lag, axis=0), x[:len(x) - lag]])


def follow(rng: np.random.Generator, target: np.ndarray, lag: int = LAG) -> tuple[np.ndarray, np.ndarray]:
    """The recorded action (the target plus noise) and the state reaching it ``lag`` frames later."""
    noisy = lambda x: x + rng.normal(0, NOISE, x.shape)  # noqa: E731
    return noisy(target), noisy(delayed(target, lag))


def session(n_episodes: int = 24, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.random.Generator]:
    rng = np.random.default_rng(seed)
    actions, states = [], []
    for e in range(n_episodes):
        a, s = follow(rng, motion(rng, int(rng.integers(60, 150)), small=e in SMALL))
        actions.append(a)
        states.append(s)
    return actions, states, rng


def view_of(actions: list[np.ndarray], states: list[np.ndarray] | None) -> View:
    """The episodes with a base-velocity column after the joints, the contract's ranges declared (no
    state column when ``states`` is None)."""
    pad = [np.c_[x, np.zeros(len(x))] for x in actions]
    view = make_view(pad, None if states is None else [np.c_[x, np.zeros(len(x))] for x in states],
                     info=make_info(NAMES), contract=make_contract(joints=JOINTS, ranges=RANGES))
    if states is None:
        del view.frames.vectors["observation.state"], view.info["features"]["observation.state"]
    return view


def found(check, view: View) -> list:
    out = Findings()
    check(view, out)
    assert out.errors == []
    return out.warnings


def assert_episode_finding(f, check: str, episode: int, length: int) -> None:
    assert (f.check, f.episode, f.frame, f.frames, f.suggestion) == (check, episode, 0, [0, length - 1], "exclude")
    assert f.key in JOINTS and f"episode {episode}" in f.message


# ----------------------------------------------------------------------------- healthy sessions
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_healthy_session_gives_no_finding(check, seed) -> None:
    actions, states, _ = session(seed=seed)
    assert found(check, view_of(actions, states)) == []


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_demo_dynamics_give_no_finding(check, seed) -> None:
    """The demo's simulator (its action a target far ahead of a slowly relaxing state, random start poses,
    four tasks with fixed goals): a healthy session by another recipe."""
    episodes = simulate_episodes(DemoConfig(root=CONTRACT.parent, num_episodes=48, seed=seed))
    view = make_view([e.action for e in episodes], [e.state for e in episodes], info=make_info(LEKIWI_NAMES),
                     contract=load_contract(CONTRACT))
    assert found(check, view) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_nan_rows_no_state_and_few_episodes_neither_crash_nor_warn(check) -> None:
    actions, states, _ = session(n_episodes=10)
    actions[2][5:9] = np.nan
    states[4][0] = np.nan
    assert found(check, view_of(actions, states)) == []
    assert found(check, view_of(actions, None)) == []  # no state: the checks needing it skip
    assert found(check, view_of(actions[:1], states[:1])) == []


# ----------------------------------------------------------------------------- 6 action_is_state
def test_action_recorded_as_the_state_is_found() -> None:
    actions, states, _ = session()
    actions[5] = states[5].copy()  # the recorder saved the observed position as the action
    view = view_of(actions, states)
    [f] = found(check_action_is_state, view)
    assert_episode_finding(f, "action_is_state", 5, len(actions[5]))
    assert f.value == 1.0 and "equals the same frame's state" in f.message
    assert found(check_action_lag, view) == []  # the action_is_state episode is not also a lag


def test_an_action_recorded_as_the_state_is_not_also_a_lag_off_the_median() -> None:
    rng = np.random.default_rng(5)
    actions, states = (list(x) for x in zip(*(follow(rng, motion(rng, 90), lag=6) for _ in range(12)), strict=True))
    actions[4] = states[4].copy()  # lag 0 against the dataset's 6: action_is_state's finding, not action_lag's
    view = view_of(actions, states)
    assert [f.episode for f in found(check_action_is_state, view)] == [4]
    assert found(check_action_lag, view) == []


def test_an_action_leading_by_one_frame_is_not_the_state() -> None:
    rng = np.random.default_rng(4)
    actions, states = zip(*(follow(rng, motion(rng, 80), lag=1) for _ in range(6)), strict=True)
    assert found(check_action_is_state, view_of(list(actions), list(states))) == []


# ----------------------------------------------------------------------------- 7 action_lag
def test_an_action_trailing_the_state_is_found() -> None:
    actions, states, rng = session()
    target = motion(rng, len(actions[7]))
    actions[7], states[7] = follow(rng, delayed(target, 5), lag=0)[0], follow(rng, target, lag=0)[1]  # stamped late
    [f] = found(check_action_lag, view_of(actions, states))
    assert_episode_finding(f, "action_lag", 7, len(actions[7]))
    assert f.value == -5 and "trails the state" in f.message


def test_an_episode_whose_state_follows_much_later_than_the_others_is_found() -> None:
    actions, states, rng = session()
    actions[9], states[9] = follow(rng, motion(rng, len(actions[9])), lag=LAG + 6)
    [f] = found(check_action_lag, view_of(actions, states))
    assert_episode_finding(f, "action_lag", 9, len(actions[9]))
    assert (f.value, f.expected) == (LAG + 6, LAG) and "recorded differently" in f.message


def test_lags_within_lag_frames_of_the_others_are_healthy() -> None:
    actions, states, rng = session()
    for e in (2, 8):
        actions[e], states[e] = follow(rng, motion(rng, len(actions[e])), lag=LAG + 3)
    assert found(check_action_lag, view_of(actions, states)) == []


# ----------------------------------------------------------------------------- 8 scale_mismatch
def test_an_episode_in_radians_is_found() -> None:
    actions, states, _ = session()
    actions[4][:, :5] /= 57.2958  # the arm's joints in radians, the gripper still in percent
    states[4][:, :5] /= 57.2958
    [f] = found(check_scale_mismatch, view_of(actions, states))
    assert_episode_finding(f, "scale_mismatch", 4, len(actions[4]))
    assert f.key != "gripper" and f.value < 1 / 3 and f.expected == [round(1 / 3, 4), 3.0]


def test_a_gripper_in_fractions_is_found_on_its_own() -> None:
    actions, states, _ = session()
    actions[6][:, 5] /= 100.0
    states[6][:, 5] /= 100.0
    [f] = found(check_scale_mismatch, view_of(actions, states))
    assert_episode_finding(f, "scale_mismatch", 6, len(actions[6]))
    assert f.key == "gripper" and "'gripper'" in f.message


def test_small_motions_near_zero_are_not_other_units() -> None:
    actions, states, rng = session()
    for e in (5, 12, 20):  # every joint barely moving near 0, the gripper near closed: a rest, not radians
        target = motion(rng, len(actions[e]), small=True)
        target -= np.r_[np.median(target[:, :5], axis=0), np.median(target[:, 5]) - 1.0]
        actions[e], states[e] = follow(rng, target)
    assert found(check_scale_mismatch, view_of(actions, states)) == []


def test_unit_factors_are_named() -> None:
    assert "radians" in _unit_name(1 / 57.0) and "radians" in _unit_name(60.0)
    assert "percent" in _unit_name(0.0105) and "ticks" in _unit_name(11.0)
    assert _unit_name(5.0) == ""


# ----------------------------------------------------------------------------- 9 near_duplicate_episodes
def test_a_near_copy_of_an_earlier_episode_is_found_and_an_exact_copy_left_to_duplicate_episodes() -> None:
    actions, states, rng = session()
    actions[10] = actions[4] + rng.normal(0, 0.05, actions[4].shape)  # re-saved with noise
    states[10] = states[4].copy()
    actions[12], states[12] = actions[4].copy(), states[4].copy()  # bit-identical: duplicate_episodes' finding
    [f] = found(check_near_duplicate_episodes, view_of(actions, states))
    assert_episode_finding(f, "near_duplicate_episodes", 10, len(actions[10]))
    assert f.value == 4 and "nearly repeats episode 4" in f.message


def test_the_same_actions_from_other_states_are_no_duplicate() -> None:
    """The demo's case: a target reached from another start pose (the state differs, the action barely)."""
    actions, states, rng = session()
    actions[10] = actions[4] + rng.normal(0, 0.05, actions[4].shape)
    states[10] = states[4] + np.linspace(0, 1, len(states[4]))[::-1, None] * 20.0  # started 20 away
    assert found(check_near_duplicate_episodes, view_of(actions, states)) == []


def test_without_a_state_near_copies_are_found_and_barely_moving_episodes_are_not() -> None:
    actions, _, rng = session()
    actions[10] = actions[4] + rng.normal(0, 0.05, actions[4].shape)
    actions[12] = np.full_like(actions[11], 5.0) + rng.normal(0, 0.3, actions[11].shape)  # two still episodes,
    actions[13] = np.full_like(actions[11], 5.0) + rng.normal(0, 0.3, actions[11].shape)  # alike within noise
    [f] = found(check_near_duplicate_episodes, view_of(actions, None))
    assert (f.episode, f.value) == (10, 4)


def test_the_same_motion_at_another_speed_or_offset_is_no_duplicate() -> None:
    actions, states, rng = session()
    actions[10], states[10] = actions[4] + 3.0, states[4] + 3.0  # 1.5 % of the range away
    stretched = np.linspace(0, len(actions[4]) - 1, int(len(actions[4]) * 1.3))
    actions[11] = np.stack([np.interp(stretched, np.arange(len(actions[4])), c) for c in actions[4].T], axis=1)
    states[11] = np.stack([np.interp(stretched, np.arange(len(states[4])), c) for c in states[4].T], axis=1)
    assert found(check_near_duplicate_episodes, view_of(actions, states)) == []


# ----------------------------------------------------------------------------- 10 drift
def homed_session(creep: np.ndarray, offset: np.ndarray, seed: int = 0) -> tuple[list, list]:
    """Episodes that start at the robot's home (moved by ``creep[e]``) and reach random poses; the state
    reads ``offset[e]`` below the truth (a calibration creeping)."""
    rng = np.random.default_rng(seed)
    actions, states = [], []
    home = np.array([0.0, -30.0, 30.0, 0.0, 0.0, 10.0])
    for e in range(len(creep)):
        n = int(rng.integers(60, 120))
        ramp = np.minimum(np.arange(n) / 30, 1.0)[:, None]
        goal = np.r_[rng.uniform(-50, 50, 5), rng.uniform(0, 90)]
        a, s = follow(rng, home + creep[e] + ramp * (goal - home))
        actions.append(a)
        states.append(s - offset[e])
    return actions, states


def test_a_creeping_calibration_is_one_dataset_level_warning() -> None:
    creep, offset = np.zeros((24, 6)), np.zeros((24, 6))
    offset[:, 2] = np.linspace(0, 40, 24)  # 20 % of elbow's range over the session
    [f] = found(check_drift, view_of(*homed_session(creep, offset)))
    assert (f.check, f.key, f.episode, f.suggestion, f.frames) == ("drift", "j2", None, None, None)
    assert "episodes 0..5 vs 18..23" in f.message and "offset action - state" in f.message
    assert "pose at the episode's start" in f.message  # the state reads the creep at home too
    assert abs(f.value) > 20 and f.expected == 20.0


def test_a_home_pose_moving_is_found_and_a_steady_one_is_not() -> None:
    creep, offset = np.zeros((12, 6)), np.zeros((12, 6))  # 12 episodes: a rank correlation of 1 has z ~ 4.4
    assert found(check_drift, view_of(*homed_session(creep, offset))) == []
    creep[:, 0] = np.linspace(0, 50, 12)  # the home's pan creeps 25 % of its range
    [f] = found(check_drift, view_of(*homed_session(creep, offset)))
    assert f.key == "j0" and "pose at the episode's start" in f.message and "episodes 0..2 vs 9..11" in f.message


def test_start_poses_scattered_widely_are_no_home_drift() -> None:
    """Random start poses whose mean moves slowly: a trend (z ~ 6), 15 % of the range between the quarters,
    but no home that moved: within the scatter of the quarters' episodes (below DRIFT_SCATTER sigmas)."""
    rng = np.random.default_rng(0)
    creep, offset = np.zeros((400, 6)), np.zeros((400, 6))
    creep[:, 0] = np.linspace(0, 40, 400) + rng.uniform(-60, 60, 400)
    assert found(check_drift, view_of(*homed_session(creep, offset))) == []


def test_drift_is_measured_within_each_task() -> None:
    """Two tasks with their own home poses, recorded one after the other: no drift; a creep across the
    interleaved tasks: drift, seen in each task's episodes."""
    creep, offset = np.zeros((24, 6)), np.zeros((24, 6))
    creep[12:, 3] = 40.0  # the second task's home: 20 % of the range away
    view = view_of(*homed_session(creep, offset))
    view.frames.scalars["task_index"] = np.repeat((np.arange(24) >= 12).astype(np.int64), view.episodes["length"])
    assert found(check_drift, view) == []
    creep[:, 3] = np.linspace(0, 40, 24) + np.where(np.arange(24) % 2, 30.0, 0.0)  # odd episodes: the other task
    view = view_of(*homed_session(creep, offset))
    view.frames.scalars["task_index"] = np.repeat(np.arange(24) % 2, view.episodes["length"])
    [f] = found(check_drift, view)
    assert f.key == "j3" and "pose at the episode's start" in f.message


@pytest.mark.parametrize("kind", ["action_is_state", "action_lag", "scale_mismatch", "near_duplicate", "drift"])
def test_the_planted_faults_of_data_faults_are_found_on_the_demo_dynamics(kind) -> None:
    """data/faults.py's planters (the data-quality benchmark's faults) on the demo simulator's session."""
    episodes = simulate_episodes(DemoConfig(root=CONTRACT.parent, num_episodes=24, seed=0))
    contract, info = load_contract(CONTRACT), make_info(LEKIWI_NAMES)
    actions, states = [e.action.astype(np.float64) for e in episodes], [e.state.astype(np.float64) for e in episodes]
    lay = faults.make_layout(info, contract, np.concatenate(actions), np.concatenate(states))
    rng, chosen = np.random.default_rng(0), (5, 17)
    for e in range(24) if kind == "drift" else chosen:
        ep = faults.Episode(actions[e], states[e])
        if kind == "drift":  # the planter's ramp, 0 .. 25 % of elbow's range over the session
            ep.action[:, 2] += 0.25 * lay.width[2] * e / 23
            ep.state[:, 2] += 0.25 * lay.width[2] * e / 23
        elif kind == "near_duplicate":  # from the episode of the closest length, as the planter picks
            src = min((c for c in range(24) if c not in chosen), key=lambda c: abs(len(actions[c]) - len(ep.action)))
            ep, _ = faults.compute_near_duplicate(ep, faults.Episode(actions[src], states[src]), lay, rng)
        else:
            compute = faults.compute_action_lag if kind.startswith("action") else faults.compute_scale_mismatch
            ep, _ = compute(ep, lay, rng, **({"frames": 0} if kind == "action_is_state" else {}))
        actions[e], states[e] = ep.action, ep.state
    view = make_view(actions, states, info=info, contract=contract)
    view.frames.scalars["task_index"] = np.repeat([TASKS.index(e.task) for e in episodes], view.episodes["length"])
    check = {"near_duplicate": check_near_duplicate_episodes}.get(kind) or globals()[f"check_{kind}"]
    findings = found(check, view)
    if kind == "drift":
        assert [(f.key, f.episode) for f in findings] == [("arm_elbow_flex.pos", None)]
    elif kind == "near_duplicate":  # on the later of each pair, naming the earlier
        assert len(findings) == 2 and set(chosen) <= {e for f in findings for e in (f.episode, f.value)}
    else:
        assert {f.episode for f in findings} == set(chosen)


def test_drift_needs_eight_episodes_and_a_clean_separation() -> None:
    creep, offset = np.zeros((7, 6)), np.zeros((7, 6))
    offset[:, 2] = np.linspace(0, 40, 7)
    assert found(check_drift, view_of(*homed_session(creep, offset))) == []
    creep, offset = np.zeros((24, 6)), np.zeros((24, 6))
    offset[[0, 2, 4, 21, 23], 2] = 40.0  # a few odd episodes at both ends: no trend
    assert found(check_drift, view_of(*homed_session(creep, offset))) == []
