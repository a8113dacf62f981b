"""Behavioural data quality: planted faults, caught by `vla validate`, lerobot-doctor and lerobot-lint?

Builds fixtures for every fault class of ``vla_pipeline.data.faults`` on two datasets:

* ``demo``: a copy of params.yaml's ``dataset.root`` (built with ``make_demo_dataset`` under the fixtures
  directory if it is absent) with its ``dataset.contract``;
* ``bimanual``: a real-pattern bimanual recording written by LeRobot's writer (``bi_so101_follower``
  names ``left_*.pos`` / ``right_*.pos``, 12 episodes of 5-9 s): the leader's (action) minimum-jerk
  reaches (peaks up to 240 deg/s) from each arm's home pose between waypoints, with dwells and hand
  tremor; the follower's state (at most an STS3215 servo's 270 deg/s) trailing the action by 1-3 frames
  through a first-order lag, with noise; both quantised to 4096 encoder ticks a turn; grippers that close
  on an object and hold it (the state stops at the object while the action squeezes); a short rest at
  both ends; its contract from ``vla contract init`` (observed ranges + 10 %).

Each fault goes into 2 episodes (``drift``: all of them, growing; ``near_duplicate``: 2 episodes replaced
by others). Then on every fixture and on the clean datasets it runs our validate (the library call
``validate_dataset(cfg, dry_run=None)`` with params.yaml's thresholds: validation without the dry run),
``lerobot-doctor check --json`` and ``lelint check --no-video --json``, the peers installed in their own
venv (``--peers-venv``, created here with pip: lerobot-doctor 0.2.0, lerobot-lint 0.1.1, which pulls its
own LeRobot) and never in the runtime lock.

A cell of the matrix: ``named k/n``: a finding new against the clean run (same tool, check, episode,
joint), of a kind that names the fault (``NAMES``), in k of the n planted episodes (``drift``: the
session; a finding without an episode names it; ``near_duplicate``: the copies or their sources);
``incidental``: a new finding of another kind in a planted episode, or a new finding without an episode;
``missed``: nothing new there. Errors and warnings count, lint's info findings do not. The false alarms
are each tool's errors and warnings on the clean datasets. Times: ours is the in-process call (after one
untimed warm-up call), the peers their CLI's wall time (interpreter start and imports included: lint
imports torch and LeRobot).

    python benchmarks/data_quality.py [--tools ours,doctor,lint] [--seed 0] [--fixtures-dir DIR]
                                      [--faults a,b] [--datasets demo,bimanual] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.faults import FAULT_KINDS, FaultError, plant_fault

REPO = Path(__file__).resolve().parents[1]
PEERS = {"lerobot-doctor": "0.2.0", "lerobot-lint": "0.1.1"}
TOOLS = ("ours", "doctor", "lint")
EPISODES_PER_FAULT = 2
SESSION_FAULTS = {"drift"}  # a fault of the session: a finding without an episode names it

#: per tool, the finding kinds that name each fault (ours: check names; lint: check ids; doctor: the kinds
#: parse_doctor gives its messages)
NAMES: dict[str, dict[str, set[str]]] = {
    "ours": {
        "frozen_state": {"frozen_state"}, "dead_joint": {"static_joints", "saturation"},
        "state_not_following": {"state_follows_action"}, "saturation": {"saturation"},
        "saturation_action": {"saturation"}, "glitch": {"glitches"}, "wraparound": {"glitches", "wraparound"},
        "idle_ends": {"idle_ends"}, "action_is_state": {"action_is_state"}, "action_lag": {"action_lag"},
        "scale_mismatch": {"scale_mismatch"}, "near_duplicate": {"near_duplicate_episodes", "duplicate_episodes"},
        "drift": {"drift"},
    },
    "lint": {
        "frozen_state": {"FROZEN_STATE"}, "dead_joint": {"DEAD_JOINT"},
        "state_not_following": {"ACTION_STATE_DIVERGENCE", "DEAD_JOINT"}, "saturation": {"SATURATED_JOINT"},
        "saturation_action": {"SATURATED_JOINT"}, "glitch": {"JITTER", "DISCONTINUITY"},
        "wraparound": {"DISCONTINUITY", "JITTER"},
    },
    "doctor": {
        "dead_joint": {"stuck_actuator", "constant_dimension", "zero_variance"},
        "state_not_following": {"stuck_actuator", "constant_dimension"},
        "saturation": {"clipping"}, "saturation_action": {"clipping"}, "glitch": {"action_jumps", "outliers"},
        "wraparound": {"action_jumps", "outliers"}, "idle_ends": {"frozen_actions"},
        "near_duplicate": {"near_duplicate"}, "drift": {"distribution_shift"},
    },
}


# ----------------------------------------------------------------------------- the peers' environment
def ensure_peers(venv: Path) -> dict[str, str]:
    """The benchmark venv with the peers (created with pip on first use); their installed versions."""
    if not (venv / "bin" / "lelint").exists() or not (venv / "bin" / "lerobot-doctor").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                        *(f"{name}=={version}" for name, version in PEERS.items())], check=True)
    names = [*PEERS, "lerobot"]
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {names!r}}}))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def peer_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "NO_COLOR": "1", "COLUMNS": "200"}


# ----------------------------------------------------------------------------- the datasets
def demo_source(params: dict, fixtures: Path) -> tuple[Path, Path]:
    """params.yaml's dataset and contract; the demo is built under ``fixtures`` when the root is absent."""
    root, contract = REPO / params["dataset"]["root"], REPO / params["dataset"]["contract"]
    if not (root / "meta" / "info.json").is_file():
        from vla_pipeline.data.demo import DemoConfig, make_demo_dataset

        root = fixtures / "source" / "demo"
        if not (root / "meta" / "info.json").is_file():
            make_demo_dataset(replace(DemoConfig.from_params(params), root=root))
    return root, contract


BI_MOTORS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
BI_NAMES = tuple(f"{side}_{m}.pos" for side in ("left", "right") for m in BI_MOTORS)
BI_CAMERAS = ("observation.images.top", "observation.images.right_wrist")
BI_TASK = "hand the cube from the left gripper to the right one"
BI_BOX = np.array([[-60, 60], [-70, 40], [-40, 80], [-70, 70], [-100, 100]], dtype=float)  # waypoints (deg)
BI_VERSION = "5"
FPS = 30
HAND_SPEED = 240.0  # deg/s: the leader's fastest minimum-jerk peak (an operator's quick move)
SERVO_SPEED = 270.0  # deg/s: an STS3215's no-load speed (0.222 s / 60 deg at 7.4 V), the follower's limit  # bumped when the recording changes: rebuilt then
TICK = 360.0 / 4096  # a 12-bit encoder's step, degrees


def _min_jerk(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    tau = np.linspace(0.0, 1.0, n)[:, None]
    return a + (b - a) * (10 * tau**3 - 15 * tau**4 + 6 * tau**5)


def _leader_arm(rng: np.random.Generator, n: int, fps: int, home: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(n, 6) leader positions: a rest at the session's home pose (within a degree), 3-5 minimum-jerk moves
    between drawn waypoints with dwells, back home; the gripper open, closed (squeezing) from the first dwell
    to the last move's start, open again."""
    rest = home + rng.uniform(-1, 1, len(home))
    k = int(rng.integers(3, 6))
    head, tail = (int(rng.uniform(0.2, 0.5) * fps) for _ in range(2))
    dwell = rng.integers(4, 16, k)
    moves = np.diff(np.round(np.linspace(0, n - head - tail - dwell.sum(), k + 1)).astype(int))
    reach = moves.min() * HAND_SPEED / fps / 1.875 / 2  # waypoints this near home: no move's peak beyond HAND_SPEED
    poses = [rest, *(np.clip(rng.uniform(BI_BOX[:, 0], BI_BOX[:, 1]), rest - reach, rest + reach)
                     for _ in range(k - 1)), rest]
    parts = [np.repeat(rest[None], head, axis=0)]
    for i in range(k):
        parts += [_min_jerk(poses[i], poses[i + 1], moves[i]), np.repeat(poses[i + 1][None], dwell[i], axis=0)]
    arm = np.concatenate([*parts, np.repeat(rest[None], tail, axis=0)])[:n]
    grasp, release = head + moves[0], n - tail - dwell[-1] - moves[-1]
    opening, squeeze = rng.uniform(60, 90), rng.uniform(0, 8)
    gripper = np.full(n, opening)
    ramp = min(10, max(1, (release - grasp) // 3))
    gripper[grasp: release] = squeeze
    gripper[grasp: grasp + ramp] = np.linspace(opening, squeeze, ramp)
    gripper[release: release + ramp] = np.linspace(squeeze, opening, len(gripper[release: release + ramp]))
    walk = np.vstack([np.zeros((1, 5)), np.cumsum(rng.normal(0, 0.4, (n + 9, 5)), axis=0)])
    tremor = ((walk[9:] - walk[:-9]) / 9)[:n]  # a hand's tremor: white noise through a 9-frame average
    gripper = gripper + np.convolve(rng.normal(0, 0.3, n + 4), np.ones(5) / 5, "valid")[:n]  # the trigger, too
    return np.column_stack([arm + tremor, np.clip(gripper, 0, 100)]), (grasp, release)


def _follower(rng: np.random.Generator, action: np.ndarray, hold: tuple[int, int], delay: int) -> np.ndarray:
    """The follower: the action ``delay`` frames earlier through a first-order lag at most the servos' speed,
    sensor noise, and a gripper the object stops from the grasp until the command opens past it again."""
    target = np.concatenate([np.repeat(action[:1], delay, axis=0), action[:-delay]])
    state = np.empty_like(action)
    state[0] = action[0]
    step = np.array([SERVO_SPEED / FPS] * 5 + [100.0 / 0.5 / FPS])  # the servos' top speed (gripper: 0.5 s)
    grasp, release, width = hold[0] + delay, hold[1] + delay, rng.uniform(18, 30)
    for t in range(1, len(action)):
        state[t] = state[t - 1] + np.clip(0.6 * (target[t] - state[t - 1]), -step, step)
        if grasp <= t and (t < release or target[t, 5] < width):
            state[t, 5] = max(state[t, 5], width)
    return state + rng.normal(0, 0.05, state.shape)


def _ticks(values: np.ndarray) -> np.ndarray:
    """Arm joints to whole encoder ticks, the gripper (percent) to 0.1."""
    out = values.copy()
    out[:, :5] = np.round(out[:, :5] / TICK) * TICK
    out[:, 5] = np.clip(np.round(out[:, 5], 1), 0, 100)
    return out


def bimanual_episode(rng: np.random.Generator, n: int, fps: int, homes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) action and state of both arms, left then right, each trailing by its own 1-3 frames."""
    actions, states = [], []
    for home in homes:
        action, hold = _leader_arm(rng, n, fps, home)
        states.append(_ticks(_follower(rng, action, hold, int(rng.integers(1, 4)))))
        actions.append(_ticks(action))
    return np.concatenate(actions, axis=1).astype(np.float32), np.concatenate(states, axis=1).astype(np.float32)


def _camera(state: np.ndarray, camera: int, t: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A gradient that moves with time and with the arm (a camera never shows one picture twice in a row)."""
    ys, xs = np.mgrid[0:h, 0:w]
    level = (4 * xs + 4 * ys + 3 * t + int(state[6 * camera] + state[6 * camera + 1])) % 200 + 30
    return (level[..., None] * np.array([1.0, 0.5 + 0.3 * camera, 0.3])).astype(np.uint8)


def write_bimanual(root: Path, seed: int, episodes: int = 12, fps: int = FPS) -> Path:
    """The bimanual recording, written with LeRobot's ``create`` / ``add_frame`` / ``save_episode``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vector = {"dtype": "float32", "shape": (len(BI_NAMES),), "names": list(BI_NAMES)}
    features = {"observation.state": dict(vector), "action": dict(vector)}
    features |= {k: {"dtype": "video", "shape": (24, 32, 3), "names": ["height", "width", "channels"]}
                 for k in BI_CAMERAS}
    dataset = LeRobotDataset.create(repo_id="bench/bimanual", fps=fps, root=root, robot_type="bi_so101_follower",
                                    features=features, use_videos=True)
    homes = rng.uniform(BI_BOX[:, 0] * 0.3, BI_BOX[:, 1] * 0.3, (2, len(BI_BOX)))  # each arm's home pose
    try:
        for n in rng.integers(150, 271, episodes):
            action, state = bimanual_episode(rng, int(n), fps, homes)
            for t in range(int(n)):
                frame = {"observation.state": state[t], "action": action[t], "task": BI_TASK}
                dataset.add_frame(frame | {k: _camera(state[t], c, t) for c, k in enumerate(BI_CAMERAS)})
            dataset.save_episode()
    finally:
        dataset.finalize()
    return root


def bimanual_source(fixtures: Path, seed: int) -> tuple[Path, Path]:
    """The bimanual recording (written once per seed) and its contract from `vla contract init`."""
    from vla_pipeline.data.contract_init.config import InitConfig
    from vla_pipeline.data.contract_init.starter import init_contract

    root, contract, stamp = (fixtures / "source" / n for n in ("bimanual", "bimanual.yaml", "bimanual.seed"))
    if not stamp.is_file() or stamp.read_text() != f"{seed}:{BI_VERSION}" or not contract.is_file():
        write_bimanual(root, seed)
        init_contract(InitConfig(root, contract, force=True))
        stamp.write_text(f"{seed}:{BI_VERSION}")
    return root, contract


# ----------------------------------------------------------------------------- the fixtures
def _lengths(root: Path) -> dict[int, int]:
    import pyarrow.parquet as pq

    meta = pq.read_table(sorted((root / "meta" / "episodes").glob("*/*.parquet"))[0], columns=["episode_index",
                                                                                             "length"])
    return dict(zip(meta["episode_index"].to_pylist(), meta["length"].to_pylist(), strict=True))


def candidates(kind: str, lengths: dict[int, int], rng: np.random.Generator) -> list[int]:
    """The episodes to try for ``kind``, in the order to try them: idle ends the longer half (a few
    seconds must fit), near duplicates all but the two longest (a source must be as long), else any."""
    order = sorted(lengths, key=lambda e: (-lengths[e], e))
    pool = {"idle_ends": order[: max(2, len(order) // 2)], "near_duplicate": order[2:]}.get(kind, order)
    return [int(e) for e in rng.permutation(pool)]


def plant(root: Path, kind: str, contract, rng: np.random.Generator) -> dict:
    """Plant ``kind`` into the fixture at ``root``: all episodes for drift, else 2 (a candidate the fault
    cannot go into, such as a wraparound with no room in the range, is passed over)."""
    lengths = _lengths(root)
    if kind in ("drift", "near_duplicate"):
        episodes = sorted(lengths) if kind == "drift" else candidates(kind, lengths, rng)[:EPISODES_PER_FAULT]
        return plant_fault(root, kind, episodes, contract, rng)
    done: list[dict] = []
    for e in candidates(kind, lengths, rng):
        with contextlib.suppress(FaultError):
            done += plant_fault(root, kind, [e], contract, rng)["planted"]
        if len(done) == EPISODES_PER_FAULT:
            break
    return {"kind": kind, "episodes": sorted(r["episode"] for r in done), "planted": done}


def build_fixtures(name: str, source: Path, contract_path: Path, faults: list[str], fixtures: Path,
                   seed: int) -> dict[str, dict]:
    """``fixtures/name/<fault>``: a copy of ``source`` with the fault planted (``planted.json`` beside it)."""
    contract = load_contract(contract_path)
    out = {}
    for i, kind in enumerate(faults):
        root = fixtures / name / kind
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root)
        out[kind] = plant(root, kind, contract, np.random.default_rng([seed, i]))
        (fixtures / name / f"{kind}.planted.json").write_text(json.dumps(out[kind], indent=1))
    return out


# ----------------------------------------------------------------------------- the tools
def finding(kind: str, severity: str, episode, joint=None, message: str = "") -> dict:
    return {"kind": kind, "severity": severity, "episode": None if episode is None else int(episode),
            "joint": joint, "message": message[:300]}


def run_ours(root: Path, contract: Path, params: dict, work: Path) -> list[dict]:
    """`vla validate` without its dry run: the library call with params.yaml's thresholds."""
    from vla_pipeline.errors import ValidationError
    from vla_pipeline.validate.config import ValidateConfig
    from vla_pipeline.validate.run import validate_dataset

    report = work / "ours.json"
    cfg = replace(ValidateConfig.from_params(params), dataset_root=root, contract_path=contract, report_path=report,
                  exclude_episodes=())
    with contextlib.suppress(ValidationError):
        validate_dataset(cfg, dry_run=None)
    data = json.loads(report.read_text())
    return [finding(f["check"], severity, f.get("episode"), f.get("key"), f["message"])
            for severity, items in (("error", data["errors"]), ("warning", data["warnings"])) for f in items]


#: lerobot-doctor's messages -> a kind (first match wins); the episodes are read from the message
DOCTOR_KINDS = (
    ("consecutive identical actions", "frozen_actions"), ("frozen (consecutive identical)", "frozen_actions"),
    ("action jump", "action_jumps"), ("clipping detected", "clipping"), ("of values at m", "clipping"),
    ("stuck/static", "stuck_actuator"), ("near-duplicate", "near_duplicate"),
    ("distribution shift", "distribution_shift"), ("constant dimension", "constant_dimension"),
    ("dimensions constant", "constant_dimension"), ("zero variance", "zero_variance"),
    ("extreme outlier", "outliers"), ("chunk_size", "short_episodes"), ("too short", "short_episodes"),
    ("shorter than", "short_episodes"), ("dropped frame", "dropped_frames"), ("timestamp", "timestamps"),
    ("NaN", "nan"), ("Inf", "nan"),
)
DOCTOR_SKIP = re.compile(r"^\d+/\d+ episode\(s\) flagged$|^\.\.\.and \d+ more")


def _doctor_kind(text: str, check: str) -> str:
    return next((kind for key, kind in DOCTOR_KINDS if key in text), f"other:{check}")


def parse_doctor(report: dict) -> list[dict]:
    """lerobot-doctor's WARN/FAIL messages as findings: a per-episode line ("Episode 3: a; b") gives one
    finding per reason; pairs "(a, b)" give both episodes; a message without an episode gives none."""
    out = []
    for check in report["checks"]:
        for msg in check["messages"]:
            text, severity = msg["message"], {"WARN": "warning", "FAIL": "error"}.get(msg["severity"])
            if severity is None or DOCTOR_SKIP.search(text):
                continue
            per_episode = re.match(r"^Episode (\d+): (.*)$", text)
            if per_episode:
                out += [finding(_doctor_kind(reason, check["name"]), severity, per_episode.group(1), None, text)
                        for reason in per_episode.group(2).split("; ")]
                continue
            kind = _doctor_kind(text, check["name"])
            episodes = re.findall(r"[Ee]pisode (\d+)", text) or [
                e for pair in re.findall(r"\((\d+), (\d+)\)", text) for e in pair]
            joint = re.search(r"\[(\d+)\]", text)
            out += [finding(kind, severity, e, joint and joint.group(1), text) for e in (episodes or [None])]
    return out


def run_doctor(root: Path, venv: Path) -> list[dict]:
    proc = subprocess.run([str(venv / "bin" / "lerobot-doctor"), "check", str(root), "--json"], capture_output=True,
                          text=True, env=peer_env(), timeout=1800)
    try:
        return parse_doctor(json.loads(proc.stdout))
    except json.JSONDecodeError:
        return [finding("tool_failed", "error", None, None, proc.stderr[-300:] or proc.stdout[-300:])]


def run_lint(root: Path, venv: Path, work: Path) -> list[dict]:
    """``lelint check --no-video --json`` (auto profile and units, as a user runs it); the joint index it
    gives (a position in observation.state) becomes the name."""
    out = work / "lint.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run([str(venv / "bin" / "lelint"), "check", str(root), "--no-video", "--json", str(out)],
                          capture_output=True, text=True, env=peer_env(), timeout=3600)
    if not out.is_file():
        return [finding("tool_failed", "error", None, None, proc.stderr[-300:] or proc.stdout[-300:])]
    from vla_pipeline.data.tables import feature_names, load_info

    names = feature_names(load_info(root), "observation.state")
    found = json.loads(out.read_text())["findings"]
    return [finding(f["check"], f["severity"], f["episode"],
                    names[int(f["joint"])] if f["joint"] is not None and f["joint"].isdigit() else f["joint"],
                    f["message"]) for f in found]


def run_tool(tool: str, root: Path, contract: Path, ctx: dict) -> tuple[list[dict], float]:
    work = Path(tempfile.mkdtemp(prefix=f"dq-{tool}-", dir=ctx["fixtures"]))
    start = time.perf_counter()
    if tool == "ours":
        found = run_ours(root, contract, ctx["params"], work)
    elif tool == "doctor":
        found = run_doctor(root, ctx["venv"])
    else:
        found = run_lint(root, ctx["venv"], work)
    elapsed = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return found, elapsed


# ----------------------------------------------------------------------------- scoring
ALARMS = ("error", "warning")


def _signature(f: dict) -> tuple:
    return f["kind"], f["episode"], f["joint"]


def score(tool: str, fault: str, planted: dict, found: list[dict], clean: list[dict]) -> dict:
    """The cell of ``tool`` for ``fault`` (see the module docstring) and the new findings behind it."""
    base = {_signature(f) for f in clean}
    new = [f for f in found if f["severity"] in ALARMS and _signature(f) not in base]
    names = NAMES.get(tool, {}).get(fault, set())
    related = {e for r in planted["planted"] for e in (r["episode"], r.get("source")) if e is not None}
    right = [f for f in new if f["kind"] in names]
    if fault in SESSION_FAULTS:
        hit = any(f["episode"] is None or f["episode"] in related for f in right)
        named, total = int(hit), 1
    else:
        named = sum(any(f["episode"] in (r["episode"], r.get("source")) for f in right) for r in planted["planted"])
        total = len(planted["planted"])
    incidental = [f for f in new if f["episode"] is None or f["episode"] in related]
    cell = f"named {named}/{total}" if named else "incidental" if incidental else "missed"
    return {"cell": cell, "named": named, "of": total,
            "new_in_planted": sorted({(f["kind"], f["episode"]) for f in incidental}, key=str)[:20],
            "new_elsewhere": len(new) - len(incidental)}


def false_alarms(found: list[dict]) -> dict:
    counts = Counter(f["severity"] for f in found)
    kinds = Counter(f"{f['severity']}:{f['kind']}" for f in found if f["severity"] in ALARMS)
    return {"errors": counts["error"], "warnings": counts["warning"], "info": counts["info"], "by_kind": dict(kinds)}


# ----------------------------------------------------------------------------- the run
def run_dataset(name: str, source: Path, contract: Path, ctx: dict) -> dict:
    """Build ``name``'s fixtures, run every tool on the clean copy and on each fixture, score them."""
    fixtures, tools, faults = ctx["fixtures"], ctx["tools"], ctx["faults"]
    planted = build_fixtures(name, source, contract, faults, fixtures, ctx["seed"])
    clean_root = fixtures / name / "clean"
    shutil.rmtree(clean_root, ignore_errors=True)
    shutil.copytree(source, clean_root)
    out = {"planted": planted, "clean": {}, "cells": {}, "times": {t: [] for t in tools}}
    clean = {}
    if "ours" in tools and not ctx.get("warm"):  # imports and first-use set-up, outside the times
        run_tool("ours", clean_root, contract, ctx)
        ctx["warm"] = True
    for tool in tools:
        clean[tool], elapsed = run_tool(tool, clean_root, contract, ctx)
        out["clean"][tool] = {**false_alarms(clean[tool]), "seconds": round(elapsed, 2)}
        print(f"[{name}] clean {tool}: {out['clean'][tool]}", file=sys.stderr, flush=True)
    for kind in faults:
        out["cells"][kind] = {}
        for tool in tools:
            found, elapsed = run_tool(tool, fixtures / name / kind, contract, ctx)
            out["times"][tool].append(round(elapsed, 2))
            out["cells"][kind][tool] = score(tool, kind, planted[kind], found, clean[tool])
            print(f"[{name}] {kind} {tool}: {out['cells'][kind][tool]['cell']} ({elapsed:.1f} s)", file=sys.stderr,
                  flush=True)
    return out


def print_report(results: dict, tools: list[str]) -> None:
    width = max(len(f"{k} @ {d}") for d, r in results.items() for k in r["cells"]) + 2
    print("\nDetection matrix (named k/n: the fault's kind in k of n planted episodes; incidental; missed)")
    print("".ljust(width) + "".join(t.ljust(16) for t in tools))
    for dataset, r in results.items():
        for kind, cells in r["cells"].items():
            print(f"{kind} @ {dataset}".ljust(width) + "".join(cells[t]["cell"].ljust(16) for t in tools))
    cells = [(t, r["cells"][k][t]) for r in results.values() for k in r["cells"] for t in tools]
    print("\nNamed: " + "; ".join(
        f"{t} {sum(c['named'] > 0 for u, c in cells if u == t)}/{sum(u == t for u, _ in cells)} fixtures, "
        f"{sum(c['named'] for u, c in cells if u == t)}/{sum(c['of'] for u, c in cells if u == t)} planted "
        f"episodes (or sessions)" for t in tools))
    print("\nFalse alarms on the clean datasets (errors / warnings; lint's info findings apart)")
    for dataset, r in results.items():
        for tool in tools:
            c = r["clean"][tool]
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(c["by_kind"].items(), key=lambda kv: -kv[1]))
            print(f"  {dataset:9s} {tool:7s} {c['errors']:3d} / {c['warnings']:3d}  {kinds[:300]}")
    print("\nWall time per run (s): clean run; mean and total over the fault fixtures")
    for dataset, r in results.items():
        for tool in tools:
            times = r["times"][tool]
            print(f"  {dataset:9s} {tool:7s} clean {r['clean'][tool]['seconds']:6.2f}   fixtures mean "
                  f"{np.mean(times) if times else 0:6.2f}  total {sum(times):7.1f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures-dir", type=Path, default=None, help="where the fixtures go (default: a temp dir)")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: ours,doctor,lint")
    p.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated fault classes")
    p.add_argument("--datasets", default="demo,bimanual", help="comma-separated: demo,bimanual")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers-venv", type=Path, default=REPO / "benchmarks" / ".peers-venv")
    p.add_argument("--out", type=Path, default=None, help="the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools, faults = args.tools.split(","), args.faults.split(",")
    unknown = sorted(set(tools) - set(TOOLS)) + sorted(set(faults) - set(FAULT_KINDS))
    if unknown:
        raise SystemExit(f"unknown tools or faults: {unknown}")
    fixtures = (args.fixtures_dir or Path(tempfile.mkdtemp(prefix="data-quality-"))).resolve()
    fixtures.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    versions = ensure_peers(args.peers_venv) if {"doctor", "lint"} & set(tools) else {}
    ctx = {"fixtures": fixtures, "tools": tools, "faults": faults, "seed": args.seed, "params": params,
           "venv": args.peers_venv}
    sources = {"demo": lambda: demo_source(params, fixtures), "bimanual": lambda: bimanual_source(fixtures, args.seed)}
    results = {name: run_dataset(name, *sources[name](), ctx) for name in args.datasets.split(",")}
    print(f"\nlerobot-doctor {versions.get('lerobot-doctor', '-')}, lerobot-lint {versions.get('lerobot-lint', '-')} "
          f"(LeRobot {versions.get('lerobot', '-')} in {args.peers_venv}); fixtures in {fixtures}; seed {args.seed}")
    print_report(results, tools)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seed": args.seed, "versions": versions, "tools": tools,
                                        "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
