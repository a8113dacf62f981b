"""The leaf types of the params schema (``params/models.py``): each is a pydantic type that takes what
params.yaml may hold and no more, annotated with :class:`Spec`, what a problem message says is allowed.

Strict as the entry points need it: an integer key takes no float or bool (``int(1.5)`` is 1,
``int(True)`` is 1); a number key takes a YAML number or a string PyYAML leaves unparsed (``1e-3``,
also what ``dvc exp run -S`` writes), never a bool, never inf or nan; a string is never empty."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, Strict
from pydantic_core import PydanticCustomError

KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
              "range": "a [low, high] pair of numbers"}


@dataclass(frozen=True)
class Spec:
    """What a leaf's problem message says: ``kind`` (int keys add ``(not float 1.5)``) and what is allowed."""

    kind: str
    allowed: str


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    low = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    high = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    return " and ".join(p for p in (low, high) if p)


def _describe(kind: str, bounds: str = "", null: bool = False) -> str:
    return " ".join(p for p in (KIND_WORDS[kind], bounds, "or null" if null else "") if p)


def _constraints(lo, hi, lo_open, hi_open) -> dict:
    out = {}
    if lo is not None:
        out["gt" if lo_open else "ge"] = lo
    if hi is not None:
        out["lt" if hi_open else "le"] = hi
    return out


def as_number(value: Any) -> float | None:
    """A YAML number, or a string PyYAML left unparsed (``1e-3``); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _number(value: Any) -> float:
    number = as_number(value)
    if number is None or not math.isfinite(number):
        raise PydanticCustomError("number", "not a finite number")
    return number


def _nullable(tp, null: bool):
    return tp | None if null else tp


def int_key(lo: float | None = None, hi: float | None = None, *, null: bool = False, allowed: str = ""):
    """An integer (never a float or bool) in bounds."""
    text = allowed or _describe("int", _bounds_text(lo, hi, False, False), null)
    return Annotated[_nullable(Annotated[int, Strict(), Field(**_constraints(lo, hi, False, False))], null),
                     Spec("int", text)]


def float_key(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
              null: bool = False):
    """A finite number (a string PyYAML left unparsed included; never a bool) in bounds."""
    number = Annotated[float, BeforeValidator(_number), Field(**_constraints(lo, hi, lo_open, hi_open))]
    return Annotated[_nullable(number, null), Spec("float", _describe("float", _bounds_text(lo, hi, lo_open, hi_open),
                                                                      null))]


def str_key(*choices: str, null: bool = False, allowed: str = ""):
    """A non-empty string, or one of ``choices``."""
    tp = Literal[choices] if choices else Annotated[str, Strict(), Field(min_length=1)]
    text = allowed or (f"one of {list(choices)}" if choices else "a string")
    return Annotated[_nullable(tp, null), Spec("str", f"{text} or null" if null and not allowed else text)]


BOOL = Annotated[bool, Strict(), Spec("bool", "true or false")]
SWITCH = Annotated[Literal["auto"] | Annotated[bool, Strict()], Spec("bool", "auto, true or false")]
PATH = str_key(allowed="a path")
COUNT_OR_AUTO = Annotated[Literal["auto"] | Annotated[int, Strict(), Field(ge=0)],
                          Spec("int", "an integer >= 0 or auto")]
EPISODES = Annotated[list[Annotated[int, Strict(), Field(ge=0)]] | None,
                     Spec("int_list", "a list of episode indices (integers >= 0), or null")]


def _ordered(pair: list[float]) -> list[float]:
    if pair[0] > pair[1]:
        raise PydanticCustomError("rule", "the range is inverted: low {low} > high {high}",
                                  {"low": pair[0], "high": pair[1]})
    return pair


def jitter_range(lo: float, hi: float | None = None):
    """null or ``[low, high]`` with low <= high, both in bounds."""
    bound = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
    number = Annotated[float, BeforeValidator(_number), Field(**_constraints(lo, hi, False, False))]
    pair = Annotated[list[number], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
    return Annotated[pair | None, Spec("range", f"null or [low, high] with low <= high, both {bound}")]


def choices_list(*choices: str, allowed: str):
    """null or a list of some of ``choices``."""
    return Annotated[list[Literal[choices]] | None, Spec("list", allowed)]
