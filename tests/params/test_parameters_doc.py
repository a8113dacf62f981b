"""docs/parameters.md and the schema (params/models.py) list the same keys, both ways."""

from __future__ import annotations

import re

from vla_pipeline.params.models import defaults
from vla_pipeline.params.schema import ALL_KEYS

from conftest import REPO

DOC = REPO / "docs" / "parameters.md"


def parameters_section(text: str) -> str:
    """The section "Parameters (`params.yaml`)", up to the next one (the CLI flags' table is another)."""
    start = text.index("## Parameters (`params.yaml`)")
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def documented_keys(text: str) -> set[str]:
    """The keys of the table's first column: `a.b.c`, and `.d` after it for `a.b.d`."""
    keys = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        full = None
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if token.startswith(".") and full is not None:
                token = full.rsplit(".", 1)[0] + token
            full = token
            keys.add(token)
    return keys


def schema_keys() -> tuple[set[str], set[str]]:
    """(every key, the leaves); a phase is ``phases.<name>`` for each phase params.yaml ships."""
    phases = {f"phases.{name}" for name in defaults()["phases"]}
    keys = set(ALL_KEYS) | phases
    sections = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    return keys, keys - sections


def test_the_doc_table_parses_its_shorthands() -> None:
    doc = documented_keys("| `train.peft.targets`, `.r`, `.alpha` | `null` | `explicit` only |\n"
                          "| `demo.min_length`, `demo.max_length` | 40, 90 | x |\n| key | default | meaning |\n")
    assert doc == {"train.peft.targets", "train.peft.r", "train.peft.alpha", "demo.min_length", "demo.max_length"}


def test_every_documented_key_is_in_the_schema() -> None:
    keys, _ = schema_keys()
    unknown = sorted(documented_keys(parameters_section(DOC.read_text())) - keys)
    assert not unknown, f"docs/parameters.md documents keys the schema (params/models.py) lacks: {unknown}"


def test_every_key_of_the_schema_is_documented() -> None:
    """A leaf is documented by its own row, or by its section's (`policy.dims`: see file)."""
    doc = documented_keys(parameters_section(DOC.read_text()))
    _, leaves = schema_keys()
    missing = sorted(k for k in leaves
                     if not any(k == d or k.startswith(d + ".") for d in doc))
    assert not missing, f"add these keys of params/models.py to docs/parameters.md: {missing}"
