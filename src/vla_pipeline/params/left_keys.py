"""Keys a refused ``dvc exp run -S`` left in params.yaml.

DVC writes ``-S`` values into the workspace's params.yaml before any stage runs. When a stage refuses
one (``-S +train.lrr=1e-3``: an unknown key), the key stays in the file, and every later ``dvc repro`` or
``dvc exp run`` is refused for it, the message never saying where it came from. An unknown key that the
committed params.yaml lacks is reported as left there, with the one command that takes it out again."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from vla_pipeline.params.git import committed_text

UNKNOWN = re.compile(r"unknown key '([^']+)'")


def _has(params, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def unset_command(path: Path, keys: list[str]) -> str:
    """``vla params unset KEY...`` (with ``--params`` unless the file is ./params.yaml)."""
    where = [] if Path(path).resolve() == (Path.cwd() / "params.yaml").resolve() else ["--params", str(path)]
    return shlex.join(["vla", "params", "unset", *keys, *where])


def find_left_keys(path: Path, file_params: dict, problems: list[str]) -> list[str]:
    """The unknown keys of ``problems`` that the file at ``path`` holds and its committed version lacks."""
    unknown = [m.group(1) for line in problems if (m := UNKNOWN.match(line))]
    held = [k for k in unknown if _has(file_params, k)]
    committed = committed_text(path) if held else None
    if committed is None:
        return []
    try:
        committed_params = yaml.safe_load(committed)
    except yaml.YAMLError:
        return []
    return [k for k in held if not _has(committed_params, k)]


def explain_left_keys(path: Path, file_params: dict, problems: list[str]) -> list[str]:
    """The lines that say so, after the problems (none when no unknown key is a left one)."""
    left = find_left_keys(path, file_params, problems)
    if not left:
        return []
    names = ", ".join(f"'{k}'" for k in left)
    return [f"{names} {'was' if len(left) == 1 else 'were'} left in {Path(path).name} by a refused "
            f"`dvc exp run -S` (not in the committed file); remove {'it' if len(left) == 1 else 'them'}, "
            f"keeping your other edits, with:\n  {unset_command(path, left)}"]
