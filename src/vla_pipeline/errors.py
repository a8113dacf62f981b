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


class TrainingDivergedError(VlaError):
    """The loss became NaN/Inf: training stops instead of failing silently."""


USER_ERRORS = (VlaError, FileNotFoundError)


def run_entry_point(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a user error becomes ``error: <message>`` on stderr and exit code 1."""
    try:
        return fn() or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
