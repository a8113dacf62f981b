"""Keys a refused ``dvc exp run -S`` left in params.yaml: found, explained, and taken out again.

DVC writes ``-S`` values into the workspace's params.yaml before any stage runs (ruamel.yaml's round
trip). When a stage refuses one (``-S +train.lrr=1e-3``: an unknown key), the key stays in the file, and
every later ``dvc repro`` or ``dvc exp run`` is refused for it, the message never saying where it came
from. An unknown key that the committed params.yaml lacks is reported as left there, with the one
command that takes it out again (``vla params unset``: :func:`remove_keys`, the same round trip, so the
user's other edits and comments stay; when nothing else differs from the committed file, the committed
text itself is written back, DVC's reformatting undone)."""

from __future__ import annotations

import io
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

import yaml

from vla_pipeline.errors import ConfigError
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


def _round_trip():
    from ruamel.yaml import YAML  # installed with DVC, which writes `-S` values with it

    rt = YAML()
    rt.default_flow_style = False
    return rt


def _pop(doc, key: str) -> bool:
    *sections, leaf = key.split(".")
    node = doc
    for part in sections:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        return False
    del node[leaf]
    return True


def remove_keys(path: Path, keys: Iterable[str]) -> list[str]:
    """Remove the dotted ``keys`` from the params file at ``path``; the keys it held. A key the file does not
    hold is refused (nothing is written) so that a typo in the command is not silently a no-op."""
    path, keys = Path(path), list(keys)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; pass --params PATH (default: params.yaml)")
    rt = _round_trip()
    try:
        doc = rt.load(path.read_text())
    except Exception as e:  # noqa: BLE001  (ruamel's YAMLError and its scanner/parser errors)
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the file by hand") from None
    absent = [k for k in keys if not _pop(doc, k)]
    if absent:
        raise ConfigError(f"{path} has no key {', '.join(repr(k) for k in absent)}; nothing was changed")
    out = io.StringIO()
    rt.dump(doc, out)
    text = out.getvalue()
    committed = committed_text(path)
    if committed is not None and _same_values(committed, text):
        text = committed  # nothing but the removed keys differed: the committed file, as it was written
    tmp = path.with_name(f".{path.name}.unset.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return keys


def _same_values(a: str, b: str) -> bool:
    try:
        return yaml.safe_load(a) == yaml.safe_load(b)
    except yaml.YAMLError:
        return False
