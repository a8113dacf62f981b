"""Each validation check on a dataset view built in memory (no files unless the check reads one):
which rows, episodes and joints it blames, what it leaves alone (a value on a limit, another
episode, an excluded key), and the finding it records, message included. tests/validate/test_validate.py
and tests/e2e/test_realdata.py run the checks through `validate` on datasets on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vla_pipeline.data.contract import Contract
from vla_pipeline.data.tables import Frames
from vla_pipeline.validate.checks_meta import (
    check_codebase,
    check_contract_keys,
    check_exclusions,
    check_feature_names,
    check_features_in_data,
    check_fps,
    required_keys,
)
from vla_pipeline.validate.checks_tables import (
    check_episode_bounds,
    check_frame_index,
    check_global_index,
    check_tasks,
    check_timestamps,
)
from vla_pipeline.validate.checks_vectors import (
    CALIBRATION_SAMPLES,
    _vector_keys,
    check_action_jumps,
    check_calibration,
    check_duplicate_episodes,
    check_finite,
    check_ranges,
    check_sequence_length,
    check_short_episodes,
    check_static_joints,
    check_vector_shape,
)
from vla_pipeline.validate.findings import Finding, Findings, View, episode_starts, episodes_of

NAMES = ("x.vel", "elbow", "wrist", "gripper")
JOINTS = ("elbow", "gripper")  # at dataset positions 1 and 3
FRONT = "observation.images.front"
FPS = 10
LERKEYS = ("index", "episode_index", "frame_index", "timestamp", "task_index")


def make_contract(**changes) -> Contract:
    values = dict(name="arm", action_key="action", state_key="observation.state", cameras={"front": FRONT},
                  joints=JOINTS, ranges={}, fps=FPS, timestamp_tolerance_s=0.001)
    values.update(changes)
    return Contract(**values)


def make_info(names: tuple[str, ...] = NAMES, **changes) -> dict:
    vector = {"dtype": "float32", "shape": [len(names)], "names": list(names)}
    info = {"codebase_version": "v3.0", "fps": FPS, "features": {
        "action": dict(vector), "observation.state": dict(vector),
        FRONT: {"dtype": "video", "shape": [8, 8, 3], "names": ["height", "width", "channels"]},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in LERKEYS}}}
    info.update(changes)
    return info


def make_frames(actions: list[np.ndarray], states: list[np.ndarray] | None = None) -> Frames:
    """Episode e's rows are ``actions[e]`` (its state defaults to its action), frame i at i / FPS."""
    states = actions if states is None else states
    episode = np.concatenate([np.full(len(a), e) for e, a in enumerate(actions)])
    frame = np.concatenate([np.arange(len(a)) for a in actions])
    n = len(episode)
    scalars = {"index": np.arange(n), "episode_index": episode, "frame_index": frame,
               "timestamp": (frame / FPS).astype(np.float32), "task_index": np.zeros(n, dtype=np.int64)}
    vectors = {"action": np.concatenate(actions).astype(np.float64),
               "observation.state": np.concatenate(states).astype(np.float64)}
    lengths = {k: np.full(n, v.shape[1]) for k, v in vectors.items()}
    return Frames(n, set(scalars) | set(vectors), scalars, vectors, lengths)


def make_episodes(lengths: list[int]) -> dict[str, np.ndarray]:
    to = np.cumsum(lengths)
    return {"episode_index": np.arange(len(lengths)), "dataset_from_index": to - np.array(lengths),
            "dataset_to_index": to, "length": np.array(lengths)}


def ramp(n: int, start: float = 0.0, step: float = 1.0) -> np.ndarray:
    """n frames of 4 dims, every dim moving by ``step`` per frame (no joint static, no jump above 1)."""
    t = start + step * np.arange(n, dtype=float)
    return np.stack([t, t + 10, t + 20, t + 30], axis=1)


def make_view(actions: list[np.ndarray] | None = None, states: list[np.ndarray] | None = None, root: Path = Path("ds"),
              contract: Contract | None = None, info: dict | None = None, **kw) -> View:
    actions = actions if actions is not None else [ramp(5), ramp(4, 100.0), ramp(6, 200.0)]
    frames = make_frames(actions, states)
    return View(root, info or make_info(), contract or make_contract(), frames=frames,
                episodes=make_episodes([len(a) for a in actions]), tasks={0: "reach"}, **kw)


def run(check, view: View) -> Findings:
    out = Findings()
    check(view, out)
    return out


# ----------------------------------------------------------------------------- the view and findings
def test_findings_hold_plain_python_values() -> None:
    out = Findings()
    out.error("c", "m", episode=np.int64(3), value=np.float32(1.5), expected=[1, 2])
    out.warn("w", "n", frame=np.int32(4), key="k")
    assert out.errors == [Finding("c", "m", episode=3, value=1.5, expected=[1, 2])]
    assert out.warnings == [Finding("w", "n", frame=4, key="k")]
    assert type(out.errors[0].episode) is int and type(out.errors[0].value) is float
    assert type(out.warnings[0].frame) is int


def test_view_helpers() -> None:
    view = make_view()
    assert view.dt == pytest.approx(0.1)
    assert view.names("action") == list(NAMES)
    assert view.joint_positions("action") == [1, 3]
    view.info["features"]["action"]["names"] = ["x.vel", "elbow"]
    assert view.joint_positions("action") is None  # a joint is missing
    assert View(Path("r"), make_info(), make_contract()).min_episode_length == 1


def test_episode_runs() -> None:
    frames = make_frames([ramp(2), ramp(3), ramp(1)])
    starts, run_of = episode_starts(frames)
    assert starts.tolist() == [0, 2, 5] and run_of.tolist() == [0, 0, 1, 1, 1, 2]
    assert episodes_of(frames, np.array([4, 0, 3, 1])) == [0, 1]


# ----------------------------------------------------------------------------- meta and keys
def test_codebase_other_than_v30_is_an_error_with_the_conversion_hint(tmp_path) -> None:
    from vla_pipeline.data.convert import format_conversion_hint

    assert run(check_codebase, make_view(root=tmp_path)).errors == []
    info = make_info(codebase_version="v2.1")
    out = run(check_codebase, make_view(root=tmp_path, info=info))
    assert out.errors == [Finding("codebase", format_conversion_hint(tmp_path), key="codebase_version", value="v2.1",
                                  expected="v3.0")]
    del info["codebase_version"]
    assert run(check_codebase, make_view(root=tmp_path, info=info)).errors[0].value is None


def test_fps_must_be_the_contracts() -> None:
    assert run(check_fps, make_view()).errors == []
    out = run(check_fps, make_view(info=make_info(fps=15)))
    assert out.errors == [Finding("fps", "meta/info.json: fps 15 but contract 'arm' says 10; re-record, resample, or "
                                         "use a contract with the dataset's fps", key="fps", value=15, expected=10)]


def test_required_keys_name_every_role() -> None:
    c = make_contract(cameras={"front": FRONT, "wrist": "cam.w"})
    assert required_keys(c) == {"action": "action", "state": "observation.state", "camera 'front'": FRONT,
                                "camera 'wrist'": "cam.w"}


def test_contract_keys_must_exist_with_a_camera_and_a_state() -> None:
    from vla_pipeline.data.contract_init.roles import format_feature_roles, format_keys_block

    assert run(check_contract_keys, make_view()).errors == []
    info = make_info()
    roles = format_feature_roles(info)
    out = run(check_contract_keys, make_view(contract=make_contract(cameras={}, state_required=False), info=info))
    assert out.errors == [
        Finding("contract_keys", f"contract 'arm' maps no camera (keys.cameras is empty): Pi0.5 needs at least one "
                                 f"camera image; map one or more of the dataset's cameras:\n{roles}", key="keys.cameras"),
        Finding("contract_keys", "contract 'arm' sets state_required: false, but Pi0.5 tokenizes the state into its "
                                 "prompt; map keys.state and set state_required: true", key="state_required")]
    c = make_contract(action_key="actions", cameras={"front": FRONT, "top": "cam.top"})
    out = run(check_contract_keys, make_view(contract=c, info=info))
    assert out.errors == [Finding(
        "contract_keys", f"contract 'arm' does not fit this dataset: it names action 'actions', camera 'top' 'cam.top', "
                         f"which the dataset does not have. The dataset's features:\n{roles}\nMap them in the contract "
                         f"(dataset.contract), e.g.:\n{format_keys_block(info)}\nor write a starter contract: vla "
                         f"contract init ds --out contracts/NAME.yaml",
        key="actions", value=sorted(info["features"]), expected=["actions", "cam.top"])]


def test_declared_features_must_be_in_the_data() -> None:
    info = make_info()
    info["features"]["extra"] = {"dtype": "float32", "shape": [1], "names": None}
    info["features"]["still"] = {"dtype": "image", "shape": [8, 8, 3], "names": None}
    view = make_view(info=info)
    view.frames.columns.discard("observation.state")
    assert run(check_features_in_data, view).errors == [
        Finding("features_in_data", f"feature '{k}' is declared in meta/info.json but no data parquet file has that "
                                    f"column; rewrite the data files or fix info.json", key=k)
        for k in ("observation.state", "extra")]


def test_feature_names_shape_and_joint_order() -> None:
    assert run(check_feature_names, make_view()).errors == []
    info = make_info()
    info["features"]["action"]["shape"] = "four"
    info["features"]["observation.state"]["shape"] = [5]
    assert run(check_feature_names, make_view(info=info)).errors == [
        Finding("feature_names", "meta/info.json: 'action' has shape 'four'; a vector feature needs [n_dims]",
                key="action", value="four", expected=[4]),
        Finding("feature_names", "meta/info.json: 'observation.state' has shape [5] but 4 names",
                key="observation.state", value=4, expected=5)]
    info = make_info()
    info["features"]["action"]["shape"] = [4, 1]
    assert run(check_feature_names, make_view(info=info)).errors[0].message.startswith(
        "meta/info.json: 'action' has shape [4, 1]; a vector feature")


def test_feature_names_checks_the_state_whatever_the_action() -> None:
    info = make_info()
    info["features"]["action"]["names"] = ["x.vel", "elbow", "wrist", "grip"]
    info["features"]["observation.state"]["names"] = ["gripper", "x.vel", "wrist", "elbow"]
    assert [(f.key, f.message.split(";")[0]) for f in run(check_feature_names, make_view(info=info)).errors] == [
        ("action", "contract 'arm': joint 'gripper' is not among the dataset's names for 'action': ['x.vel', 'elbow', "
                   "'wrist', 'grip']"),
        ("observation.state", "'observation.state' holds the contract's joints in another order: ['gripper', 'elbow']")]
    del info["features"]["action"]
    assert [f.key for f in run(check_feature_names, make_view(info=info)).errors] == ["observation.state"]


def test_feature_names_missing_and_reordered_joints() -> None:
    info = make_info()
    info["features"]["action"]["names"] = ["x.vel", "elbow", "wrist", "grip"]
    del info["features"]["observation.state"]  # an absent key is contract_keys' business
    out = run(check_feature_names, make_view(info=info))
    assert out.errors == [Finding(
        "feature_names", "contract 'arm': joint 'gripper' is not among the dataset's names for 'action': ['x.vel', "
                         "'elbow', 'wrist', 'grip']; did you mean 'grip'? Fix the contract's joints, or use the "
                         "contract for this robot (dataset.contract)",
        key="action", value=["x.vel", "elbow", "wrist", "grip"], expected=["elbow", "gripper"])]
    info = make_info()
    info["features"]["observation.state"]["names"] = ["gripper", "x.vel", "wrist", "elbow"]
    out = run(check_feature_names, make_view(info=info))
    assert out.errors == [Finding(
        "feature_names", "'observation.state' holds the contract's joints in another order: ['gripper', 'elbow']; the "
                         "contract expects ['elbow', 'gripper']; check which convention the recording used",
        key="observation.state", value=["gripper", "elbow"], expected=["elbow", "gripper"])]


# ----------------------------------------------------------------------------- indices and episodes
def test_global_index_must_run_from_zero() -> None:
    assert run(check_global_index, make_view()).errors == []
    view = make_view()
    view.frames.scalars["index"] = np.r_[np.arange(6), 60, 61, 8, 9, np.arange(10, 15)]
    assert run(check_global_index, view).errors == [Finding(
        "global_index", "data: global 'index' is not contiguous 0..14: row 6 has 60", episode=1, value=60, expected=6)]


def test_episode_bounds_in_meta_and_data() -> None:
    view = make_view()
    assert run(check_episode_bounds, view).errors == []
    meta = view.episodes
    meta["episode_index"] = np.array([0, 1, 3])
    meta["length"] = np.array([5, 3, 6])
    meta["dataset_from_index"] = np.array([0, 5, 10])
    out = run(check_episode_bounds, view)
    assert out.errors == [
        Finding("episode_bounds", "meta/episodes: episode indices are not 0..2 (gap before 3)", episode=3, value=3,
                expected=2),
        Finding("episode_bounds", "meta/episodes: episode 1 has length 3 but spans [5, 9)", episode=1, value=4,
                expected=3),
        Finding("episode_bounds", "meta/episodes: episode 3 has length 6 but spans [10, 15)", episode=3, value=5,
                expected=6),
        Finding("episode_bounds", "meta/episodes: gap between episodes 1 and 3", episode=3, value=10, expected=9),
        Finding("episode_bounds", "episode 1: meta/episodes says 3 frames, the data parquet has 4; the files "
                                  "disagree: re-export the episode or exclude it", episode=1, value=4, expected=3),
        Finding("episode_bounds", "episode 3: meta/episodes says 6 frames, the data parquet has 0; the files "
                                  "disagree: re-export the episode or exclude it", episode=3, value=0, expected=6),
        Finding("episode_bounds", "episode 2 has data rows but no meta/episodes entry", episode=2)]


def test_a_meta_episode_without_rows_is_counted_as_zero_frames() -> None:
    view = make_view()
    for k, v in {"episode_index": 3, "dataset_from_index": 15, "dataset_to_index": 16, "length": 1}.items():
        view.episodes[k] = np.r_[view.episodes[k], v]
    assert run(check_episode_bounds, view).errors == [Finding(
        "episode_bounds", "episode 3: meta/episodes says 1 frames, the data parquet has 0; the files disagree: "
                          "re-export the episode or exclude it", episode=3, value=0, expected=1)]
    view.episodes["dataset_to_index"][3] = view.episodes["length"][3] = 0
    view.episodes["dataset_from_index"][3] = 15
    view.episodes["dataset_to_index"][3] = 15
    assert run(check_episode_bounds, view).errors == []  # an empty episode in meta and in the data


def test_overlapping_episodes() -> None:
    view = make_view()
    view.episodes["dataset_from_index"] = np.array([0, 4, 9])
    view.episodes["length"] = np.array([5, 5, 6])
    out = run(check_episode_bounds, view)
    assert [f.message for f in out.errors] == [
        "meta/episodes: overlap between episodes 0 and 1",
        "episode 1: meta/episodes says 5 frames, the data parquet has 4; the files disagree: re-export the episode or "
        "exclude it"]
    assert (out.errors[0].episode, out.errors[0].value, out.errors[0].expected) == (1, 4, 5)


def test_exclusions_must_exist_and_leave_two_episodes() -> None:
    assert run(check_exclusions, make_view(exclude_episodes=(1,))).errors == []
    assert run(check_exclusions, make_view(exclude_episodes=(7, 1, 5))).errors == [Finding(
        "exclusions", "dataset.exclude_episodes names episodes [5, 7] that the dataset does not have (it has 3: 0..2); "
                      "remove them", value=[5, 7])]
    assert run(check_exclusions, make_view(exclude_episodes=(0, 1))).errors == [Finding(
        "exclusions", "1 episode left after dataset.exclude_episodes; a train/validation split needs at least 2",
        value=1, expected=2)]
    assert run(check_exclusions, make_view(exclude_episodes=(0, 1, 2))).errors == [Finding(
        "exclusions", "dataset.exclude_episodes excludes all 3 episodes: nothing is left to train on; fix the dataset "
                      "instead of excluding it", value=0, expected=2)]
    view = make_view(exclude_episodes=(4,))
    view.episodes["episode_index"] = np.array([], dtype=int)
    assert run(check_exclusions, view).errors[0].message.startswith(
        "dataset.exclude_episodes names episodes [4] that the dataset does not have (it has 0: 0..-1)")


def test_frame_index_restarts_at_zero_in_every_episode() -> None:
    assert run(check_frame_index, make_view()).errors == []
    view = make_view()
    view.frames.scalars["frame_index"] = np.r_[0, 1, 2, 3, 4, 0, 1, 1, 3, 0, 1, 2, 3, 4, 9]
    assert run(check_frame_index, view).errors == [
        Finding("frame_index", "episode 1: frame_index does not run 0..n-1 (row 7 has 1, expected 2): a dropped or "
                               "duplicated frame", episode=1, frame=2, value=1, expected=2),
        Finding("frame_index", "episode 2: frame_index does not run 0..n-1 (row 14 has 9, expected 5): a dropped or "
                               "duplicated frame", episode=2, frame=5, value=9, expected=5)]


# ----------------------------------------------------------------------------- timestamps
LEROBOT = ("LeRobot's own loader looks video frames up by these timestamps and fails beyond tolerance_s: {n} of {total} "
           "frames are more than 0.001s from frame_index/fps (up to {drift}s). This pipeline reads frame i of an "
           "episode at i/fps, so training and evaluation read the right frames; check that the videos hold one frame "
           "per row")


def test_timestamps_going_backwards_are_an_error() -> None:
    view = make_view()
    ts = view.frames.scalars["timestamp"].astype(np.float64)
    ts[7], ts[8] = ts[8], ts[7]  # episode 1, frames 2 and 3 swapped
    ts[5] = 0.0  # a new episode may start anywhere
    view.frames.scalars["timestamp"] = ts
    out = run(check_timestamps, view)
    assert out.errors == [Finding(
        "timestamps", "episode 1: timestamps not strictly increasing at frame 3 (0.30000s then 0.20000s): frames out of "
                      "order; exclude the episode or fix its timestamps", episode=1, frame=3,
        value=pytest.approx(-0.1), expected=pytest.approx(0.1))]
    assert [w.episode for w in out.warnings] == [1]  # the spacing around the swap is off too


def test_equal_timestamps_are_not_increasing() -> None:
    view = make_view()
    view.frames.scalars["timestamp"] = view.frames.scalars["timestamp"].astype(np.float64)
    view.frames.scalars["timestamp"][10] = view.frames.scalars["timestamp"][9]  # episode 2's frames 0 and 1
    assert [(f.episode, f.frame, f.value) for f in run(check_timestamps, view).errors] == [(2, 1, 0.0)]


def test_spacing_off_in_a_few_episodes_warns_per_episode() -> None:
    view = make_view(actions=[ramp(5), ramp(4), ramp(6), ramp(3)])
    ts = view.frames.scalars["timestamp"].astype(np.float64)
    ts[9:15] += 5.0  # episode 2 starts at 5 s (a recording's clock): the drift is measured from its first frame
    ts[11:15] += 0.05  # episode 2 stalls 50 ms before frame 2 (rows 11..14: frames 2..5)
    ts[14] += 0.003  # and a 3 ms late frame 5
    view.frames.scalars["timestamp"] = ts
    out = run(check_timestamps, view)
    assert out.errors == []
    assert out.warnings == [Finding(
        "timestamps", "episode 2: timestamps off 1/fps at 2 frames (worst at frame 2: spacing 0.15000s, expected "
                      "0.10000s +- 0.001s): a stall or a clock that drifts. "
        + LEROBOT.format(n=4, total=18, drift="0.053"), episode=2, frame=2, value=pytest.approx(0.15, abs=1e-6),
        expected=pytest.approx(0.1))]


def test_spacing_within_the_tolerance_is_no_finding() -> None:
    view = make_view()
    view.frames.scalars["timestamp"] = view.frames.scalars["timestamp"] + np.float32(0.0009) * (
        view.frames.scalars["frame_index"] % 2)
    assert run(check_timestamps, view).warnings == []


def test_a_wall_clock_in_most_episodes_is_one_dataset_warning() -> None:
    view = make_view(actions=[ramp(3), ramp(3), ramp(3)])
    view.frames.scalars["timestamp"] = np.array([0, 0.1, 0.2, 0, 0.12, 0.24, 0, 0.15, 0.3])
    out = run(check_timestamps, view)
    assert out.warnings == [Finding(
        "timestamps", "timestamps are not 1/fps = 0.1000s apart in 2 of 3 episodes: a wall clock, not frame_index/fps. "
                      "Frame spacing min 0.1000s, p5 0.1000s, median 0.1200s, p95 0.1500s, max 0.1500s. "
        + LEROBOT.format(n=4, total=9, drift="0.100"),
        value={"min": pytest.approx(0.1), "p5": pytest.approx(0.1), "median": pytest.approx(0.12),
               "p95": pytest.approx(0.15), "max": pytest.approx(0.15)}, expected=pytest.approx(0.1))]


def test_the_dataset_warning_gives_the_spacing_distribution() -> None:
    view = make_view(actions=[ramp(21), ramp(21), ramp(21)])
    gaps = 0.05 + 0.1 * np.arange(60) / 60  # every spacing different: 0.05 .. 0.148
    ts = np.concatenate([np.r_[0.0, np.cumsum(gaps[20 * e:20 * e + 20])] for e in range(3)])
    view.frames.scalars["timestamp"] = ts
    (warning,) = run(check_timestamps, view).warnings
    q = np.percentile(gaps, [0, 5, 50, 95, 100])
    assert len(set(np.round(q, 4))) == 5 and q[0] != np.percentile(gaps, 1) and q[4] != q[3]
    assert (f"Frame spacing min {q[0]:.4f}s, p5 {q[1]:.4f}s, median {q[2]:.4f}s, p95 {q[3]:.4f}s, max {q[4]:.4f}s. "
            in warning.message)
    assert warning.value == {"min": pytest.approx(q[0]), "p5": pytest.approx(q[1]), "median": pytest.approx(q[2]),
                             "p95": pytest.approx(q[3]), "max": pytest.approx(q[4])}
    assert [np.percentile(gaps, p) for p in (6, 51, 96)] != pytest.approx(q[1:4].tolist())


def test_the_worst_spacing_is_the_largest_deviation_either_way() -> None:
    view = make_view(actions=[ramp(5), ramp(5), ramp(5)])
    view.frames.scalars["timestamp"] = np.r_[0, 0.1, 0.2, 0.3, 0.4, 0, 0.12, 0.22, 0.27, 0.37, 0, 0.1, 0.2, 0.3, 0.4]
    (warning,) = run(check_timestamps, view).warnings
    assert (warning.episode, warning.frame, warning.value) == (1, 3, pytest.approx(0.05))  # not the 0.12 at frame 1
    assert "timestamps off 1/fps at 2 frames (worst at frame 3: spacing 0.05000s" in warning.message


def test_half_of_the_episodes_off_is_not_yet_dataset_wide() -> None:
    view = make_view(actions=[ramp(3), ramp(3), ramp(3), ramp(3)])
    view.frames.scalars["timestamp"] = np.array([0, 0.1, 0.2] * 2 + [0, 0.12, 0.24] * 2)
    assert [w.episode for w in run(check_timestamps, view).warnings] == [2, 3]


# ----------------------------------------------------------------------------- tasks
def _tasks_file(root: Path, tasks: pd.DataFrame) -> Path:
    (root / "meta").mkdir(parents=True, exist_ok=True)
    tasks.to_parquet(root / "meta" / "tasks.parquet")
    return root


def test_every_frame_needs_a_known_task(tmp_path) -> None:
    root = _tasks_file(tmp_path, pd.DataFrame({"task_index": [0, 1]}, index=["reach", "grasp"]))
    view = make_view(root=root)
    view.tasks = {0: "reach", 1: "grasp"}
    assert run(check_tasks, view).errors == [] and run(check_tasks, view).warnings == []
    view.frames.scalars["task_index"] = np.r_[np.zeros(5), 1, 1, 4, 5, np.full(6, 7)].astype(np.int64)
    assert run(check_tasks, view).errors == [
        Finding("tasks", "episode 1: task_index 4 has no task string in meta/tasks.parquet; add the task or exclude the "
                         "episode", episode=1, key="task_index", value=4),
        Finding("tasks", "episode 2: task_index 7 has no task string in meta/tasks.parquet; add the task or exclude the "
                         "episode", episode=2, key="task_index", value=7)]
    view.frames.columns.discard("task_index")
    assert run(check_tasks, view).errors == [
        Finding("tasks", "data: no 'task_index' column; every frame needs a task", key="task_index")]


def test_task_strings_in_a_bare_index_column_warn(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "meta").mkdir()
    pq.write_table(pa.table({"__index_level_0__": ["reach"], "task_index": [0]}), tmp_path / "meta" / "tasks.parquet")
    out = run(check_tasks, make_view(root=tmp_path))
    assert out.errors == [] and out.warnings == [Finding(
        "tasks", "meta/tasks.parquet keeps the task strings in a bare '__index_level_0__' column (written without "
                 "pandas metadata), so LeRobot's loader would prompt the policy with the task's number instead of its "
                 "text (e.g. 0 for 'reach'); this pipeline reads the strings from that column. To fix the file for "
                 "other tools: df.set_index('__index_level_0__').to_parquet(...) with pandas", key="__index_level_0__")]


# ----------------------------------------------------------------------------- vectors
def test_vector_keys_are_the_action_and_a_state_the_data_has() -> None:
    view = make_view()
    assert _vector_keys(view) == ["action", "observation.state"]
    del view.frames.vectors["observation.state"]
    assert _vector_keys(view) == ["action"]
    del view.frames.vectors["action"]
    view.frames.vectors["observation.state"] = np.zeros((15, 4))
    assert _vector_keys(view) == ["observation.state"]


def test_vectors_of_another_length() -> None:
    view = make_view()
    assert run(check_vector_shape, view).errors == []
    view.frames.lengths["action"][[6, 7, 10]] = [5, 3, 0]
    view.frames.lengths["action"][12] = -1  # null: sequence_length's business
    view.frames.lengths["observation.state"][0] = 2
    assert run(check_vector_shape, view).errors == [
        Finding("vector_shape", "episode 1: 'action' has 5 values per frame, meta/info.json declares 4; exclude the "
                                "episode or re-export it", episode=1, key="action", value=5, expected=4),
        Finding("vector_shape", "episode 2: 'action' has 0 values per frame, meta/info.json declares 4; exclude the "
                                "episode or re-export it", episode=2, key="action", value=0, expected=4),
        Finding("vector_shape", "episode 0: 'observation.state' has 2 values per frame, meta/info.json declares 4; "
                                "exclude the episode or re-export it", episode=0, key="observation.state", value=2,
                expected=4)]


def test_null_vectors_are_missing_frames() -> None:
    view = make_view()
    assert run(check_sequence_length, view).errors == []
    view.frames.lengths["observation.state"][[5, 7, 8]] = -1
    view.frames.lengths["action"][9] = 0  # an empty list is a shape fault, not a missing frame
    assert run(check_sequence_length, view).errors == [Finding(
        "sequence_length", "episode 1: 3 frames have no 'observation.state' (null), so observations and actions differ "
                           "in length; exclude the episode", episode=1, key="observation.state", value=3, expected=0)]


def test_non_finite_values_name_the_first_frame_and_joint() -> None:
    view = make_view()
    assert run(check_finite, view).errors == []
    action = view.frames.vectors["action"]
    action[7, 3], action[8, 1], action[12, 0] = np.nan, np.inf, -np.inf
    view.frames.lengths["action"][1] = -1
    action[1, :] = np.nan  # a null row is sequence_length's business
    assert run(check_finite, view).errors == [
        Finding("finite", "episode 1: 2 frames of 'action' hold NaN/Inf (first at frame 2, joint 'gripper'); exclude "
                          "the episode", episode=1, frame=2, key="action", value="nan"),
        Finding("finite", "episode 2: 1 frames of 'action' hold NaN/Inf (first at frame 3, joint 'x.vel'); exclude the "
                          "episode", episode=2, frame=3, key="action", value="-inf")]
    view.info["features"]["action"]["names"] = ["x.vel", "elbow", "wrist"]  # fewer names than values: the number
    assert "joint '3'" in run(check_finite, view).errors[0].message


def test_rows_of_another_length_are_no_nan_finding() -> None:
    """The loader fills a row of another length with NaN: that row is vector_shape's, not a NaN/Inf value."""
    view = make_view()
    view.frames.lengths["action"][[3, 6]] = [5, 0]
    view.frames.vectors["action"][[3, 6]] = np.nan
    assert run(check_finite, view).errors == []


def test_actions_outside_the_contract_range_worst_first() -> None:
    c = make_contract(ranges={"gripper": (30.0, 40.0), "elbow": (-100.0, 500.0)})
    actions = [ramp(5), ramp(4), ramp(6)]  # gripper (dim 3) runs 30..34 | 30..33 | 30..35
    actions[1][2, 3] = 45.0  # 5 above
    actions[2][0, 3] = 28.0  # 2 below
    actions[2][4, 3] = 47.0  # 7 above: episode 2's worst, and the worst of all
    actions[2][1, 3] = 40.0  # on the limit: not outside
    out = run(check_ranges, make_view(actions=actions, contract=c))
    assert out.errors == [
        Finding("ranges", "episode 2 frame 4: action 'gripper' = 47.000 outside the contract's range [30.0, 40.0] (3 "
                          "frames in all); check units/calibration or exclude", episode=2, frame=4, key="gripper",
                value=47.0, expected=[30.0, 40.0]),
        Finding("ranges", "episode 1 frame 2: action 'gripper' = 45.000 outside the contract's range [30.0, 40.0] (3 "
                          "frames in all); check units/calibration or exclude", episode=1, frame=2, key="gripper",
                value=45.0, expected=[30.0, 40.0])]
    mixed = [ramp(5)]
    mixed[0][1, 3], mixed[0][3, 3] = 25.0, 42.0  # 5 below and 2 above: the one below is the worst
    c = make_contract(ranges={"gripper": (30.0, 40.0)})
    assert [(f.frame, f.value) for f in run(check_ranges, make_view(actions=mixed, contract=c)).errors] == [(1, 25.0)]
    below = [ramp(3, 50.0)]  # gripper 80..82 below 90
    c = make_contract(ranges={"elbow": (0.0, 100.0), "gripper": (90.0, 100.0)})
    assert [(f.key, f.frame, f.value) for f in run(check_ranges, make_view(actions=below, contract=c)).errors] == [
        ("gripper", 0, 80.0)]


def test_range_check_needs_the_joints_and_the_actions() -> None:
    c = make_contract(ranges={"gripper": (0.0, 1.0)})
    view = make_view(contract=c)
    view.info["features"]["action"]["names"] = ["x.vel", "elbow", "wrist", "grip"]
    assert run(check_ranges, view).errors == []
    view = make_view(contract=c)
    del view.frames.vectors["action"]
    assert run(check_ranges, view).errors == []


# ----------------------------------------------------------------------------- warnings
def test_short_episodes_warn() -> None:
    view = make_view(min_episode_length=5)
    assert run(check_short_episodes, view).warnings == [Finding(
        "short_episodes", "episode 1 has 4 frames, fewer than the policy's chunk size 5: most of its action chunks are "
                          "padding", episode=1, value=4, expected=5)]
    assert run(check_short_episodes, make_view(min_episode_length=4)).warnings == []


def test_joints_that_never_move_in_an_episode_warn() -> None:
    actions = [ramp(5), ramp(4), ramp(6)]
    actions[1][:, 3] = 7.0  # gripper of episode 1
    actions[2][:, 1] = -3.0  # elbow of episode 2
    actions[2][:, 0] = 1.0  # x.vel: not an arm joint
    actions[0][:4, 1] = 2.0  # elbow of episode 0 moves on its last frame
    out = run(check_static_joints, make_view(actions=actions))
    assert out.warnings == [
        Finding("static_joints", "episode 1: joint 'gripper' never moves", episode=1, key="gripper"),
        Finding("static_joints", "episode 2: joint 'elbow' never moves", episode=2, key="elbow")]


def test_arm_warnings_need_the_joints_and_the_actions() -> None:
    actions = [np.zeros((3, 4)), np.zeros((3, 4))]
    for check in (check_static_joints, check_duplicate_episodes, check_action_jumps, check_calibration):
        view = make_view(actions=actions, contract=make_contract(max_action_jump=0.0))
        view.info["features"]["action"]["names"] = ["a", "b", "c", "d"]
        assert run(check, view).warnings == []
        view = make_view(actions=actions, contract=make_contract(max_action_jump=0.0))
        del view.frames.vectors["action"]
        assert run(check, view).warnings == []


def test_action_jumps_above_the_limit_warn_with_the_worst_of_each_episode() -> None:
    c = make_contract(max_action_jump=5.0)
    actions = [ramp(5), ramp(4, 100.0), ramp(6, 200.0)]  # 95 and 95 between episodes: not a jump
    actions[0][3:, 3] += 5.0  # gripper +6 at frame 3: 1 + 5
    actions[0][4:, 1] += 8.0  # elbow +9 at frame 4: the worst of episode 0
    actions[2][2:, 1] += 4.0  # elbow +5 at frame 2: on the limit
    actions[1][1:, 3] += 7.0  # gripper +8 at frame 1 of episode 1
    out = run(check_action_jumps, make_view(actions=actions, contract=c))
    assert out.warnings == [
        Finding("action_jumps", "episode 0: 'elbow' jumps by 9.00 at frame 4 (limit 5.0; 2 jumps in the episode)",
                episode=0, frame=4, key="elbow", value=9.0, expected=5.0),
        Finding("action_jumps", "episode 1: 'gripper' jumps by 8.00 at frame 1 (limit 5.0; 1 jumps in the episode)",
                episode=1, frame=1, key="gripper", value=8.0, expected=5.0)]
    assert run(check_action_jumps, make_view(actions=actions)).warnings == []  # no limit in the contract


def test_action_jumps_name_at_most_twenty_episodes() -> None:
    actions = [np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]) for _ in range(25)]
    out = run(check_action_jumps, make_view(actions=actions, contract=make_contract(max_action_jump=1.0)))
    assert [w.episode for w in out.warnings] == list(range(20))


def test_calibration_offset_between_action_and_state_warns() -> None:
    n = 50
    t = np.linspace(0.0, 1.0, n)
    action = np.stack([t, 10 * t, t, 50 + t], axis=1)  # gripper action 50..51
    state = np.stack([t, 10 * t + 1, t, t], axis=1)  # gripper state 0..1, elbow overlaps
    out = run(check_calibration, make_view(actions=[action], states=[state]))
    a_lo, a_hi = np.percentile(50 + t, [1, 99])
    s_lo, s_hi = np.percentile(t, [1, 99])
    assert out.warnings == [Finding(
        "calibration", f"joint 'gripper': its actions span [{a_lo:.4g}, {a_hi:.4g}] but its states span [{s_lo:.4g}, "
                       f"{s_hi:.4g}] (median action - state +50): the action does not command the state it is paired "
                       f"with. A leader/follower calibration offset or different units (degrees vs radians, percent vs "
                       f"0..1); check the recording's calibration before training, the policy would learn the offset",
        key="gripper", value=50.0)]
    below = run(check_calibration, make_view(actions=[state], states=[action]))  # the state above the action
    assert [(w.key, w.value) for w in below.warnings] == [("gripper", -50.0)]


def test_calibration_ignores_non_finite_frames_and_compares_a_sample() -> None:
    t = np.linspace(0.0, 1.0, 40)
    action = np.stack([t, t, t, t + 5], axis=1)
    state = np.stack([t, t, t, t], axis=1)
    action[::2, 3] = np.nan  # half the frames unusable: the rest still overlap by nothing on the gripper
    out = run(check_calibration, make_view(actions=[action], states=[state]))
    assert [w.key for w in out.warnings] == ["gripper"]
    action[::2, 3] = 5.0
    state[::2, 1] = np.nan  # a state unusable in half the frames
    assert [w.key for w in run(check_calibration, make_view(actions=[action], states=[state])).warnings] == ["gripper"]
    state[1::2, 3] = np.inf  # no usable frame at all
    assert run(check_calibration, make_view(actions=[action], states=[state])).warnings == []
    big = CALIBRATION_SAMPLES * 3
    view = make_view(actions=[np.zeros((big, 4))], states=[np.zeros((big, 4))])
    action = view.frames.vectors["action"]
    action[1::3, 3] = 100.0  # only rows the every-third sample skips differ: the sample sees no offset
    assert run(check_calibration, view).warnings == []
    action[0::3, 3] = 100.0
    action[1::3, 3] = 0.0
    assert [w.key for w in run(check_calibration, view).warnings] == ["gripper"]


def test_repeated_episodes_warn() -> None:
    actions = [ramp(4), ramp(4, 50.0), ramp(4), ramp(5), ramp(4, 50.0)]
    actions[3][:4] = ramp(4)  # starts like episode 0 but is longer: not a repeat
    state_only = ramp(4, 9.0)
    actions[1][:, 0] = state_only[:, 0]  # x.vel is no arm joint: it does not make episodes differ
    out = run(check_duplicate_episodes, make_view(actions=actions))
    assert out.warnings == [
        Finding("duplicate_episodes", "episode 2 repeats the actions of episode 0", episode=2, value=0),
        Finding("duplicate_episodes", "episode 4 repeats the actions of episode 1", episode=4, value=1)]
