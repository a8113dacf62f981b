"""A typo in `dvc exp run -S +key=...` does not poison the workspace: DVC writes the key into params.yaml
before any stage runs, the stage refuses it, and the next `dvc repro` names the key as left there by the
refused run with the one command that takes it out; once that has run, the next command works."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline import make_workspace

from procs import run_bounded, vla_env

pytestmark = pytest.mark.slow

TIMEOUT_S = 600
LEFT = "'train.lrr' was left in params.yaml by a refused `dvc exp run -S` (not in the committed file)"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``cmd`` in its own session, the whole group killed if it outlives TIMEOUT_S."""
    return run_bounded(cmd, cwd=cwd, env=vla_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


def _ok(cmd: list[str], cwd: Path) -> str:
    result = _run(cmd, cwd)
    assert result.returncode == 0, f"{shlex.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture
def repo(tmp_path) -> Path:
    """A fresh git + DVC copy of the project (nothing reproduced: every stage reads the whole params file)."""
    return make_workspace(tmp_path / "repo")


def test_a_key_a_refused_exp_run_left_is_named_with_the_command_that_removes_it(repo: Path) -> None:
    committed = (repo / "params.yaml").read_text()
    refused = _run(["dvc", "exp", "run", "-S", "+train.lrr=1e-3"], repo)
    printed = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "unknown key 'train.lrr'; did you mean 'train.lr'?" in printed, printed
    assert "lrr" in yaml.safe_load((repo / "params.yaml").read_text())["train"]  # DVC left it there

    again = _run(["dvc", "repro", "demo_data"], repo)
    printed = again.stdout + again.stderr
    assert again.returncode != 0 and LEFT in printed, printed
    assert "Traceback" not in printed
    command = printed.split(f"{LEFT}; remove it, keeping your other edits, with:\n", 1)[1].splitlines()[0].strip()
    assert command == "vla params unset train.lrr"

    _ok(shlex.split(command), repo)  # the printed command, as the user runs it
    assert (repo / "params.yaml").read_text() == committed  # nothing else differed: the committed file again
    assert "demo_data" in _ok(["dvc", "repro", "demo_data"], repo)
    assert (repo / "data/demo/meta/info.json").is_file()
