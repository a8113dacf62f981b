"""The committed dvc.lock records the code and params the committed demo ran with.

A fresh clone's `make demo` re-runs a stage whose code or params differ from what dvc.lock records and
rewrites dvc.lock, leaving git dirty; and the checked-in metrics would describe code that no longer
exists. So a commit that changes a stage's code (or params) without re-running the demo fails here, in
well under a second: each code dependency's md5 is computed the way DVC computes it (a file: md5 of
its bytes; a directory: md5 of the JSON list of its files' md5 and relative path, `.dvcignore`
applied, with `.dir` appended) and compared with dvc.lock's. tests/e2e/test_stages.py makes sure
those dependencies are every module a stage imports, so the train stage's entry here is the code
identity its run key hashes (provenance.compute_code_identity)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from procs import run_bounded

REPO = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("src/", "stages/")
IGNORED_PARTS = ("__pycache__",)  # .dvcignore: __pycache__/ and *.pyc
FIX = "run `make demo` (dvc repro) and commit dvc.lock with the code"


def dvc_md5(path: Path) -> str:
    """DVC 3's md5 of a file, or of a directory (``<md5>.dir``)."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.endswith(".pyc")
             and not set(p.relative_to(path).parts) & set(IGNORED_PARTS)]
    entries = [{"md5": dvc_md5(p), "relpath": p.relative_to(path).as_posix()}
               for p in sorted(files, key=lambda p: p.relative_to(path).parts)]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def lock_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]


def pipeline_stages() -> list[str]:
    """dvc.yaml's stages, ``foreach`` expanded (``evaluate@best``): dvc.lock may keep entries of stages
    that no longer exist, which nothing runs."""
    names = []
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        names += [f"{name}@{key}" for key in stage["foreach"]] if "foreach" in stage else [name]
    return sorted(names)


def lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def normalized(value):
    """YAML 1.1 (PyYAML) reads ``3e-05`` as a string where DVC's YAML 1.2 reads a number."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@pytest.mark.parametrize("stage", pipeline_stages())
def test_dvc_lock_records_the_code_each_stage_runs_now(stage: str) -> None:
    assert stage in lock_stages(), f"dvc.lock has no entry for stage {stage}: {FIX}"
    deps = [d for d in lock_stages()[stage]["deps"] if d["path"].startswith(CODE_ROOTS)]
    assert deps, f"dvc.lock's {stage} lists no code"
    stale = [d["path"] for d in deps if not (REPO / d["path"]).exists() or dvc_md5(REPO / d["path"]) != d["md5"]]
    assert not stale, f"dvc.lock's {stage} was run with other code than {stale} hold now: {FIX}"


@pytest.mark.parametrize("stage", pipeline_stages())
def test_dvc_lock_records_the_params_each_stage_runs_with_now(stage: str) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    recorded = lock_stages()[stage].get("params", {}).get("params.yaml", {})
    changed = [k for k, v in recorded.items() if normalized(lookup(params, k)) != normalized(v)]
    assert not changed, f"dvc.lock's {stage} ran with other values of {changed} than params.yaml has: {FIX}"


def test_the_dvc_md5_reading_matches_dvc_on_a_directory(tmp_path) -> None:
    """The directory hash as DVC writes it (checked against `dvc` itself on a small tree)."""
    import os
    import sys

    (tmp_path / "code" / "sub").mkdir(parents=True)
    (tmp_path / "code" / "a.py").write_text("a = 1\n")
    (tmp_path / "code" / "sub" / "b.py").write_text("b = 2\n")
    (tmp_path / "code" / "sub" / "__pycache__").mkdir()
    (tmp_path / "code" / "sub" / "__pycache__" / "b.cpython-312.pyc").write_bytes(b"\0")
    (tmp_path / "code.txt").write_text("x\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run_bounded(cmd, cwd=tmp_path, check=True, env=env, timeout=120)
    (tmp_path / ".dvcignore").write_text((REPO / ".dvcignore").read_text())
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo\n    deps: [code, code.txt]\n")
    run_bounded(["dvc", "repro", "-q"], cwd=tmp_path, check=True, env=env, timeout=120)
    recorded = {d["path"]: d["md5"] for d in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["s"]["deps"]}
    assert recorded == {"code": dvc_md5(tmp_path / "code"), "code.txt": dvc_md5(tmp_path / "code.txt")}
