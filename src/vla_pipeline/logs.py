"""What the package says, through stdlib logging: one line per message, rank zero only, three verbosities.

Every module logs with ``log = logging.getLogger(__name__)``. What a user sees stays what the prints said:

- an info line is the message alone, on stdout (``log.info(msg, extra=STDERR)``: on stderr, for progress
  beside a report that stdout carries);
- a warning is ``warning: <message>`` on stderr, an error ``error: <message>``; a warning the user must not
  miss (``extra=LOUD``, ``errors.warn_loudly``) is framed by a bar of ``!``;
- ``warnings.warn`` prints as a warning too (``warning: <message>``) once :func:`configure_logging` ran;
- on every process but rank zero (``RANK``/``LOCAL_RANK``/MPI's rank, or ``torch.distributed``'s) only
  errors print.

Importing the package installs the plain handler on the ``vla_pipeline`` logger (INFO, not propagated),
so a library call says what it said before; :func:`configure_logging` (the entry points: stages, ``vla``)
puts it on the root logger too (third-party records) and sets the verbosity: ``QUIET`` warnings and errors only, ``DEFAULT`` our info lines and
everyone's warnings, ``VERBOSE`` debug lines and third-party info too. ``VLA_LOG=quiet|verbose`` sets
it where no flag can (the DVC stages)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

PACKAGE = "vla_pipeline"
QUIET, DEFAULT, VERBOSE = -1, 0, 1
NAMES = {"quiet": QUIET, "default": DEFAULT, "verbose": VERBOSE}
#: ``extra=`` of an info line that goes to stderr (progress, while stdout carries a report)
STDERR = {"vla_stderr": True}
#: ``extra=`` of a warning the user must not miss: framed, as ``errors.warn_loudly`` frames it
LOUD = {"vla_loud": True}
#: ``extra=`` of a command's lines that name it first (``vla convert: warning: ...``)


def tagged(tag: str, **extra) -> dict:
    return {"vla_tag": tag, **extra}


#: ``extra=`` of an error line printed as it is (the error boundary's own lines, already prefixed)
PLAIN = {"vla_plain": True}
BAR = "!" * 78
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def process_rank() -> int:
    """This process's rank: torch.distributed's once it is initialized, else the launcher's variables
    (accelerate and torchrun set ``RANK``/``LOCAL_RANK``; MPI its own), else 0."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and getattr(dist, "is_available", lambda: False)() and dist.is_initialized():
        return int(dist.get_rank())
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


class RankZeroFilter(logging.Filter):
    """Rank zero says everything; the other ranks only their errors (each rank's own failure matters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or process_rank() == 0


class LineFormatter(logging.Formatter):
    """One line per message: info as it is, ``warning: ``/``error: `` before the others; a third-party
    logger's name before its info and debug lines (seen with ``--verbose``), ours before debug lines."""

    def format(self, record: logging.LogRecord) -> str:
        tag = getattr(record, "vla_tag", "")
        return f"{tag}: {self._format(record)}" if tag else self._format(record)

    def _format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if getattr(record, "vla_plain", False):
            return text
        if getattr(record, "vla_loud", False):
            return f"\n{BAR}\nWARNING: {text}\n{BAR}\n"
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        ours = record.name == PACKAGE or record.name.startswith(PACKAGE + ".") or record.name == "__main__"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {text}"
        return text if ours else f"{record.name}: {text}"


class StdStreams(logging.Handler):
    """Writes to the current ``sys.stdout``/``sys.stderr`` (looked up per line: pytest's capture swaps
    them): warnings and errors, and info marked :data:`STDERR`, to stderr; the rest to stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            to_stderr = record.levelno >= logging.WARNING or getattr(record, "vla_stderr", False)
            stream = sys.stderr if to_stderr else sys.stdout
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging's own contract: never raise from emit
            self.handleError(record)


def make_handler() -> StdStreams:
    handler = StdStreams()
    handler.setFormatter(LineFormatter())
    handler.addFilter(RankZeroFilter())
    handler.set_name(PACKAGE)
    return handler


def _ours(handler: logging.Handler) -> bool:
    return isinstance(handler, StdStreams) and handler.get_name() == PACKAGE


def install_default_handler() -> None:
    """Our info lines print even where no entry point configured logging (a library call, a test)."""
    package = logging.getLogger(PACKAGE)
    if any(_ours(h) for h in package.handlers):
        return
    package.addHandler(make_handler())
    package.propagate = False  # one line per message, whatever handlers a third party puts on the root
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


def parse_verbosity(verbosity: int | str | None) -> int:
    """``QUIET``/``DEFAULT``/``VERBOSE`` from an int (a count of ``-v`` minus ``-q`` is clamped), a name, or
    None (``VLA_LOG``, else the default)."""
    if verbosity is None:
        verbosity = os.environ.get("VLA_LOG", "").strip().lower() or DEFAULT
    if isinstance(verbosity, str):
        if verbosity not in NAMES:
            raise ValueError(f"verbosity {verbosity!r}: use one of {sorted(NAMES)}")
        return NAMES[verbosity]
    return max(QUIET, min(VERBOSE, int(verbosity)))


def configure_logging(verbosity: int | str | None = None) -> int:
    """The entry points' logging: one plain handler on the root logger, the rank-zero filter, the levels of
    ``verbosity`` (see :func:`parse_verbosity`), ``warnings.warn`` printed as ``warning: <message>``.
    Calling it again replaces the levels (tests run several commands in one process). Returns the level."""
    level = parse_verbosity(verbosity)
    root, package = logging.getLogger(), logging.getLogger(PACKAGE)
    for logger in (root, package):
        for handler in [h for h in logger.handlers if _ours(h)]:
            logger.removeHandler(handler)
    root.addHandler(make_handler())  # third-party records (their warnings; their info with VERBOSE)
    package.addHandler(make_handler())  # ours, apart: LeRobot's init_logging replaces the root's handlers
    package.propagate = False
    root.setLevel(logging.INFO if level >= VERBOSE else logging.WARNING)
    package.setLevel({QUIET: logging.WARNING, DEFAULT: logging.INFO, VERBOSE: logging.DEBUG}[level])
    logging.getLogger("__main__").setLevel(package.level)
    warnings.showwarning = show_warning
    return level


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.warn`` as one ``warning: <message>`` line (ours) or with its category and place (others')."""
    text = str(message)
    if not str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
        text = f"{text} ({category.__name__}, {filename}:{lineno})"
    logging.getLogger(f"{PACKAGE}.warnings").warning(text)
