"""The one way the entry points (stage scripts and ``vla``) read parameters: a params file, then
dotted ``key=value`` overrides (as ``dvc exp run -S``), then the schema check, before anything runs."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import yaml

from vla_pipeline.errors import ConfigError
from vla_pipeline.params.left_keys import explain_left_keys
from vla_pipeline.params.schema import check_params


def load_params(path: Path, overrides: Iterable[str] = ()) -> dict:
    """Read ``path``, apply ``overrides`` (``train.lr=1e-4``; the value is read as YAML) and check the
    result. Broken YAML names the file, line and column; a mapping that does not follow the schema
    (``params/schema.py``) lists every problem, and says which unknown keys a refused ``dvc exp run -S``
    left in the file (``params/left_keys.py``); neither runs anything."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file {p} not found; pass --params PATH (default: params.yaml)")
    try:
        params = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file (`git diff {p}` shows your "
                          f"edits) and run again") from None
    in_file = copy.deepcopy(params)
    for override in overrides:
        apply_override(params, override)
    check_params(params, str(p), explain=lambda problems: explain_left_keys(p, in_file, problems))
    return params


def apply_override(params: dict, override: str) -> None:
    """Set ``a.b.c=value`` in ``params`` (in place); the key must name a section that exists."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: the value is not valid YAML") from None
    *sections, leaf = key.split(".")
    node = params
    for i, part in enumerate(sections):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"override {override!r}: {'.'.join(sections[:i + 1])} is not a section of the "
                              f"params file")
        node = node[part]
    node[leaf] = value
