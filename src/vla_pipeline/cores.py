"""Each torch process's share of the machine's cores.

Two training processes that each use every core for torch's OpenMP threads do not share a small
machine, they collapse: on 2 cores each runs 20 to 40 times slower (docs/performance.md, *Parallel
runs*). So every entry point that runs torch (the stage scripts, ``vla``) claims a share: it registers
its pid in a per-user registry and sets torch's threads to ``cores // live registrants``. Loops call
:func:`rebalance` (cheap, throttled), so a process that started alone gives up cores when a second one
arrives (``dvc queue start --jobs 2``, ranks of ``accelerate launch`` on CPU, serve beside train) and
takes them back when it leaves.

Overrides: ``VLA_THREADS=N`` fixes the count; an ``OMP_NUM_THREADS`` set in the environment is kept
as the user's choice."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OVERRIDE_ENV = "VLA_THREADS"
REGISTRY_ENV = "VLA_CORES_REGISTRY"  # where registrants are listed (tests point it at a temporary dir)
REBALANCE_EVERY_S = 2.0
OWN_OMP_ENV = "VLA_CORE_SHARE_OMP"  # the OMP_NUM_THREADS a share set (not the user's choice)


@dataclass(frozen=True)
class CoreShare:
    threads: int
    peers: int  # live registrants, this process included
    source: str  # share | VLA_THREADS | OMP_NUM_THREADS


def compute_share(cores: int, peers: int) -> int:
    """Threads for one of ``peers`` processes on ``cores`` cores: an even split, at least one."""
    return max(1, cores // max(1, peers))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def registry_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / f"vla-cores-{uid}")


def _start_time(pid: int) -> str | None:
    """The process's start time (guards against a reused pid); None if it is gone."""
    import psutil

    try:
        return repr(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def count_live_peers(registry: Path) -> int:
    """Registrants whose process still runs; stale entries (a killed process) are removed."""
    live = 0
    for entry in registry.glob("*.pid"):
        try:
            pid, started = int(entry.stem), entry.read_text()
        except (OSError, ValueError):
            continue
        if _start_time(pid) == started:
            live += 1
        else:
            entry.unlink(missing_ok=True)
    return live


def _override() -> tuple[int, str] | None:
    for name in (OVERRIDE_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if name == "OMP_NUM_THREADS" and value == os.environ.get(OWN_OMP_ENV):
            continue  # set by a share (this process's or its parent's): not an override
        if value and value != "auto":
            try:
                return max(1, int(value)), name
            except ValueError:
                log.warning("warning: %s=%r is not a thread count; using the core share", name, value)
    return None


class _State:
    entry: Path | None = None
    share: CoreShare | None = None
    checked: float = 0.0


def _apply(share: CoreShare) -> CoreShare:
    """torch's threads, if torch is loaded; else OMP_NUM_THREADS, read when it loads (a command that never
    imports torch, such as `vla store du`, does not pay for importing it here)."""
    import sys

    _State.share = share
    if "torch" not in sys.modules:
        if share.source == "share":
            os.environ["OMP_NUM_THREADS"] = os.environ[OWN_OMP_ENV] = str(share.threads)
        return share
    import torch

    if torch.get_num_threads() != share.threads:
        torch.set_num_threads(share.threads)
        log.debug("torch threads: %d (%d process(es) share %d cores; %s)", share.threads, share.peers,
                  available_cores(), share.source)
    return share


def _measure() -> CoreShare:
    fixed = _override()
    peers = max(1, count_live_peers(registry_dir())) if _State.entry is not None else 1
    if fixed is not None:
        return CoreShare(fixed[0], peers, fixed[1])
    return CoreShare(compute_share(available_cores(), peers), peers, "share")


def claim_core_share() -> CoreShare:
    """Register this process and set torch's threads to its share (idempotent). The entry is removed
    at exit; one left by a killed process is ignored (its pid no longer runs)."""
    if _State.entry is None:  # registered even with an override: its threads still occupy cores
        import atexit

        registry = registry_dir()
        started = _start_time(os.getpid())
        try:
            registry.mkdir(parents=True, exist_ok=True)
            entry = registry / f"{os.getpid()}.pid"
            entry.write_text(started or "")
            _State.entry = entry
            atexit.register(release_core_share)
        except OSError as e:  # an unwritable temp dir: run with the whole machine, say so
            log.warning("warning: cannot register in %s (%s); torch uses every core", registry, e)
    _State.checked = time.monotonic()
    return _apply(_measure())


def rebalance() -> CoreShare | None:
    """Re-split the cores if processes came or went; at most every REBALANCE_EVERY_S seconds, so a
    loop may call it every step. A no-op in a process that did not claim a share."""
    if _State.share is None or time.monotonic() - _State.checked < REBALANCE_EVERY_S:
        return _State.share
    _State.checked = time.monotonic()
    return _apply(_measure())


def release_core_share() -> None:
    if _State.entry is not None:
        _State.entry.unlink(missing_ok=True)
        _State.entry = None
