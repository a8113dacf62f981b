"""`vla contract init` and the feature-role helpers, on datasets written by LeRobot's own writer
(tests/realdata.py): a bimanual 34-dim set under other key names, and an SO-101-like default set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vla_pipeline.cli import main
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.contract_init.config import InitConfig
from vla_pipeline.data.contract_init.roles import (
    format_feature_roles,
    format_keys_block,
    group_features,
    guess_keys,
)
from vla_pipeline.data.contract_init.starter import build_starter, guess_unit, select_joints, widen
from vla_pipeline.data.tables import load_info
from vla_pipeline.errors import ContractError
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

from realdata import BIMANUAL_NAMES, SO101_JOINTS, Recording, write_recording

RIGHT_ARM = [f"right.joint_{i}.pos" for i in range(1, 8)]
BOOKKEEPING = {"timestamp", "frame_index", "episode_index", "index", "task_index"}


@pytest.fixture(scope="module")
def bimanual(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract_init") / "bimanual"
    return write_recording(root, Recording(action_key="actions", state_key="state", cameras=("image",),
                                           names=BIMANUAL_NAMES, robot_type="bimanual_arms"))


@pytest.fixture(scope="module")
def so101(tmp_path_factory) -> Path:
    return write_recording(tmp_path_factory.mktemp("contract_init") / "so101", Recording())


@pytest.fixture(scope="module")
def right_arm(bimanual, tmp_path_factory) -> tuple[Path, str]:
    """`vla contract init BIMANUAL --joints 'right.joint_*'`: the written file and stdout."""
    out = tmp_path_factory.mktemp("contracts") / "right_arm.yaml"
    code, stdout = _run_ok(str(bimanual), "--out", str(out), "--joints", "right.joint_*")
    assert code == 0
    return out, stdout


def _run_ok(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["contract", "init", *args])
    return code, buf.getvalue()


def _columns(root: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, dim), episode of each row) read independently of the module under test."""
    df = pd.concat([pd.read_parquet(f) for f in sorted((root / "data").glob("**/*.parquet"))])
    df = df.sort_values("index")
    return np.stack([np.asarray(v, dtype=np.float64) for v in df[key]]), df["episode_index"].to_numpy()


def _observed(root: Path, joints: list[str], keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    names = load_info(root)["features"][keys[0]]["names"]
    cols = [names.index(j) for j in joints]
    values = np.concatenate([_columns(root, k)[0][:, cols] for k in keys])
    return values.min(axis=0), values.max(axis=0)


def _comments(path: Path) -> str:
    """The file's comment lines joined into one line (comments are wrapped at 100 columns)."""
    return " ".join(line[2:] for line in path.read_text().splitlines() if line.startswith("# "))


# ----------------------------------------------------------------------------- features by role
def test_group_features_splits_vectors_cameras_and_leaves_out_bookkeeping(bimanual):
    groups = group_features(load_info(bimanual))
    assert {e["key"] for e in groups["vectors"]} == {"actions", "state"}
    assert [e["key"] for e in groups["cameras"]] == ["image"]
    actions = next(e for e in groups["vectors"] if e["key"] == "actions")
    assert actions == {"key": "actions", "dtype": "float32", "dim": 34, "declared": [34], "names": list(BIMANUAL_NAMES)}
    assert groups["cameras"][0]["dtype"] == "video" and groups["cameras"][0]["declared"] == [24, 32, 3]
    assert groups["cameras"][0]["dim"] is None
    every = {e["key"] for g in groups.values() for e in g}
    assert not every & BOOKKEEPING


def test_group_features_flattens_dict_names_and_sorts_other_features():
    info = {"features": {
        "observation.joint_positions": {"dtype": "float64", "shape": [3], "names": {"motors": ["a", "b", "c"]}},
        "action.joints": {"dtype": "float32", "shape": [3], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "language": {"dtype": "string", "shape": [1], "names": None},
        "wrist_image": {"dtype": "image", "shape": [64, 64, 3], "names": ["height", "width", "channel"]},
        "index": {"dtype": "int64", "shape": [1], "names": None},
    }}
    groups = group_features(info)
    assert [(e["key"], e["names"]) for e in groups["vectors"]] == [
        ("observation.joint_positions", ["a", "b", "c"]), ("action.joints", [])]
    assert [e["key"] for e in groups["other"]] == ["next.reward", "language"]
    assert guess_keys(info) == {"action": "action.joints", "state": "observation.joint_positions",
                                "cameras": {"wrist_image": "wrist_image"}}


def test_guess_keys_on_realistic_datasets(bimanual, so101):
    assert guess_keys(load_info(bimanual)) == {"action": "actions", "state": "state", "cameras": {"image": "image"}}
    assert guess_keys(load_info(so101)) == {
        "action": "action", "state": "observation.state",
        "cameras": {"front": "observation.images.front", "wrist": "observation.images.wrist"}}


def test_guess_keys_without_an_action_and_with_colliding_camera_names():
    info = {"features": {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
        "observation.images.cam_high.rgb": {"dtype": "video", "shape": [8, 8, 3]},
        "observation.images.cam_low.rgb": {"dtype": "video", "shape": [8, 8, 3]},
    }}
    guess = guess_keys(info)
    assert guess["action"] is None and guess["state"] == "observation.state"
    assert guess["cameras"] == {"observation_images_cam_high_rgb": "observation.images.cam_high.rgb",
                                "observation_images_cam_low_rgb": "observation.images.cam_low.rgb"}


def test_format_feature_roles_cuts_long_name_lists(bimanual):
    text = format_feature_roles(load_info(bimanual))
    lines = text.splitlines()
    assert lines[0].startswith("  action/state candidates: ")
    assert ("'actions' float32 [34] (left.joint_1.pos, left.joint_2.pos, left.joint_3.pos, left.joint_4.pos, "
            "... and 30 more)") in lines[0]
    assert "'state' float32 [34]" in lines[0]
    assert lines[1] == "  cameras: 'image' video [24, 32, 3]"
    assert len(lines) == 2 and "timestamp" not in text
    assert "... and 32 more" in format_feature_roles(load_info(bimanual), max_names=2)
    assert "more)" not in format_feature_roles(load_info(bimanual), max_names=34)


def test_format_feature_roles_says_none():
    text = format_feature_roles({"features": {"index": {"dtype": "int64", "shape": [1]}}})
    assert text == "  action/state candidates: none (no numeric vector feature)\n  cameras: none"


def test_format_keys_block_is_pasteable_yaml_with_guesses_marked(bimanual, so101):
    block = format_keys_block(load_info(bimanual))
    assert yaml.safe_load(block) == {"keys": {"action": "actions", "state": "state", "cameras": {"image": "image"}}}
    assert re.search(r"^  action: actions +# guessed", block, re.M)
    assert re.search(r"^  state: state +# guessed", block, re.M)
    canonical = format_keys_block(load_info(so101))
    assert yaml.safe_load(canonical)["keys"]["cameras"] == {"front": "observation.images.front",
                                                            "wrist": "observation.images.wrist"}
    assert "guessed" not in canonical  # LeRobot's own key names are not guesses
    absent = format_keys_block({"features": {"image": {"dtype": "video", "shape": [8, 8, 3]}}})
    assert yaml.safe_load(absent)["keys"]["action"] is None
    assert re.search(r"^  action: null +# no action-like numeric vector found", absent, re.M)


# ----------------------------------------------------------------------------- pure pieces of init
def test_select_joints_keeps_dataset_order_and_takes_globs_and_regexes():
    names = list(BIMANUAL_NAMES)
    assert select_joints(names, ["right.joint_*"]) == RIGHT_ARM
    assert select_joints(names, ["right.*"]) == RIGHT_ARM  # a glob: '.' is literal, so right_hand.* stays out
    assert select_joints(names, [r"re:right\.joint_[12]\.pos", "left.joint_7*"]) == [
        "left.joint_7.pos", "right.joint_1.pos", "right.joint_2.pos"]
    assert select_joints(names, [r"^right_hand\.joint_(1|10)$"]) == ["right_hand.joint_1", "right_hand.joint_10"]
    assert select_joints(names, []) == names
    with pytest.raises(ContractError, match=r"--joints 'arm\.\*' selects no joint of 'actions'"):
        select_joints(names, ["right.*", "arm.*"], "actions")


@pytest.mark.parametrize(("name", "lo", "hi", "unit"), [
    ("shoulder_pan.pos", -60.0, 45.0, "deg"),
    ("right.joint_1.pos", -1.2, 2.9, "rad"),
    ("gripper.pos", 0.0, 97.0, "percent"),
    ("left_hand.joint_3", 0.0, 0.8, "fraction"),
    ("x.vel", -0.2, 0.3, "m/s"),
    ("theta.vel", -90.0, 90.0, "deg/s"),
])
def test_guess_unit(name, lo, hi, unit):
    assert guess_unit(name, lo, hi)[0] == unit


@pytest.mark.parametrize(("name", "lo", "hi", "unit"), [
    ("shoulder_pan.pos", 1460.0, 2641.0, "ticks"),  # a 12-bit encoder's counts
    ("wrist_roll.pos", 0.0, 16383.0, "ticks"),
    ("gripper.pos", 0.0, 100.0, "percent"),  # whole percent stays percent
    ("elbow.pos", -90.0, 90.0, "deg"),  # signed whole degrees are no encoder counts
    ("elbow.pos", 0.0, 3.0, "rad"),
])
def test_guess_unit_of_whole_numbers(name, lo, hi, unit):
    assert guess_unit(name, lo, hi, integer=True)[0] == unit


def test_widen_adds_the_margin_and_rounds_outward():
    assert widen(-50.0, 50.0, 0.1) == (-60.0, 60.0)
    lo, hi = widen(-34.23, 21.82, 0.1)
    assert lo <= -34.23 - 5.605 and hi >= 21.82 + 5.605 and lo > -34.23 - 6.2 and hi < 21.82 + 6.2
    assert widen(5.0, 5.0, 0.1) == (4.95, 5.05)  # a joint that never moved: 1% of its magnitude
    assert widen(0.0, 0.0, 0.1) == (-0.01, 0.01)


# ----------------------------------------------------------------------------- vla contract init
def test_bimanual_right_arm_contract(right_arm, bimanual):
    out, stdout = right_arm
    c = load_contract(out)
    assert c.joints == tuple(RIGHT_ARM)  # exactly the 7 right-arm joints, in dataset order
    assert (c.action_key, c.state_key, c.cameras) == ("actions", "state", {"image": "image"})
    assert c.required_cameras == ("image",) and c.state_required
    assert (c.fps, c.robot, c.name, c.semantics) == (30, "bimanual_arms", "right_arm", "absolute")
    lo, hi = _observed(bimanual, RIGHT_ARM, ("actions", "state"))
    span = hi - lo
    for j, joint in enumerate(RIGHT_ARM):
        r_lo, r_hi = c.ranges[joint]
        assert r_lo <= lo[j] - 0.1 * span[j] and r_hi >= hi[j] + 0.1 * span[j], joint  # observed + margin
        assert r_lo > lo[j] - 0.12 * span[j] and r_hi < hi[j] + 0.12 * span[j], joint  # not much more
    assert c.units == dict.fromkeys(RIGHT_ARM, "deg")
    text = out.read_text()
    for joint in RIGHT_ARM:  # every unit is marked as a guess
        assert re.search(rf"^  {re.escape(joint)}: deg +# guessed: confirm", text, re.M), joint
    assert re.search(r"^semantics: absolute +# guessed: confirm", text, re.M)
    assert re.search(r"^  action: actions +# guessed", text, re.M)
    assert "the 7 names of 'actions' matching --joints 'right.joint_*', in dataset order" in _comments(out)
    assert "starter contract:" in stdout and "vla validate" in stdout


def test_every_field_of_the_starter_is_commented(right_arm):
    text = right_arm[0].read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):  # a top-level field: a comment on its line or just above
            assert "#" in line or lines[i - 1].startswith("# "), line


def test_max_action_jump_from_the_observed_deltas(right_arm, bimanual):
    c = load_contract(right_arm[0])
    values, episodes = _columns(bimanual, "actions")
    cols = [BIMANUAL_NAMES.index(j) for j in RIGHT_ARM]
    delta = np.abs(np.diff(values[:, cols], axis=0))[episodes[1:] == episodes[:-1]].max(axis=1)
    expected = 2 * np.quantile(delta, 0.99)
    assert expected <= c.max_action_jump <= expected * 1.01
    assert c.max_action_jump > delta.max()  # a clean recording raises no jump warning


def test_bimanual_contract_passes_validation(right_arm, bimanual, tmp_path):
    report = validate_dataset(ValidateConfig(bimanual, right_arm[0], tmp_path / "report.json"))
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.checks["ranges"]["status"] == "pass" and report.checks["feature_names"]["status"] == "pass"


def test_so101_default_round_trip(so101, tmp_path):
    out = tmp_path / "contracts" / "so101_starter.yaml"
    assert main(["contract", "init", str(so101), "--out", str(out)]) == 0
    c = load_contract(out)
    shipped = load_contract(Path(__file__).resolve().parents[2] / "contracts" / "so101_arm.yaml")
    assert c.joints == SO101_JOINTS == shipped.joints  # default: every name of the action vector
    assert (c.action_key, c.state_key, c.cameras) == (shipped.action_key, shipped.state_key, shipped.cameras)
    assert c.required_cameras == ("front", "wrist") and c.robot == "so101_follower" and c.fps == 30
    assert c.units == {**dict.fromkeys(SO101_JOINTS[:-1], "deg"), "gripper.pos": "percent"}
    assert "all 6 names of 'action' (no --joints given)" in _comments(out)
    assert "guessed" not in format_keys_block(load_info(so101))
    lo, hi = _observed(so101, list(SO101_JOINTS), ("action", "observation.state"))
    for j, joint in enumerate(SO101_JOINTS):
        assert c.ranges[joint][0] < lo[j] and c.ranges[joint][1] > hi[j]
    report = validate_dataset(ValidateConfig(so101, out, tmp_path / "report.json"))
    assert report.ok and report.warnings == []
    # written again from the same data, the file is the same (deterministic, no timestamps in it)
    assert main(["contract", "init", str(so101), "--out", str(out), "--force"]) == 0
    assert out.read_text() == build_starter(InitConfig(so101, out)).text


def test_cameras_and_margin_options(so101, tmp_path):
    out = tmp_path / "wrist_only.yaml"
    assert main(["contract", "init", str(so101), "--out", str(out), "--cameras", "observation.images.wrist",
                 "--margin", "0.5", "--name", "wrist_arm"]) == 0
    c = load_contract(out)
    assert c.cameras == {"wrist": "observation.images.wrist"} and c.required_cameras == ("wrist",)
    assert c.name == "wrist_arm"
    lo, hi = _observed(so101, list(SO101_JOINTS), ("action", "observation.state"))
    span = hi - lo
    assert all(c.ranges[j][0] <= lo[i] - 0.5 * span[i] for i, j in enumerate(SO101_JOINTS))


def test_force_overwrites_and_no_force_leaves_the_file_alone(so101, tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    out.write_text("# my hand-edited contract\n")
    assert main(["contract", "init", str(so101), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--force" in err
    assert out.read_text() == "# my hand-edited contract\n"
    assert main(["contract", "init", str(so101), "--out", str(out), "--force"]) == 0
    assert load_contract(out).joints == SO101_JOINTS
    assert not list(tmp_path.glob(".*.tmp"))


def test_notes_for_a_recording_without_state_and_with_wall_clock_timestamps(so101, tmp_path, capsys):
    import shutil

    from realdata import alter_wall_clock_timestamps, edit_info

    root = tmp_path / "odd"
    shutil.copytree(so101, root)
    alter_wall_clock_timestamps(root)
    edit_info(root, lambda info: info["features"].pop("observation.state"))
    out = tmp_path / "odd.yaml"
    assert main(["contract", "init", str(root), "--out", str(out), "--joints", "gripper.pos"]) == 0
    stdout = capsys.readouterr().out
    assert "note: no state vector found" in stdout and "note: timestamp spacing deviates" in stdout
    c = load_contract(out)
    assert c.joints == ("gripper.pos",) and not c.state_required
    assert re.search(r"^  state: observation.state +# NOT in this dataset", out.read_text(), re.M)
    lo, hi = _observed(so101, ["gripper.pos"], ("action",))  # the action alone sets the range now
    assert c.ranges["gripper.pos"][0] <= lo[0] - 0.1 * (hi[0] - lo[0]) < c.ranges["gripper.pos"][0] + 1
    # a state without per-dimension names: written anyway, with a note (validation will name it)
    edit_info(root, lambda info: info["features"].__setitem__(
        "observation.state", {"dtype": "float32", "shape": [6], "names": None}))
    notes = build_starter(InitConfig(root, tmp_path / "unnamed.yaml")).notes
    assert any("lacks joints" in n and "no per-dimension names" in n for n in notes), notes


def _write_info(root: Path, info: dict) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("case", ["no_joint", "bad_camera", "no_action", "missing_root", "v21", "no_names"])
def test_refusals_are_one_line_errors(case, bimanual, tmp_path, capsys):
    out = tmp_path / "c.yaml"
    args, expect = {
        "no_joint": ([str(bimanual), "--joints", "right.joint_*", "--joints", "torso.*"],
                     r"--joints 'torso\.\*' selects no joint of 'actions' \(its names: \['left\.joint_1\.pos'"),
        "bad_camera": ([str(bimanual), "--cameras", "front"], r"--cameras 'front' is not a camera of .*'image'"),
        "no_action": ([str(_write_info(tmp_path / "noact", {"codebase_version": "v3.0", "fps": 30, "features": {
            "observation.state": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
            "image": {"dtype": "video", "shape": [8, 8, 3]}}}))],
            r"has no numeric action vector .*action/state candidates: 'observation\.state'.*pass --action KEY"),
        "missing_root": ([str(tmp_path / "nowhere")], r"dataset root .*nowhere not found"),
        "v21": ([str(_write_info(tmp_path / "old", {"codebase_version": "v2.1", "fps": 30, "features": {}}))],
                r"codebase_version 'v2\.1', supported is v3\.0; convert the dataset first \(`vla convert"),
        "no_names": ([str(_write_info(tmp_path / "nonames", {"codebase_version": "v3.0", "fps": 30, "features": {
            "action": {"dtype": "float32", "shape": [2], "names": None},
            "image": {"dtype": "video", "shape": [8, 8, 3]}}}))],
            r"the action vector 'action' has no per-dimension names"),
    }[case]
    assert main(["contract", "init", *args, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and re.search(expect, captured.err, re.S), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_refusal_in_a_fresh_process_has_no_traceback(tmp_path):
    from conftest import vla

    proc = vla("contract", "init", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.yaml"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: dataset root") and "Traceback" not in proc.stderr
