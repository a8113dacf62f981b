"""dvc.yaml names the code each stage runs: every project module a stage script imports (directly
or through other modules) is one of its deps, so a code change re-runs exactly the stages it touches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "vla_pipeline"


def imported_modules(path: Path, seen: set[Path]) -> set[Path]:
    """The project files ``path`` imports, transitively (a package counts as its directory)."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.ImportFrom) and node.module == "vla_pipeline":  # from vla_pipeline import a, b
            names += [f"vla_pipeline.{a.name}" for a in node.names]
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name != "vla_pipeline" and not name.startswith("vla_pipeline."):
                continue
            parts = name.split(".")[1:]
            target = SRC.joinpath(*parts).with_suffix(".py") if parts else SRC / "__init__.py"
            if parts and not target.is_file():
                target = SRC / parts[0]  # a package (compat)
            if target not in seen and target.exists():
                seen.add(target)
                if target.is_file():
                    imported_modules(target, seen)
    return seen


def stage_deps() -> dict[str, tuple[Path, set[Path]]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = REPO / body["cmd"].split("stages/")[1].split()[0]
        out[name] = (REPO / "stages" / script.name, {REPO / d for d in body["deps"] if isinstance(d, str)})
    return out


@pytest.mark.parametrize("stage", sorted(stage_deps()))
def test_stage_deps_cover_every_imported_module(stage: str) -> None:
    script, deps = stage_deps()[stage]
    needed = imported_modules(script, {SRC / "__init__.py"})
    covered = lambda p: p in deps or any(d.is_dir() and d in p.parents for d in deps)  # noqa: E731 (a dir dep)
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not covered(p))
    assert not missing, f"dvc.yaml stage {stage} imports {missing} but does not list them as deps"
