"""Editing a params file in place: removing keys (``vla params unset``), as DVC writes ``-S`` values.

``dvc exp run -S +train.lrr=1e-3`` writes the key into the workspace's params.yaml before any stage
runs (ruamel.yaml's round trip); when the stage refuses it, it stays there. :func:`remove_keys` takes
exactly those keys out with the same round trip, so the user's other edits and comments stay; when
nothing else differs from the committed file, the committed text itself is written back (byte for byte,
DVC's reformatting undone)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from vla_pipeline.errors import ConfigError
from vla_pipeline.params.git import committed_text


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
