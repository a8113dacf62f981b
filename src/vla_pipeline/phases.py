"""Where a stage's time goes besides computing: spans of hashing, saving, loading and copying.

``with timed("hashing", "dataset fingerprint"):`` logs the span's seconds (stdlib logging, DEBUG) and,
when the environment names a file in ``VLA_PHASE_LOG``, appends one JSON line to it::

    {"kind": "hashing", "what": "dataset fingerprint", "seconds": 1.25, "depth": 0, "pid": 4242}

``depth`` counts the spans open around it in this process (the manifest hashed inside a save has depth
1), so a sum over depth-0 spans counts no second twice. ``benchmarks/full_size_rehearsal.py`` reads the
file to split each stage's wall time into compute and overhead (docs/performance.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator

PHASE_LOG_ENV = "VLA_PHASE_LOG"
KINDS = ("hashing", "saving", "loading", "copying")

logger = logging.getLogger(__name__)
_open = threading.local()


@contextlib.contextmanager
def timed(kind: str, what: str) -> Iterator[None]:
    """Time the block as a span of ``kind`` (one of ``KINDS``), also when it raises."""
    if kind not in KINDS:
        raise ValueError(f"span kind {kind!r}; one of {', '.join(KINDS)}")
    depth = getattr(_open, "depth", 0)
    _open.depth = depth + 1
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        _open.depth = depth
        logger.debug("%s %s: %.3f s", kind, what, seconds)
        _append({"kind": kind, "what": what, "seconds": round(seconds, 6), "depth": depth, "pid": os.getpid()})


def _append(record: dict) -> None:
    path = os.environ.get(PHASE_LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a") as f:  # one short line per write: lines of concurrent processes stay whole
            f.write(json.dumps(record) + "\n")
    except OSError as e:  # a measurement must never stop a run
        logger.warning("could not append to %s=%s: %s", PHASE_LOG_ENV, path, e)
