"""Errors a user can act on. Entry points (stages, ``vla``) print the message and exit 1,
never a traceback; every message says what is wrong, where, and what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable


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


USER_ERRORS = (VlaError, FileNotFoundError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def run_entry_point(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a user error becomes ``error: <message>`` on stderr and exit code 1, Ctrl-C one line
    (``interrupted: ...``) and exit code 130, never a traceback."""
    try:
        return fn() or 0
    except UserInterruptError as e:
        print(f"\ninterrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def warn_loudly(message: str) -> None:
    """A warning the user must not miss: framed on stderr, the run goes on."""
    bar = "!" * 78
    print(f"\n{bar}\nWARNING: {message}\n{bar}\n", file=sys.stderr, flush=True)
