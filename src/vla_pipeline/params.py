"""Typed access to a params mapping (the dict a stage read from params.yaml; the library never
reads the file). A missing or malformed value is a :class:`ConfigError` naming the key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vla_pipeline.errors import ConfigError

_MISSING = object()


def param(params: dict, dotted: str, cast: Callable[[Any], Any] = lambda v: v, default: Any = _MISSING) -> Any:
    """``params["a"]["b"]`` for ``dotted="a.b"``, cast (YAML reads ``1e-3`` as a string, say)."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not _MISSING:
                return default
            raise ConfigError(f"params: missing key '{dotted}'; see README.md's parameter table")
        node = node[part]
    try:
        return cast(node)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params: '{dotted}' = {node!r} is not a valid {getattr(cast, '__name__', cast)}") from e


def int_list(value) -> list[int]:
    """A YAML list of integers (episode indices); null is empty."""
    return [int(v) for v in value or []]


def int_or_auto(value) -> int | str:
    """A count that may be ``auto`` (resolved where the machine is known)."""
    return value if value == "auto" else int(value)


def choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"params: '{key}' = {value!r}; expected one of {list(allowed)}")
    return value


def at_least(value: float, minimum: float, key: str) -> float:
    if value < minimum:
        raise ConfigError(f"params: '{key}' = {value!r}; must be >= {minimum}")
    return value


def load_params_file(path) -> dict:
    """Read and check a params file (for the entry points: stages and ``vla``; library functions take
    the mapping). Broken YAML names the file, line and column; a mapping that does not follow the schema
    (param_schema.py) lists every problem; neither runs anything."""
    from pathlib import Path

    import yaml

    from vla_pipeline.param_schema import check_params

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
    check_params(params, str(p))
    return params
