"""A `vla` command run by hand in a DVC workspace never changes what `dvc status` reports: on a copy of
this repository after `dvc repro` (the stages before train), `vla preflight --params other.yaml` and the
other writers put what would be a stage's output under .vla/by-hand/, and say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import commit_all, make_workspace

from procs import run_bounded

pytestmark = pytest.mark.slow



def run(cmd: list[str], cwd: Path, timeout: int = 600):
    """``cmd`` in its own process group, killed as a group when it outlives ``timeout`` (tests/procs.py)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return run_bounded(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True)


def ok(cmd: list[str], cwd: Path) -> str:
    result = run(cmd, cwd)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def vla(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "vla_pipeline.cli", *args], cwd)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A git + DVC copy of the repository with shrunk params, its stages up to preflight and norms reproduced."""
    root = make_workspace(tmp_path_factory.mktemp("workspace") / "repo")
    ok([sys.executable, "-m", "dvc", "repro", "norms", "preflight"], root)
    commit_all(root, "repro")
    return root


def status(root: Path) -> tuple[dict, str]:
    """What `dvc status` and `git status` report."""
    dvc = json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout or "{}")
    return dvc, run(["git", "status", "--porcelain", "--untracked-files=all"], root).stdout


def test_vla_by_hand_leaves_dvc_status_as_it_was(workspace: Path) -> None:
    before = status(workspace)
    assert not {"validate", "norms", "preflight"} & set(before[0]), before  # reproduced: up to date
    other = yaml.safe_load((workspace / "params.yaml").read_text())
    other["preflight"]["memory_gib"] = 1000.0
    other["norms"]["val_fraction"] = 0.5
    (workspace / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    by_hand = workspace / ".vla" / "by-hand" / "artifacts"
    runs = {"preflight": vla("preflight", "--params", "other.yaml", cwd=workspace),
            "validate": vla("validate", "--params", "other.yaml", "--no-dry-run", cwd=workspace),
            "norms": vla("norms", "--set", "norms.val_fraction=0.5", cwd=workspace)}
    for name, result in runs.items():
        assert result.returncode == 0, f"vla {name}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "is an output of DVC stage" in result.stderr and str(by_hand) in result.stderr + result.stdout
    (workspace / "other.yaml").unlink()
    assert status(workspace) == before
    assert json.loads((by_hand / "preflight" / "verdict.json").read_text())["ok"]
    assert (by_hand / "preflight" / "report.json").is_file() and (by_hand / "validation" / "report.json").is_file()
    assert json.loads((by_hand / "norms" / "split.json").read_text()) != json.loads(
        (workspace / "artifacts" / "norms" / "split.json").read_text())  # val_fraction 0.5: its own split
    refused = vla("make-demo", "data/demo", cwd=workspace)
    assert refused.returncode == 1 and "output of DVC stage 'demo_data'" in refused.stderr
    assert status(workspace) == before
