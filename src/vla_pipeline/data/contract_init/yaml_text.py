"""Writing YAML by hand for people to read: scalars quoted only when needed, comments aligned in one
column, numbers short and exact enough."""

from __future__ import annotations

import json
import re

# ----------------------------------------------------------------------------- YAML text helpers
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def quote(value: str) -> str:
    """``value`` as a YAML scalar: plain when that reads back as the same string, else double-quoted."""
    s = str(value)
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]*", s) and s.lower() not in _YAML_WORDS
    return s if plain else json.dumps(s)


def commented(text: str, comment: str, column: int = 30) -> str:
    return f"{text.ljust(column)} # {comment}"


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def format_value(value: float) -> str:
    return f"{value:.4g}"


def comment_lines(text: str, width: int = 100) -> list[str]:
    """``text`` as ``# `` comment lines of at most ``width`` characters."""
    import textwrap

    return textwrap.wrap(text, width=width - 2, initial_indent="# ", subsequent_indent="# ",
                         break_long_words=False, break_on_hyphens=False)


def aligned_rows(rows: list[tuple[str, str | None]]) -> list[str]:
    """``text  # comment`` rows with their comments in one column (at least the shipped files' 31)."""
    column = max([30, *(len(t) for t, c in rows if c)])
    return [commented(t, c, column) if c else t for t, c in rows]
