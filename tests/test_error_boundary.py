"""The one error boundary (issue 31, item 5), each case through a real entry point in its own process: a stage
script (``python stages/<x>.py`` in a copy of the workspace, as DVC runs it) or ``python -m vla_pipeline.cli``.
An expected failure ends with one ``error: <message>`` line and exit code 1, never a traceback: a user error, a
torn or foreign artifact (naming the stage to re-run), out of memory, permission denied, a full disk.
``VLA_DEBUG=1`` shows the traceback; a bug keeps its traceback. Failures are injected where a real run meets
them (tests/inject/sitecustomize.py), never by mocking the model."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONTRACT, REPO, with_faults
from procs import run_bounded

TIMEOUT = 300


@pytest.fixture(scope="module")
def good_report(demo_dataset, tmp_path_factory) -> Path:
    from vla_pipeline.validate.config import ValidateConfig
    from vla_pipeline.validate.run import validate_dataset

    path = tmp_path_factory.mktemp("report") / "report.json"
    validate_dataset(ValidateConfig(demo_dataset, CONTRACT, path))
    return path


@pytest.fixture
def work(tmp_path, demo_dataset, good_report) -> Path:
    """A workspace: the stage scripts and a params.yaml whose outputs are under ``tmp_path``, the validation
    report already written (validate passed)."""
    shutil.copytree(REPO / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    p = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    p["dataset"].update(root=str(demo_dataset), contract=str(CONTRACT), exclude_episodes=[])
    p["validate"].update(report=str(tmp_path / "artifacts/validation/report.json"), dry_run=False)
    p["norms"]["out_dir"] = str(tmp_path / "artifacts/norms")
    p["frame_cache"].update(dir=str(tmp_path / "artifacts/frame_cache"), enable=False)
    p["train"].update(out_dir=str(tmp_path / "artifacts/train"), live_dir=str(tmp_path / "artifacts/live"))
    p["train"]["wandb"].update(dir=str(tmp_path / "wandb"), mode="disabled")
    p["preflight"]["report"] = str(tmp_path / "artifacts/preflight/report.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    report = tmp_path / "artifacts/validation/report.json"
    report.parent.mkdir(parents=True)
    shutil.copyfile(good_report, report)
    return tmp_path


def run(work: Path, argv: list[str], *, debug: bool = False, **variables: str) -> subprocess.CompletedProcess:
    """``argv`` (a stage script of ``work`` or ``-m vla_pipeline.cli ...``) in its own process group, killed
    as a group past the timeout; ``variables``: the environment's additions (tests/inject/sitecustomize.py's
    ``VLA_TEST_*`` put it on the path)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VLA_DEBUG", "VLA_LOG")}
    env.update(OMP_NUM_THREADS="1", **variables)
    if debug:
        env["VLA_DEBUG"] = "1"
    if any(k.startswith("VLA_TEST_") for k in variables):
        env = with_faults(env)
    return run_bounded([sys.executable, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def stage(work: Path, name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(work, [f"stages/{name}.py", *args], **kwargs)


def one_message(done: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a handled failure (exit code 1, no traceback), without its prefix."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    return errors[0].removeprefix("error: ")


def torn(path: Path) -> int:
    """Cut ``path`` in the middle (a killed write); returns the line JSON's decoder stops at."""
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(json.JSONDecodeError) as e:
        json.loads(path.read_text())
    return e.value.lineno


# ----------------------------------------------------------------------------- user errors
def test_a_user_error_is_one_message(work) -> None:
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["dataset"]["contract"] = str(work / "no_such_contract.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert str(work / "no_such_contract.yaml") in one_message(stage(work, "norms"))


def test_a_missing_file_is_one_message_naming_it(work) -> None:
    (work / "artifacts/validation/report.json").unlink()
    message = one_message(stage(work, "norms"))
    assert message == (f"validation report {work / 'artifacts/validation/report.json'} not found; run `dvc repro "
                       f"validate` (or `vla validate`) first")


# ----------------------------------------------------------------------------- torn and foreign artifacts
def test_a_torn_validation_report_names_the_file_and_the_stage_to_rerun(work) -> None:
    report = work / "artifacts/validation/report.json"
    line = torn(report)
    assert one_message(stage(work, "norms")) == (
        f"{report} is torn or not this project's (JSONDecodeError at line {line}): re-run `dvc repro -f validate`")
    assert not (work / "artifacts/norms").exists()


@pytest.mark.parametrize(("doc", "why"), [({"rows": [1, 2]}, "no 'ok' key"), ([1, 2], "a JSON list, not an object"),
                                          ({"ok": True}, "no 'excluded_episodes' key")])
def test_a_foreign_validation_report_names_the_file_and_the_stage_to_rerun(work, doc, why) -> None:
    report = work / "artifacts/validation/report.json"
    report.write_text(json.dumps(doc))
    assert one_message(stage(work, "norms")) == (
        f"{report} is torn or not this project's ({why}): re-run `dvc repro -f validate`")


def test_a_torn_report_through_vla_too(work) -> None:
    report = work / "artifacts/validation/report.json"
    line = torn(report)
    done = run(work, ["-m", "vla_pipeline.cli", "frame-cache", "--params", "params.yaml"])
    assert one_message(done) == (
        f"{report} is torn or not this project's (JSONDecodeError at line {line}): re-run `dvc repro -f validate`")


def test_foreign_frozen_stats_before_train_name_the_norms_stage(work) -> None:
    assert stage(work, "norms").returncode == 0
    stats = work / "artifacts/norms/stats.json"
    stats.write_text(json.dumps({"features": {}}))
    assert one_message(stage(work, "train")) == (
        f"{stats} is torn or not this project's (no 'dataset_fingerprint' key): re-run `dvc repro -f norms`")


# ----------------------------------------------------------------------------- out of memory
@pytest.mark.parametrize(("kind", "what"), [("MemoryError", "the machine's memory (RAM) ran out"),
                                            ("torch_oom", "GPU memory ran out (CUDA out of memory. Tried to allocate")])
def test_out_of_memory_says_what_ran_out_and_what_to_lower(work, kind, what) -> None:
    done = stage(work, "norms", VLA_TEST_FAULT=f"vla_pipeline.norms:compute_feature_stats:{kind}")
    message = one_message(done)
    assert message.startswith(f"out of memory: {what}") and "Lower train.batch_size" in message, message


# ----------------------------------------------------------------------------- permission denied, disk full
def test_permission_denied_names_the_path(work) -> None:
    done = stage(work, "norms", VLA_TEST_WRITE_FAULT="EACCES:artifacts/norms/split.json")
    message = one_message(done)
    assert message.startswith(f"permission denied: {work / 'artifacts/norms/split.json'} (Permission denied); "
                              f"make it writable"), message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores a directory's permissions (chmod)")
def test_a_read_only_output_directory_is_permission_denied(work) -> None:
    (work / "artifacts").chmod(0o555)
    try:
        message = one_message(stage(work, "norms"))
    finally:
        (work / "artifacts").chmod(0o755)
    assert message.startswith(f"permission denied: {work / 'artifacts/norms'}"), message


def test_a_full_disk_names_the_path_and_what_to_do(work) -> None:
    done = stage(work, "norms", VLA_TEST_WRITE_FAULT="ENOSPC:artifacts/norms/stats.json")
    message = one_message(done)
    assert message.startswith(f"no space left on the disk writing {work / 'artifacts/norms/stats.json'}; free "
                              f"space there"), message


# ----------------------------------------------------------------------------- VLA_DEBUG, bugs
def test_vla_debug_shows_the_traceback_of_a_handled_failure(work, good_report) -> None:
    report = work / "artifacts/validation/report.json"
    torn(report)
    done = stage(work, "norms", debug=True)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "json.decoder.JSONDecodeError" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith(f"error: {report} is torn or not this project's")
    shutil.copyfile(good_report, report)
    done = stage(work, "norms", debug=True, VLA_TEST_FAULT="vla_pipeline.norms:compute_feature_stats:MemoryError")
    assert done.returncode == 1 and "Traceback" in done.stderr and "MemoryError" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("error: out of memory")


def test_an_unexpected_exception_keeps_its_traceback(work) -> None:
    done = stage(work, "norms", VLA_TEST_FAULT="vla_pipeline.norms:compute_feature_stats:RuntimeError")
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == "RuntimeError: injected bug"
    assert not re.search(r"^error: ", done.stderr, re.M)


# ----------------------------------------------------------------------------- what the stage says on success
def test_the_stage_result_line_is_logged_to_stdout(work) -> None:
    done = stage(work, "norms")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"frozen stats: {work / 'artifacts/norms/stats.json'}"
    quiet = run(work, ["stages/norms.py"], VLA_LOG="quiet")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout
