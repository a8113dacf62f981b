"""Parameters: typed access to a params mapping (here), what params.yaml may hold and its defaults
(``models``, pydantic; checked and worded by ``schema``) and
the one loader of the entry points (``load``: stages and ``vla``; the library takes the mapping).
A missing or malformed value is a :class:`ConfigError` naming the key."""

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
            raise ConfigError(f"params: missing key '{dotted}'; see docs/parameters.md")
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


def optional_float(value) -> float | None:
    """A number that may be ``null`` (off)."""
    return None if value is None else float(value)


def choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"params: '{key}' = {value!r}; expected one of {list(allowed)}")
    return value


def at_least(value: float, minimum: float, key: str) -> float:
    if value < minimum:
        raise ConfigError(f"params: '{key}' = {value!r}; must be >= {minimum}")
    return value
