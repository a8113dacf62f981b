"""dvc.yaml names the code each stage runs: every project module a stage script imports (directly
or through other modules) is one of its deps, so a code change re-runs exactly the stages it touches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "vla_pipeline"


def resolve(dotted: str) -> list[Path]:
    """The files importing ``dotted`` runs: every package ``__init__.py`` on the way, then the module
    (or the package's ``__init__.py``); empty when ``dotted`` is no project module (a name in one)."""
    parts = dotted.split(".")[1:]
    files = [SRC / "__init__.py"]
    for i in range(1, len(parts) + 1):
        here = SRC.joinpath(*parts[:i])
        if here.is_dir():
            files.append(here / "__init__.py")
        elif here.with_suffix(".py").is_file():
            files.append(here.with_suffix(".py"))
        else:
            return [] if i == len(parts) and i > 1 else files[:-1] if i > 1 else []
    return files


def imported_modules(path: Path, seen: set[Path]) -> set[Path]:
    """The project files ``path`` imports, transitively, with the packages' ``__init__.py`` files."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # a name may be a module
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            local = path.parent / f"{name}.py"  # a helper beside a stage script (_params)
            if local.is_file() and local not in seen:
                seen.add(local)
                imported_modules(local, seen)
            if name != "vla_pipeline" and not name.startswith("vla_pipeline."):
                continue
            for target in resolve(name):
                if target not in seen:
                    seen.add(target)
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


@pytest.mark.parametrize("stage", sorted(stage_deps()))
def test_stage_deps_name_only_code_that_exists_and_runs(stage: str) -> None:
    """A dep that does not exist fails ``dvc repro``; one the stage never imports re-runs it for nothing."""
    script, deps = stage_deps()[stage]
    needed = imported_modules(script, {SRC / "__init__.py"})
    code = [d for d in deps if d.is_relative_to(SRC)]
    absent = [str(d.relative_to(REPO)) for d in code if not d.exists()]
    unused = [str(d.relative_to(REPO)) for d in code
              if d.exists() and d not in needed and not any(d in p.parents for p in needed)]
    assert not absent, f"dvc.yaml stage {stage} lists {absent}, which do not exist"
    assert not unused, f"dvc.yaml stage {stage} lists {unused}, which it never imports"


def test_the_resolver_follows_packages_and_names() -> None:
    assert resolve("vla_pipeline.errors") == [SRC / "__init__.py", SRC / "errors.py"]
    assert resolve("vla_pipeline.errors.ConfigError") == []  # a name, not a module: its module is listed apart
    packages = [p.parent for p in SRC.rglob("*/__init__.py")]
    for package in packages:
        module = next(package.glob("[!_]*.py"), None)
        if module is not None:
            dotted = "vla_pipeline." + ".".join(module.relative_to(SRC).with_suffix("").parts)
            assert package / "__init__.py" in resolve(dotted) and module in resolve(dotted)
