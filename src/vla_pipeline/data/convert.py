"""LeRobot's previous dataset format (v2.1): recognise it, say how to convert it, and convert it.

The pipeline reads LeRobotDataset v3.0 only. LeRobot 0.4.2 ships a v2.1 -> v3.0 converter,
``python -m lerobot.datasets.v30.convert_dataset_v21_to_v30``, but as a command it is unfit here:

* it converts *in place*: the original is moved to ``<root>_old`` and the result takes its name
  (a DVC-tracked directory changes under DVC), and an existing ``<root>_v30`` is deleted;
* ``--root`` is the *parent* of the dataset (it reads ``<root>/<repo_id>``); given the dataset
  folder itself, as its docstring says, it finds nothing and downloads from the hub;
* ``--push-to-hub`` defaults to true (deletes files and tags on the hub);
* at a data-file rollover (> 100 MB of parquet) the first episode of the new file keeps the
  previous file's index in ``meta/episodes`` (huggingface/lerobot#2401, fixed after 0.4.2).

``vla convert SRC --out DST`` therefore calls the converter's own functions (info, tasks, data,
videos, episodes metadata) with ``SRC`` as the input and a fresh directory as the output, fixes the
data file indices, loads the result back with LeRobot, and only then names it ``DST``. ``SRC`` is
only read. Nothing touches the network.

Recordings made by other recorders break the converter in ways it reports badly (issue 27), so the
conversion first reads the whole source (``convert_source``), fixes in a private view what can be
fixed (``convert_stage``: stray files left out, missing statistics computed, missing ``index`` and
``task_index`` columns added, lost ``tasks.jsonl``/``episodes.jsonl`` rebuilt) and reports every
problem at once; ``convert_run`` runs LeRobot's steps on that view.

This module is the recognition and the advice; it imports only the standard library at import time
(the validator imports it). The conversion itself is ``convert_run.convert_v21_to_v30``.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

from vla_pipeline.data.tables import SUPPORTED_CODEBASE
from vla_pipeline.errors import VlaError
from vla_pipeline.logs import STDERR, tagged

log = logging.getLogger(__name__)

V21 = "v2.1"
LEGACY_FILES = ("meta/episodes.jsonl", "meta/tasks.jsonl", "meta/episodes_stats.jsonl")
V21_INFO_KEYS = ("fps", "features", "total_episodes", "total_frames", "total_chunks", "total_videos", "video_path")


class ConversionError(VlaError):
    """A dataset cannot be converted as asked (wrong format, incomplete, or the output exists)."""


def say(message: str) -> None:
    """One line of ``vla convert``'s progress, on stderr."""
    log.info(message, extra=tagged("vla convert", **STDERR))


def warn(message: str) -> None:
    """One of ``vla convert``'s warnings: ``vla convert: warning: <message>`` on stderr."""
    log.warning(message, extra=tagged("vla convert"))


# ----------------------------------------------------------------------------- detection and hint
def codebase_version(root: Path) -> str | None:
    """``codebase_version`` from ``root/meta/info.json``; None when the file is missing or unreadable."""
    try:
        info = json.loads((Path(root) / "meta" / "info.json").read_text())
    except (OSError, ValueError):
        return None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    return str(version) if version is not None else None


def detect_v21(root: Path) -> bool:
    """True when ``root`` is a LeRobot dataset in the previous format: info.json says v2.x."""
    version = codebase_version(root)
    return version is not None and version.startswith("v2.")


def default_output(root: Path) -> Path:
    """Where the hint suggests writing the converted copy: ``<root>_v30`` beside ``root``."""
    root = Path(root) if Path(root).name else Path(root).resolve()
    return root.with_name(f"{root.name}_v30")


def conversion_command(root: Path, out: Path | None = None) -> str:
    """The exact command that converts ``root`` offline into a new directory."""
    out = default_output(root) if out is None else Path(out)
    return f"vla convert {shlex.quote(str(root))} --out {shlex.quote(str(out))}"


def format_conversion_hint(root: Path) -> str:
    """One message for a dataset that is not v3.0: what was found, the conversion command, what next."""
    root = Path(root)
    version = codebase_version(root)
    out = default_output(root)
    found = f"{root / 'meta' / 'info.json'}: codebase_version {version!r}"
    then = (f"then point dataset.root (params.yaml) at {out} and track it with `dvc add {shlex.quote(str(out))}`; "
            f"{root} is left as it is")
    if version == V21:
        return (f"{found} is LeRobot's previous dataset format; the pipeline reads {SUPPORTED_CODEBASE} only. Convert it offline "
                f"into a new directory: `{conversion_command(root)}`; {then}")
    if version is not None and version.startswith("v2."):
        return (f"{found} is an older LeRobot dataset format; the pipeline reads {SUPPORTED_CODEBASE} only, and `vla convert` "
                f"reads {V21} only. Convert it to {V21} first with LeRobot "
                f"0.3.x (python -m lerobot.datasets.v21.convert_dataset_v20_to_v21), then run "
                f"`{conversion_command(root)}`; {then}")
    if version == SUPPORTED_CODEBASE:
        return f"{found}: LeRobot {SUPPORTED_CODEBASE}, the format the pipeline reads; no conversion needed"
    if not (root / "meta" / "info.json").is_file():
        return (f"{root}: no meta/info.json, not the root of a LeRobot dataset (the folder with meta/, data/, "
                f"videos/); point dataset.root at the folder that holds meta/info.json")
    return (f"{found}; the pipeline reads LeRobot {SUPPORTED_CODEBASE} datasets only and `vla convert` converts {V21} only; "
            f"re-export the dataset with LeRobot 0.4.2")
