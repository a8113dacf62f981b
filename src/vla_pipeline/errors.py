"""Errors a user can act on, and the one error boundary of the entry points (stages, ``vla``):
``run_entry_point`` prints an expected failure's message and exits 1, never a traceback (``VLA_DEBUG=1``
shows it); every message says what is wrong, where, and what to do."""

from __future__ import annotations

import errno
import json
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

from vla_pipeline.logs import LOUD, PLAIN


class VlaError(Exception):
    """Base class of the project's actionable errors."""


class ConfigError(VlaError, ValueError):
    """A parameter is missing, malformed or inconsistent with another."""


class ContractError(VlaError, ValueError):
    """The contract file is malformed, or a dataset does not match it."""


class ValidationError(VlaError):
    """The dataset failed validation; the message lists every error."""


class CompatError(VlaError):
    """The installed transformers is not the version the compatibility layer was proven for."""


class CheckpointError(VlaError):
    """A checkpoint is missing, incomplete or does not match the model or data it is used with."""


class TrainInputError(VlaError):
    """An input of the train stage is missing or does not match the others."""


class PreflightError(VlaError):
    """A preflight check failed: the run would fail or compute something else on this machine."""


class TrainingDivergedError(VlaError):
    """The loss became NaN/Inf: training stops instead of failing silently."""


class UserInterruptError(VlaError):
    """Ctrl-C (SIGINT): the message says where the work stopped and how to continue."""


class ArtifactError(VlaError, ValueError):
    """A JSON file a stage wrote is torn (cut short: a killed write, a full disk) or not this project's (valid
    JSON of another shape): the message names the file and the stage that writes it again."""


USER_ERRORS = (VlaError, FileNotFoundError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
log = logging.getLogger(__name__)


def read_json_artifact(path: Path, stage: str, keys: tuple[str, ...] = (), kind: type = dict):
    """The JSON document at ``path`` that stage ``stage`` wrote, of type ``kind`` and holding ``keys``; else an
    :class:`ArtifactError` naming the file and ``dvc repro -f <stage>``. A missing file stays a
    ``FileNotFoundError`` (the caller says which stage makes it)."""
    path = Path(path)
    rerun = f"re-run `dvc repro -f {stage}`"
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ArtifactError(f"{path} is torn or not this project's ({type(e).__name__}{where}): {rerun}") from e
    return check_artifact(doc, path, stage, keys, kind)


def check_artifact(doc, path: Path, stage: str, keys: tuple[str, ...] = (), kind: type = dict):
    """``doc`` (read from ``path``) when it is a ``kind`` holding ``keys``, else an :class:`ArtifactError`."""
    why = None
    if not isinstance(doc, kind):
        why = f"a JSON {type(doc).__name__}, not {'an object' if kind is dict else 'a ' + kind.__name__}"
    elif missing := [k for k in keys if k not in doc]:
        why = f"no {', '.join(map(repr, missing))} key{'s' if len(missing) > 1 else ''}"
    if why is not None:
        raise ArtifactError(f"{path} is torn or not this project's ({why}): re-run `dvc repro -f {stage}`")
    return doc


def _chain(e: BaseException):
    """``e`` and the exceptions it was raised from or while handling (an OOM re-raised by a wrapper)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _is_oom(e: BaseException) -> bool:
    """torch.OutOfMemoryError / torch.cuda.OutOfMemoryError (by name: errors.py never imports torch) or
    the host's MemoryError."""
    return isinstance(e, MemoryError) or (type(e).__name__ == "OutOfMemoryError"
                                          and type(e).__module__.split(".")[0] == "torch")


def describe_oom(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        what = f"the machine's memory (RAM) ran out{f' ({e})' if str(e) else ''}"
    else:
        what = f"GPU memory ran out ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return (f"out of memory: {what}. Lower train.batch_size (or evaluate.batch_size), train.num_workers, "
            f"frame_cache.num_workers, or turn on train.gradient_checkpointing; stop other processes on this "
            f"machine; `vla preflight` measures what fits (docs/performance.md)")


def describe_os_error(e: OSError) -> str | None:
    """Permission denied and a full disk (or quota): the path and what to do; None for other OS errors."""
    path = e.filename if e.filename is not None else "a file"
    if isinstance(e, PermissionError):
        return (f"permission denied: {path} ({e.strerror or e}); make it writable by this user (chmod/chown), "
                f"or point the param that names it at a directory you own")
    if e.errno in DISK_FULL:
        kind = "disk quota exceeded" if e.errno == errno.EDQUOT else "no space left on the disk"
        return (f"{kind} writing {path}; free space there (`vla store du` shows the runs and frame caches, "
                f"`vla store gc` deletes the unreferenced), or put base.store / the output dirs on another disk, "
                f"then run the same command again")
    return None


def describe_failure(e: BaseException) -> str | None:
    """The one message of an expected failure, or None for a bug (its traceback is kept)."""
    if isinstance(e, USER_ERRORS):
        return str(e)
    oom = next((x for x in _chain(e) if _is_oom(x)), None)
    if oom is not None:
        return describe_oom(oom)
    if isinstance(e, OSError):
        return describe_os_error(e)
    return None


def debugging() -> bool:
    return os.environ.get("VLA_DEBUG", "").strip() not in ("", "0")


def run_entry_point(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; an expected failure (a user error, a torn or foreign artifact, out of memory, permission
    denied, a full disk) becomes ``error: <message>`` on stderr and exit code 1, Ctrl-C one line
    (``interrupted: ...``) and exit code 130; ``VLA_DEBUG=1`` prints the traceback before the message. Any
    other exception (a bug) propagates with its traceback."""
    try:
        return fn() or 0
    except UserInterruptError as e:
        _say(f"\ninterrupted: {e}", e)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as e:
        _say("\ninterrupted (Ctrl-C): run the same command again", e)
        return EXIT_INTERRUPTED
    except Exception as e:
        message = describe_failure(e)
        if message is None:
            raise
        _say(f"error: {message}", e)
        return 1


def _say(text: str, e: BaseException) -> None:
    if debugging():
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip("\n") + "\n" + text
    log.error(text, extra=PLAIN)


def warn_loudly(message: str) -> None:
    """A warning the user must not miss: framed on stderr, the run goes on."""
    log.warning(message, extra=LOUD)
