"""Subprocesses of the tests, bounded: each runs in its own process group (session), and the whole
group is killed when it times out, when the test is interrupted (pytest-timeout, Ctrl-C) and when
it ends, so no stage, DVC worker or ``wandb-core`` under it outlives the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_TIMEOUT_S = 600


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s group (its own session): the child and what it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_bounded(cmd: list[str], *, timeout: float = DEFAULT_TIMEOUT_S, input: str | bytes | None = None,
                capture_output: bool = False, check: bool = False, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session; the group is killed on timeout (then TimeoutExpired is raised,
    as subprocess.run does), on any interruption, and after the child exits (what it left running)."""
    if capture_output:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
    if input is not None:
        popen.setdefault("stdin", subprocess.PIPE)
    popen["start_new_session"] = True
    proc = subprocess.Popen(cmd, **popen)
    try:
        out, err = _communicate(proc, input, timeout)
    finally:
        kill_group(proc)
        if proc.poll() is None:
            proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _communicate(proc: subprocess.Popen, input, timeout: float):
    """Read the child's output until it exits; a grandchild that keeps the pipes open (wandb-core) is
    killed with the group once the child is gone, instead of blocking the read until the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.communicate(input, timeout=max(0.01, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired as e:
            input = None  # sent by the first call
            if proc.poll() is not None:
                kill_group(proc)
                return _drain(proc)
            if time.monotonic() >= deadline:
                kill_group(proc)
                e.output, e.stderr = proc.communicate()
                e.timeout = timeout
                raise


def _drain(proc: subprocess.Popen, within_s: float = 30.0):
    """The rest of an exited child's output. A process outside its group that still holds the pipes (a
    daemon it started in its own session, as `dvc queue start` starts its workers) would block the read
    forever: that is an error naming the command, not a hang."""
    try:
        return proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{proc.args!r} exited, but a process it detached still holds its output pipes "
                           f"after {within_s:.0f} s: send that command's output to a file") from None


def vla_env(**extra: str) -> dict:
    """The test's environment with this venv's scripts (dvc, vla) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def start_queue_workers(repo: Path, jobs: int, log: Path, **env: str) -> None:
    """``dvc queue start --jobs N``, its output to ``log``: the workers it detaches inherit it (a pipe
    would stay open as long as they live)."""
    with log.open("w") as out:
        result = run_bounded(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=repo, env=vla_env(**env),
                             stdout=out, stderr=subprocess.STDOUT, timeout=120)
    assert result.returncode == 0, log.read_text()[-3000:]


def stop_queue_workers(repo: Path) -> None:
    """``dvc queue stop --kill``: the workers a test started never outlive it (they run detached)."""
    run_bounded(["dvc", "queue", "stop", "--kill"], cwd=repo, env=vla_env(), capture_output=True, timeout=120)
