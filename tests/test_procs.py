"""The tests' own bound on subprocesses: a timeout kills the child and everything it started."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from procs import run_bounded

# a child that starts a grandchild (as a stage starts wandb-core), prints its pid, then hangs
PARENT = ("import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
          "print(g.pid, flush=True); time.sleep(300)")


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_timeout_kills_the_child_and_its_grandchildren(tmp_path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as f, pytest.raises(subprocess.TimeoutExpired):
        run_bounded([sys.executable, "-c", PARENT], timeout=3, stdout=f)
    grandchild = int(out.read_text().split()[0])
    assert _gone(grandchild), f"grandchild {grandchild} survived the timeout"


def test_what_a_finished_child_left_running_is_killed(tmp_path) -> None:
    code = ("import subprocess, sys; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            "print(g.pid, flush=True)")
    result = run_bounded([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert _gone(int(result.stdout.split()[0]))
