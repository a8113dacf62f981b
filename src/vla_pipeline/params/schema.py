"""Checking a params mapping against the schema (the pydantic models of ``params/models.py``).

``check_params`` refuses, before any work starts, what would otherwise be silently ignored or cast:
an unknown key (a typo, or one added with ``dvc exp run -S +train.lrr=...``) with the closest valid
key; a missing key; a float or a bool where an integer is expected (``int(1.5)`` is 1, ``int(True)``
is 1); values out of range; augmentation ranges in the wrong order. Every problem is listed at once,
each naming the key, the value and what is allowed. The library never reads params.yaml: the entry
points (stages, ``vla``) call this on the mapping they read."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from vla_pipeline.errors import ConfigError
from vla_pipeline.params.fields import Spec, as_number
from vla_pipeline.params.models import PHASE_KEYS, PHASES_SPEC, Params, Phase, fields_of, submodel

__all__ = ["ALL_KEYS", "PHASE_KEYS", "check_params", "list_problems"]

SECTION = "a mapping of the keys docs/parameters.md lists"


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in fields_of(model).items():
        out.append(prefix + name)
        if submodel(field) is not None:
            out.extend(_all_keys(submodel(field), f"{prefix}{name}."))
    return out


#: every key of the schema, sections included, dotted (``train.augment.brightness``); phases: ``phases``
ALL_KEYS = _all_keys(Params)


def closest(dotted: str, siblings: list[str]) -> str:
    """``; did you mean 'train.lr'?`` for the closest valid key, or nothing."""
    match = difflib.get_close_matches(dotted, siblings + ALL_KEYS, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _value(params: Any, path: list) -> Any:
    for part in path:
        params = params[part]
    return params


def _locate(loc: tuple) -> tuple[list, Spec | str | None, list[str]]:
    """The key an error is at: its path, its Spec (SECTION for a section; None: an unknown key) and the
    keys beside it. Parts of ``loc`` below a leaf (a list index, a union member) are dropped."""
    model: Any = Params
    path: list = []
    for part in loc:
        siblings = [".".join(map(str, path + [k])) for k in fields_of(model)] if model != "phases" else []
        if model == "phases":
            path.append(part)
            model = Phase
            continue
        field = fields_of(model).get(part)
        path.append(part)
        if field is None:
            return path, None, siblings
        spec = next((m for m in field.metadata if isinstance(m, Spec)), None)
        if part == "phases" and model is Params:
            model, spec = "phases", PHASES_SPEC
        elif spec is not None:
            return path, spec, siblings
        else:
            model = submodel(field)
    return path, spec if model == "phases" else SECTION, []


def _line(params: dict, error: dict) -> str | None:
    if error["type"] == "missing":  # listed by _missing_keys, with the optional ones
        return None
    path, spec, siblings = _locate(error["loc"])
    key = ".".join(map(str, path))
    if spec is None:
        return f"unknown key '{key}'{closest(key, siblings)}"
    value = _value(params, path)
    if spec == SECTION:
        return f"'{key}' = {value!r}: {SECTION}"
    allowed = spec.allowed
    if error["type"] == "rule":
        allowed = f"{error['msg']}; {allowed}"
    elif spec.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)) and (
            as_number(value) is not None or isinstance(value, bool)):
        allowed += f" (not {type(value).__name__} {value!r})"
    return f"'{key}' = {value!r}: {allowed}"


def _missing_keys(node: dict, model: type[BaseModel], prefix: str) -> list[str]:
    """Every key the schema has that ``node`` lacks: params.yaml names each (the defaults are the library's)."""
    out = []
    for name, field in fields_of(model).items():
        if name not in node:
            out.append(f"missing key '{prefix}{name}'")
        elif name == "phases" and model is Params and isinstance(node[name], dict):
            for phase, values in node[name].items():
                if isinstance(values, dict):
                    out.extend(_missing_keys(values, Phase, f"phases.{phase}."))
        elif submodel(field) is not None and isinstance(node[name], dict):
            out.extend(_missing_keys(node[name], submodel(field), f"{prefix}{name}."))
    return out


def _cross_checks(params: dict) -> list[str]:
    """What no single key says: train.phase names a phase; augmentation on has a transform."""
    out = []
    train = params.get("train") if isinstance(params.get("train"), dict) else {}
    phases = params.get("phases")
    phase = train.get("phase")
    if isinstance(phases, dict) and phases and isinstance(phase, str) and phase not in phases:
        out.append(f"'train.phase' = {phase!r}: one of the phases defined under `phases`: {list(phases)}")
    augment = train.get("augment")
    if isinstance(augment, dict) and augment.get("enable") is True and not any(
            augment.get(k) is not None for k in ("brightness", "contrast", "saturation", "hue", "sharpness",
                                                 "crop_scale")):
        out.append("'train.augment.enable' is true but no transform is configured: set a range "
                   "(e.g. brightness: [0.9, 1.1]) or enable: false")
    return out


def list_problems(params: dict) -> list[str]:
    """Every problem of a params mapping, one line each (empty: it follows the schema)."""
    lines: list[str] = []
    try:
        Params.model_validate(params)
    except ValidationError as e:
        for error in e.errors():
            line = _line(params, error)
            if line is not None and line not in lines:
                lines.append(line)
    return lines + _missing_keys(params, Params, "") + _cross_checks(params)


def check_params(params: Any, source: str = "params.yaml",
                 explain: Callable[[list[str]], list[str]] | None = None) -> None:
    """Refuse a params mapping that does not follow the schema (every problem at once). ``explain`` may
    add lines after the problems (``params/workspace.py``: keys a refused ``dvc exp run -S`` left)."""
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    problems = list_problems(params)
    if problems:
        listing = "\n  ".join(problems)
        extra = "".join(f"\n{line}" for line in (explain(problems) if explain else []))
        raise ConfigError(f"{source}: {len(problems)} problem(s):\n  {listing}{extra}\n"
                          f"docs/parameters.md lists every key; nothing was run")
