"""Which paths are a DVC stage's outputs, so that a ``vla`` command run by hand never changes what
``dvc status`` reports: a command that would write into a stage's output (or a directory that holds
one, or a path inside one) writes the same path under ``<workspace>/.vla/by-hand/`` instead and says so.

The outputs are read from the workspace's ``dvc.yaml`` (``stages.*.outs``, ``metrics`` and ``plots``,
``foreach``/``matrix`` stages included), with ``${...}`` resolved from its ``vars`` and ``params.yaml``,
as DVC resolves them. The workspace is the nearest directory above the path that holds ``.dvc/``; only
its root ``dvc.yaml`` is read (this project keeps one), and ``vars`` files are read whole."""

from __future__ import annotations

import functools
import itertools
import logging
import re
from pathlib import Path

import yaml

from vla_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

BY_HAND_DIR = Path(".vla") / "by-hand"
MAX_YAML_BYTES = 4 << 20  # dvc.yaml and the vars files it reads: larger is not a pipeline definition
OUTPUT_KINDS = ("outs", "metrics", "plots")
_VAR = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def find_workspace(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` (absolute; it need not exist) that holds ``.dvc/``."""
    for parent in (path, *path.parents):
        if (parent / ".dvc").is_dir():
            return parent
    return None


def read_yaml(path: Path) -> object:
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_YAML_BYTES >> 20} MiB: not read as a DVC pipeline file")
    return yaml.safe_load(path.read_text())


def lookup(context: dict, dotted: str) -> object:
    """``a.b.0.c`` in ``context``; KeyError when it is not there."""
    node: object = context
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted)
    return node


def interpolate(value: object, context: dict) -> object:
    """``value`` with every ``${key}`` replaced from ``context`` (a whole ``${key}`` keeps its type)."""
    if not isinstance(value, str):
        return value
    whole = _VAR.fullmatch(value)
    if whole:
        return lookup(context, whole.group(1))
    return _VAR.sub(lambda m: str(lookup(context, m.group(1))), value)


def workspace_vars(root: Path, doc: dict) -> dict:
    """What ``${...}`` reads: ``params.yaml`` of the workspace, then the ``vars`` of ``dvc.yaml`` in order."""
    context: dict = {}
    sources: list = ["params.yaml", *(doc.get("vars") or [])]
    for source in sources:
        if isinstance(source, dict):
            context.update(source)
            continue
        path = root / str(source).split(":", 1)[0]
        loaded = read_yaml(path) if path.is_file() else None
        if isinstance(loaded, dict):
            context.update(loaded)
    return context


def expansions(name: str, stage: dict, context: dict) -> list[tuple[str, dict]]:
    """(stage name, context) of each stage a definition makes: itself, or one per ``foreach`` item or
    ``matrix`` combination (``${item}``, ``${key}``), as DVC names them (``evaluate@best``)."""
    if "foreach" in stage:
        items = interpolate(stage["foreach"], context)
        if isinstance(items, dict):
            return [(f"{name}@{key}", {**context, "key": key, "item": item}) for key, item in items.items()]
        return [(f"{name}@{item if isinstance(item, (str, int, float)) else i}", {**context, "item": item})
                for i, item in enumerate(items or [])]
    if "matrix" in stage:
        axes = {k: interpolate(v, context) for k, v in (stage["matrix"] or {}).items()}
        combos = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
        return [(f"{name}@{'-'.join(map(str, c.values()))}", {**context, "item": c}) for c in combos]
    return [(name, context)]


def entry_paths(entries: object) -> list[object]:
    """The paths of a list of outputs (``- path`` or ``- path: {options}``)."""
    out = []
    for entry in entries if isinstance(entries, list) else []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return out


def stage_outputs(root: Path) -> dict[Path, str]:
    """Every output of ``root/dvc.yaml``'s stages (absolute path -> stage name); empty without one."""
    path = root / "dvc.yaml"
    if not path.is_file():
        return {}
    stamp = tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in (path, root / "params.yaml"))
    return dict(_stage_outputs(root, stamp))


@functools.lru_cache(maxsize=8)
def _stage_outputs(root: Path, stamp: tuple) -> tuple[tuple[Path, str], ...]:
    doc = read_yaml(root / "dvc.yaml")
    if not isinstance(doc, dict):
        return ()
    context, found = workspace_vars(root, doc), []
    for name, stage in (doc.get("stages") or {}).items():
        if not isinstance(stage, dict):
            continue
        definition = stage.get("do", stage)
        for stage_name, ctx in expansions(name, stage, context):
            for kind in OUTPUT_KINDS:
                for raw in entry_paths(definition.get(kind)):
                    try:
                        resolved = interpolate(raw, ctx)
                    except KeyError:
                        log.debug("%s: %s of stage %s names an unknown variable", root / "dvc.yaml", raw, stage_name)
                        continue
                    found.append(((root / str(resolved)).resolve(), stage_name))
    return tuple(found)


def owning_stage(path: Path, outputs: dict[Path, str]) -> str | None:
    """The stage whose output ``path`` is, lies in, or holds."""
    for out, stage in outputs.items():
        if path == out or path.is_relative_to(out) or out.is_relative_to(path):
            return stage
    return None


def tracked_by(path: Path | str) -> tuple[Path, str] | None:
    """(workspace, stage) when writing ``path`` would change a DVC stage's output; else None."""
    target = Path(path).resolve()
    root = find_workspace(target)
    if root is None:
        return None
    stage = owning_stage(target, stage_outputs(root))
    return None if stage is None else (root, stage)


def by_hand(path: Path | str, what: str) -> Path:
    """Where a command run by hand writes ``path``: the path itself, or, when it is (in, or holds) a DVC
    stage's output, the same path under ``<workspace>/.vla/by-hand/`` (git-ignored), said on one line."""
    found = tracked_by(path)
    if found is None:
        return Path(path)
    root, stage = found
    target = Path(path).resolve()
    place = root / BY_HAND_DIR / target.relative_to(root)
    ignore = root / BY_HAND_DIR.parent / ".gitignore"
    if not ignore.is_file():
        ignore.parent.mkdir(parents=True, exist_ok=True)
        ignore.write_text("# vla's by-hand outputs: never committed, never DVC's\n*\n")
    log.warning(f"{path} is an output of DVC stage '{stage}': {what} goes to {place} instead (`dvc repro {stage}` "
                f"writes the stage's own)")
    return place


def refuse_stage_output(path: Path | str, flag: str) -> None:
    """Refuse ``path`` as the destination a user named when it is a DVC stage's output."""
    found = tracked_by(path)
    if found is not None:
        raise ConfigError(f"{path} is an output of DVC stage '{found[1]}' ({found[0] / 'dvc.yaml'}): `dvc repro "
                          f"{found[1]}` writes it; give {flag} another directory")
