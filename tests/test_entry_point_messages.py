"""What the entry points say (issue 27, the smaller defects), each through `vla` itself: a dataset
without a camera gets one message everywhere; `vla contract init` labels raw servo ticks as ticks and
the plots carry the contract's units; a typo in `joints:` is named as a joint the dataset lacks;
every reader of the validation report refuses a failed one or one of another contract; validate
ends with a sentence. (`vla evaluate`'s summary: tests/eval/test_evaluate.py.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from vla_pipeline.cli import main
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.tables import format_no_camera
from vla_pipeline.eval.media import EpisodeFigure

from conftest import CONTRACT, REPO
from realdata import SO101_JOINTS, Recording, write_recording
from tabular import write_tabular

NO_CAMERA = "this dataset has no camera stream; Pi0.5 needs at least one, so it cannot train this policy"
SO101 = CONTRACT.parent / "so101_arm.yaml"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def write_params(tmp_path: Path, dataset: Path, contract: Path, report: Path) -> Path:
    """params.yaml pointed at ``dataset``/``contract``/``report``, everything written under ``tmp_path``."""
    p = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    p["dataset"].update(root=str(dataset), contract=str(contract), exclude_episodes=[])
    p["validate"]["report"] = str(report)
    p["norms"]["out_dir"] = str(tmp_path / "norms")
    p["frame_cache"].update(dir=str(tmp_path / "frame_cache"), enable=True)
    p["train"].update(out_dir=str(tmp_path / "train"), live_dir=str(tmp_path / "live"))
    p["train"]["wandb"].update(dir=str(tmp_path / "wandb"), mode="disabled")
    p["preflight"]["report"] = str(tmp_path / "preflight.json")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def no_camera(tmp_path_factory) -> Path:
    """A recording made by LeRobot's writer with joints and no camera at all."""
    return write_recording(tmp_path_factory.mktemp("nocam") / "nocam", Recording(cameras=(), lengths=(12, 10, 14)))


# ----------------------------------------------------------------------------- no camera
def test_a_dataset_without_a_camera_gets_one_message_from_every_entry_point(no_camera, tmp_path, capsys) -> None:
    """contract init, validate (with any contract), norms, frame-cache, train and preflight's dataset check
    all say the same: no camera, Pi0.5 cannot train on it. None sends the user to another command or
    suggests excluding episodes."""
    from vla_pipeline.preflight.inputs import check_dataset

    message = format_no_camera(no_camera)
    assert NO_CAMERA in message and str(no_camera) in message
    rc, out, err = run(capsys, "contract", "init", no_camera, "--out", tmp_path / "c.yaml")
    assert (rc, err.strip()) == (1, f"error: {message}") and not (tmp_path / "c.yaml").exists()

    report = tmp_path / "report.json"
    rc, out, err = run(capsys, "validate", no_camera, "--contract", SO101, "--report", report)
    assert rc == 1 and f"[contract_keys] {message}" in err
    assert err.strip().splitlines()[-1].startswith(f"Validation failed: {no_camera} has no camera stream")
    assert json.loads(report.read_text())["errors"] == [
        {"check": "contract_keys", "message": message, "episode": None, "frame": None, "key": "cameras",
         "value": None, "expected": None, "frames": None, "suggestion": None, "trim": None}]
    params = write_params(tmp_path, no_camera, SO101, report)
    for argv in (["norms", no_camera, "--contract", SO101, "--report", report, "--out", tmp_path / "norms"],
                 ["norms", "--params", params], ["frame-cache", "--params", params], ["train", "--params", params]):
        rc, out, err = run(capsys, *argv)
        assert (rc, err.strip()) == (1, f"error: {message}"), argv
    assert not (tmp_path / "frame_cache").exists() and not (tmp_path / "norms").exists()
    report.unlink()  # train says it before it looks for the report
    assert run(capsys, "train", "--params", params)[:3:2] == (1, f"error: {message}\n")
    [check] = check_dataset(no_camera)
    assert (check.status, check.value) == ("fail", message)
    assert "exclude" not in message and "contract init" not in message


# ----------------------------------------------------------------------------- servo ticks
def _with_camera_feature(root: Path) -> None:
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.images.front"] = {"dtype": "video", "shape": [24, 32, 3],
                                                    "names": ["height", "width", "channels"]}
    info_path.write_text(json.dumps(info))


def _as_integer_dtype(root: Path) -> None:
    """Store the action and state as int64 lists (info.json too), as some recorders do with raw ticks."""
    path = sorted((root / "data").glob("**/*.parquet"))[0]
    table = pq.read_table(path)
    for key in ("action", "observation.state"):
        i = table.schema.get_field_index(key)
        ints = pa.array([[int(x) for x in row] for row in table[key].to_pylist()], pa.list_(pa.int64()))
        table = table.set_column(i, pa.field(key, ints.type), ints)
    pq.write_table(table, path)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    for key in ("action", "observation.state"):
        info["features"][key]["dtype"] = "int64"
    info_path.write_text(json.dumps(info))


@pytest.mark.parametrize("integer_dtype", [False, True], ids=["whole-floats", "int64"])
def test_contract_init_labels_raw_servo_ticks_and_the_plots_carry_them(tmp_path, capsys, integer_dtype) -> None:
    rng = np.random.default_rng(0)
    actions = [np.round(2048 + rng.uniform(-600, 600, size=(n, len(SO101_JOINTS)))) for n in (20, 24, 18)]
    root = write_tabular(tmp_path / "ticks", actions, names=SO101_JOINTS)
    _with_camera_feature(root)
    if integer_dtype:
        _as_integer_dtype(root)
    out_path = tmp_path / "ticks.yaml"
    rc, out, err = run(capsys, "contract", "init", root, "--out", out_path)
    assert rc == 0, err
    contract = load_contract(out_path)
    assert contract.units == {j: "ticks" for j in SO101_JOINTS}
    assert "raw servo encoder ticks" in out and "deg" not in yaml.safe_load(out_path.read_text())["units"].values()
    with EpisodeFigure({}, list(contract.joints), contract.units) as figure:  # what evaluate's media draw
        titles = [ax.get_title() for ax in figure.axes]
    assert titles == [f"{j} [ticks]" for j in SO101_JOINTS]


def test_calibrated_degrees_are_still_degrees(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-90, 90, size=(n, 4)) for n in (20, 24)]
    root = write_tabular(tmp_path / "deg", actions, names=("a.pos", "b.pos", "c.pos", "d.pos"))
    _with_camera_feature(root)
    rc, out, err = run(capsys, "contract", "init", root, "--out", tmp_path / "deg.yaml")
    assert rc == 0, err
    assert set(load_contract(tmp_path / "deg.yaml").units.values()) == {"deg"}


# ----------------------------------------------------------------------------- a typo in joints
def test_a_joint_typo_is_named_as_missing_from_the_dataset_before_ranges(demo_dataset, tmp_path, capsys) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(CONTRACT.read_text().replace("  - arm_shoulder_pan.pos", "  - arm_shoulder_pann.pos"))
    rc, out, err = run(capsys, "validate", demo_dataset, "--contract", typo, "--report", tmp_path / "r.json")
    assert rc == 1
    assert ("[feature_names] contract 'lekiwi_arm': joint 'arm_shoulder_pann.pos' is not among the dataset's "
            "names for 'action': ['arm_shoulder_pan.pos',") in err
    assert "did you mean 'arm_shoulder_pan.pos'?" in err
    assert "ranges name" not in err and "units name" not in err
    # with the joints right, ranges naming a joint outside them is still an error of the contract
    extra = tmp_path / "extra.yaml"
    extra.write_text(CONTRACT.read_text().replace("  arm_gripper.pos: [0, 100]", "  arm_gripper.pos: [0, 100]\n"
                                                                                 "  x.vel: [-1, 1]"))
    rc, out, err = run(capsys, "validate", demo_dataset, "--contract", extra, "--report", tmp_path / "r.json")
    assert rc == 1 and ("contract 'lekiwi_arm': ranges name joints ['x.vel'] that are not in its joints "
                        "['arm_shoulder_pan.pos',") in err


# ----------------------------------------------------------------------------- the report's readers
def _fail_report(report: Path) -> None:
    doc = json.loads(report.read_text())
    doc.update(ok=False, errors=[{"check": "finite", "message": "episode 2 frame 3: action is NaN", "episode": 2,
                                  "frame": 3, "key": "action", "value": None, "expected": None}],
               suggested_exclusions=[2])
    report.write_text(json.dumps(doc))


def test_every_reader_refuses_a_failed_report_or_another_contract(demo_dataset, tmp_path, capsys) -> None:
    """norms, frame-cache and train read the report through one checked read-back: a failed report is
    refused with its first error (nothing is built: no store entry, no stats); so is one made against
    another contract than the one the run uses, or a contract edited since."""
    contract = tmp_path / "arm.yaml"
    contract.write_text(CONTRACT.read_text())
    report = tmp_path / "report.json"
    rc, out, err = run(capsys, "validate", demo_dataset, "--contract", contract, "--report", report)
    assert rc == 0, err
    params = write_params(tmp_path, demo_dataset, contract, report)
    readers = (["norms", "--params", params], ["frame-cache", "--params", params], ["train", "--params", params])
    good = report.read_text()
    _fail_report(report)
    for argv in readers:
        rc, out, err = run(capsys, *argv)
        assert rc == 1 and err.startswith(f"error: validation report {report} says {demo_dataset} failed validation "
                                          f"(episode 2 frame 3: action is NaN); fix the dataset, or leave out the "
                                          f"episodes whose faults are their own (params.yaml "
                                          f"dataset.exclude_episodes: [2])"), (argv, err)
    assert not (tmp_path / "frame_cache").exists() and not (tmp_path / "norms").exists()
    report.write_text(good)
    contract.write_text(CONTRACT.read_text().replace("max_action_jump: 30", "max_action_jump: 20"))
    for argv in readers:
        rc, out, err = run(capsys, *argv)
        assert rc == 1 and err.startswith(f"error: validation report {report} was made against an earlier version "
                                          f"of {contract} (the file changed since)"), (argv, err)
    assert not (tmp_path / "frame_cache").exists()
    contract.write_text(CONTRACT.read_text())  # the report holds again; the run names another contract file
    other = tmp_path / "other.yaml"
    other.write_text(CONTRACT.read_text().replace("max_action_jump: 30", "max_action_jump: 20"))
    params = write_params(tmp_path, demo_dataset, other, report)
    for argv in (["norms", "--params", params], ["frame-cache", "--params", params], ["train", "--params", params]):
        rc, out, err = run(capsys, *argv)
        assert rc == 1 and err.startswith(f"error: validation report {report} was made against another contract "
                                          f"({contract}) than {other}"), (argv, err)
    assert not (tmp_path / "frame_cache").exists()


# ----------------------------------------------------------------------------- validate's last line
def test_validate_ends_with_a_sentence(demo_dataset, tmp_path, capsys) -> None:
    report = tmp_path / "report.json"
    rc, out, err = run(capsys, "validate", demo_dataset, "--contract", CONTRACT, "--report", report)
    doc = json.loads(report.read_text())
    n_warnings = len(doc["warnings"])
    assert rc == 0 and out.strip().splitlines()[-1] == (
        f"Validation passed: 6 episodes, {doc['summary']['n_frames']} frames, {n_warnings} "
        f"warning{'' if n_warnings == 1 else 's'}; report written to {report}.")
    assert "{" not in out.strip().splitlines()[-1]
    wrong_fps = tmp_path / "fps.yaml"
    wrong_fps.write_text(CONTRACT.read_text().replace("fps: 30", "fps: 15"))
    rc, out, err = run(capsys, "validate", demo_dataset, "--contract", wrong_fps, "--report", report)
    assert rc == 1 and err.strip().splitlines()[-1] == (
        f"Validation failed: 1 error in fps; fix it, then validate again (full report: {report}).")


# ----------------------------------------------------------------------------- logging: the lines users see
@pytest.fixture
def logging_state():
    """configure_logging changes the process's logging: put back what it was after the test."""
    import logging
    import warnings

    root, package = logging.getLogger(), logging.getLogger("vla_pipeline")
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in
             (root, package, logging.getLogger("__main__"))]
    showwarning = warnings.showwarning
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    warnings.showwarning = showwarning


def test_log_lines_are_what_the_prints_were_at_each_verbosity(logging_state, capsys, monkeypatch) -> None:
    import logging
    import warnings

    from vla_pipeline.errors import warn_loudly
    from vla_pipeline.logs import STDERR, configure_logging

    monkeypatch.delenv("VLA_LOG", raising=False)
    for name in ("RANK", "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    ours, theirs = logging.getLogger("vla_pipeline.some.module"), logging.getLogger("some_library")

    def say_everything() -> tuple[str, str]:
        ours.debug("a debug line")
        ours.info("an info line")
        ours.info("progress", extra=STDERR)
        ours.warning("a warning")
        theirs.info("their info")
        theirs.warning("their warning")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("warned", UserWarning, __import__("vla_pipeline.norms").norms.__file__, 1)
        return capsys.readouterr()

    configure_logging()
    out, err = say_everything()
    assert out == "an info line\n"
    assert err == "progress\nwarning: a warning\nwarning: their warning\nwarning: warned\n"
    warn_loudly("stats do not fit")
    assert capsys.readouterr().err == f"\n{'!' * 78}\nWARNING: stats do not fit\n{'!' * 78}\n\n"

    configure_logging("quiet")
    out, err = say_everything()
    assert out == "" and err == "warning: a warning\nwarning: their warning\nwarning: warned\n"

    configure_logging("verbose")
    out, err = say_everything()
    assert out == "debug: vla_pipeline.some.module: a debug line\nan info line\nsome_library: their info\n"

    monkeypatch.setenv("VLA_LOG", "quiet")  # the DVC stages, which take no flags
    configure_logging()
    assert say_everything()[0] == ""


def test_only_rank_zero_speaks_but_every_rank_reports_its_errors(logging_state, capsys, monkeypatch) -> None:
    import logging

    from vla_pipeline.logs import configure_logging

    for name in ("RANK", "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    configure_logging()
    log = logging.getLogger("vla_pipeline.x")
    for variable in ("RANK", "LOCAL_RANK"):
        monkeypatch.setenv(variable, "1")
        log.info("info")
        log.warning("warning")
        log.error("broken")
        assert capsys.readouterr() == ("", "error: broken\n")
        monkeypatch.delenv(variable)
    monkeypatch.setenv("RANK", "0")
    log.info("info")
    assert capsys.readouterr().out == "info\n"
