"""dvc.yaml names the code each stage runs: every project module a stage script imports (directly
or through other modules) is one of its deps, so a code change re-runs exactly the stages it touches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vla_pipeline.provenance import find_imported_files, resolve_module_files

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "vla_pipeline"


def resolve(dotted: str) -> list[Path]:
    return resolve_module_files(dotted, SRC)


def imported_modules(path: Path, seen: set[Path]) -> set[Path]:
    """The project files ``path`` imports, transitively: the library's own reading of the import graph,
    which the run key's code identity hashes (provenance.compute_code_identity)."""
    return find_imported_files(path, seen, SRC)


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
    # a directory dep holds only modules the stage imports: an edit elsewhere (`vla store`'s modules beside
    # the checkpoint code train runs) neither re-runs the stage nor rewrites dvc.lock
    wider = [str(f.relative_to(REPO)) for d in code if d.is_dir() for f in d.rglob("*.py")
             if "__pycache__" not in f.parts and f not in needed]
    assert not wider, f"dvc.yaml stage {stage} depends on directories holding {wider}, which it never imports"


def test_the_resolver_follows_packages_and_names() -> None:
    assert resolve("vla_pipeline.errors") == [SRC / "__init__.py", SRC / "errors.py"]
    assert resolve("vla_pipeline.errors.ConfigError") == []  # a name, not a module: its module is listed apart
    packages = [p.parent for p in SRC.rglob("*/__init__.py")]
    for package in packages:
        module = next(package.glob("[!_]*.py"), None)
        if module is not None:
            dotted = "vla_pipeline." + ".".join(module.relative_to(SRC).with_suffix("").parts)
            assert package / "__init__.py" in resolve(dotted) and module in resolve(dotted)
