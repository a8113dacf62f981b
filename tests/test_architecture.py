"""The package's import graph: no import goes to a higher layer, ``train`` and ``eval`` never import
each other, and no cycle between modules or between the top-level packages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vla_pipeline"

#: layer of each top-level name under vla_pipeline (a subpackage or a module); lower never imports higher
LAYERS = {
    "__init__": 0, "errors": 0, "logs": 0,
    "params": 1, "provenance": 1, "store": 1, "phases": 0, "tracking": 1, "quiet": 1, "cores": 1, "workspace": 1,
    "data": 2,
    "validate": 3,
    "norms": 4,
    "model": 5,
    "checkpoint": 6,
    "train": 7,
    "preflight": 7,
    "eval": 7,
    "deploy": 7,
    "cli": 8, "cli_data": 8, "cli_deploy": 8, "cli_params": 8,
}
#: the two concerns at the top that stay apart
TRAIN_SIDE = {"train"}
EVAL_SIDE = {"eval"}
#: known violations still to be removed by the moves of issue 16 (each entry is importer -> imported)
ALLOWED: set[tuple[str, str]] = set()
KNOWN_CYCLES: list[set[str]] = []


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """vla_pipeline modules (dotted, without the prefix) that ``path`` imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vla_pipeline":
            base = node.module.split(".")[1:]
            for alias in node.names:
                sub = SRC.joinpath(*base, alias.name)
                out.add(".".join([*base, alias.name]) if sub.with_suffix(".py").is_file() or sub.is_dir()
                        else ".".join(base) or "__init__")
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("vla_pipeline.")}
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def top(module: str) -> str:
    return module.split(".")[0]


def test_every_top_level_name_has_a_layer() -> None:
    names = {top(m) for m in graph()}
    assert not names - LAYERS.keys(), f"give these a layer in LAYERS: {sorted(names - LAYERS.keys())}"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, imported in edges.items():
        for target in imported:
            a, b = top(importer), top(target)
            if (a, b) in ALLOWED:
                continue
            if LAYERS[b] > LAYERS[a] or (a in TRAIN_SIDE and b in EVAL_SIDE) or (a in EVAL_SIDE and b in TRAIN_SIDE):
                bad.append(f"{importer} (layer {LAYERS[a]}) imports {target} (layer {LAYERS[b]})")
    return sorted(bad)


def test_no_import_goes_up_a_layer_or_across_train_and_eval() -> None:
    bad = upward_imports(graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; the components with more than one node are cycles."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in list(edges):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def test_no_cycle_between_modules() -> None:
    assert not strongly_connected(graph())


def package_cycles() -> list[set[str]]:
    edges: dict[str, set[str]] = {}
    for importer, imported in graph().items():
        edges.setdefault(top(importer), set()).update(top(t) for t in imported if top(t) != top(importer))
    return strongly_connected(edges)


def test_no_cycle_between_top_level_packages() -> None:
    assert [c for c in package_cycles() if c not in KNOWN_CYCLES] == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert upward_imports({"errors": {"train"}, "eval": {"train"}, "train": {"errors"}}) == [
        "errors (layer 0) imports train (layer 7)", "eval (layer 7) imports train (layer 7)"]


#: functions copied from transformers (their signatures and bodies follow upstream, see model/compat)
COPIED = {"model/compat/gemma.py", "model/compat/attention.py"}


def sizes() -> tuple[list[str], list[str], list[str]]:
    """Modules over 400 lines, functions over 50 lines, functions with more than 6 positional parameters."""
    long_modules, long_functions, wide_functions = [], [], []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(f"{rel}: {text.count(chr(10))} lines")
        if rel in COPIED:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                positional = [a for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if length > 50:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
                if len(positional) > 6:
                    wide_functions.append(f"{rel}:{node.lineno} {node.name}: {len(positional)} positional")
    return long_modules, long_functions, wide_functions


def test_no_module_over_400_lines_no_function_over_50_lines_or_6_positional_parameters() -> None:
    long_modules, long_functions, wide_functions = sizes()
    assert not long_modules, long_modules
    assert not long_functions, long_functions
    assert not wide_functions, wide_functions


#: where ``["shape"]`` is read for something that is not an info.json feature (the frame cache's own manifest)
SHAPE_READERS_ALLOWED = {"data/features.py", "data/frame_cache.py:manifest"}


def feature_shape_reads(path: Path) -> list[str]:
    """``x["shape"]`` and ``x.get("shape")`` in ``path``, each as 'file:line: code' (the frame cache's own
    manifest entries, read as ``doc["shape"]``, are named ``file:manifest``)."""
    rel = path.relative_to(SRC).as_posix()
    tree, lines = ast.parse(path.read_text()), path.read_text().splitlines()
    found = []
    for node in ast.walk(tree):
        subscript = isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "shape"
        get = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
               and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "shape")
        if subscript or get:
            receiver = ast.unparse(node.value if subscript else node.func.value)
            where = f"{rel}:manifest" if receiver == "doc" and rel == "data/frame_cache.py" else f"{rel}"
            if where not in SHAPE_READERS_ALLOWED:
                found.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_only_the_one_reading_indexes_a_features_shape() -> None:
    """Every reader of a camera's (or vector's) declared shape goes through data/features.py, the one module
    built on LeRobot's own feature handling (a channel-first camera read as (H, W, C) trained on
    [224, 3, 224] images)."""
    offenders = [hit for path in sorted(SRC.rglob("*.py")) for hit in feature_shape_reads(path)]
    assert not offenders, "read the shape through vla_pipeline.data.features instead:\n" + "\n".join(offenders)


def test_the_shape_rule_sees_a_hwc_read(tmp_path) -> None:
    probe = SRC / "data" / "_probe_shape_rule.py"
    probe.write_text('def f(info, key):\n    h, w, c = info["features"][key]["shape"]\n    return h\n')
    try:
        assert feature_shape_reads(probe) == ['data/_probe_shape_rule.py:2: h, w, c = info["features"][key]["shape"]']
    finally:
        probe.unlink()
