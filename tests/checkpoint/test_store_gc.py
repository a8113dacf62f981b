"""``vla store du`` and ``vla store gc``: disk use with hard links counted once, and cleaning that keeps
every run a commit's, an experiment's or the workspace's dvc.lock references, or a running training
holds. Built on a fake store and a tiny git repository with a fake DVC cache, in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from vla_pipeline.checkpoint import store_refs
from vla_pipeline.checkpoint.run_place import RunPlace
from vla_pipeline.checkpoint.store_usage import compute_store_usage
from vla_pipeline.cli import main

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
KEY_A, KEY_B, KEY_C = ("a" * 64, "b" * 64, "c" * 64)
OLD_DATE = "2020-01-01T00:00:00+00:00"


def git(repo: Path, *args: str, **env: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **env}).stdout.strip()


def make_run(store: Path, key: str, size: int = 65536, step: str = "000010") -> Path:
    """``runs/<key[:16]>`` with one checkpoint: a weights file of ``size`` bytes and its run_state.json."""
    step_dir = store / "runs" / key[:16] / "checkpoints" / step
    (step_dir / "pretrained_model").mkdir(parents=True)
    (step_dir / "training_state").mkdir()
    (step_dir / "pretrained_model" / "model.safetensors").write_bytes(os.urandom(size))
    (step_dir / "training_state" / "run_state.json").write_text(json.dumps({"step": 10, "run_key": key}))
    return store / "runs" / key[:16]


def cache_put(repo: Path, data: bytes, suffix: str = "") -> str:
    """Put ``data`` into the fake DVC cache (DVC 3's layout) and return its md5 (``suffix``: ``.dir``)."""
    md5 = hashlib.md5(data).hexdigest() + suffix
    path = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5


def lock_text(repo: Path, key: str, cached: bool = True) -> str:
    """A dvc.lock whose train stage's output holds a checkpoint of run ``key``; ``cached``: the ``.dir`` object
    and the run_state.json are in the DVC cache (else only the hashes are made up)."""
    state = json.dumps({"step": 10, "run_key": key}).encode()
    if cached:
        listing = [{"md5": cache_put(repo, state), "relpath": "checkpoints/000010/training_state/run_state.json"},
                   {"md5": "0" * 32, "relpath": "last_checkpoint.json"}]
        dir_md5 = cache_put(repo, json.dumps(listing).encode(), ".dir")
    else:
        dir_md5 = hashlib.md5(key.encode()).hexdigest() + ".dir"
    stage = {"cmd": "python stages/train.py",
             "params": {"params.yaml": {"train": {"out_dir": "artifacts/train", "live_dir": "artifacts/train_live"}}},
             "outs": [{"path": "artifacts/train", "hash": "md5", "md5": dir_md5, "size": 10, "nfiles": 2}]}
    return yaml.safe_dump({"schema": "2.0", "stages": {"train": stage}}, sort_keys=False)


def commit_lock(repo: Path, text: str, message: str, **env: str) -> str:
    (repo / "dvc.lock").write_text(text)
    git(repo, "add", "dvc.lock")
    git(repo, "commit", "-qm", message, **env)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    """A store with runs A (referenced by the committed dvc.lock) and B (referenced by nothing), two frame-cache
    entries (one named by the workspace's manifest) and wandb/; a git repo whose one commit references A."""
    store, repo = tmp_path / "store", tmp_path / "repo"
    make_run(store, KEY_A)
    make_run(store, KEY_B)
    for entry in ("keepme0000000000", "oldentry00000000"):
        (store / "frame_cache" / entry).mkdir(parents=True)
        (store / "frame_cache" / entry / "front.u8").write_bytes(b"\0" * 4096)
    (store / "wandb" / "run-1").mkdir(parents=True)
    (store / "wandb" / "run-1" / "events").write_text("w&b")
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text(".dvc/cache\n")
    (repo / "params.yaml").write_text(yaml.safe_dump({"base": {"store": str(store)}}))
    (repo / "artifacts" / "frame_cache").mkdir(parents=True)
    (repo / "artifacts" / "frame_cache" / "manifest.json").write_text(json.dumps({"store_entry": "keepme0000000000"}))
    commit_lock(repo, lock_text(repo, KEY_A), "train A")
    return store, repo


def gc(repo: Path, capsys, *extra: str) -> str:
    assert main(["store", "gc", "--repo", str(repo), *extra]) == 0
    return capsys.readouterr().out


def test_du_counts_each_hard_linked_inode_once_and_says_what_is_linked_from_outside(tmp_path) -> None:
    store = tmp_path / "store"
    run = make_run(store, KEY_A, size=1 << 20)
    weights = run / "checkpoints" / "000010" / "pretrained_model" / "model.safetensors"
    (run / "set_aside" / "t0" / "000010").mkdir(parents=True)
    os.link(weights, run / "set_aside" / "t0" / "000010" / "model.safetensors")  # a second link inside the store
    state_file = run / "checkpoints" / "000010" / "training_state" / "run_state.json"
    os.link(state_file, run / "set_aside" / "t0" / "000010" / "run_state.json")  # linked inside the store only
    outside = tmp_path / "artifacts" / "train"
    outside.mkdir(parents=True)
    os.link(weights, outside / "model.safetensors")  # and one outside it (artifacts/train)
    on_disk = os.stat(weights).st_blocks * 512
    state = os.stat(state_file).st_blocks * 512

    usage = compute_store_usage(store, also=[outside])

    (entry,) = usage.entries
    assert (entry.kind, entry.name, entry.checkpoints, entry.set_aside, entry.run_keys) == ("run", KEY_A[:16], 1, 1, (KEY_A,))
    assert entry.bytes == on_disk + state  # three links, one inode: counted once
    assert entry.shared == on_disk  # st_nlink 3 > 2 links inside the store; run_state.json's 2 links are both inside
    assert (usage.outside[0].bytes, usage.outside[0].shared) == (on_disk, on_disk)  # the store's own inode
    assert usage.total == on_disk + state


def test_gc_without_yes_deletes_nothing_and_lists_what_it_would_delete(setup, capsys) -> None:
    store, repo = setup
    out = gc(repo, capsys)
    assert f"delete {store / 'runs' / KEY_B[:16]}" in out
    assert f"keep   {store / 'runs' / KEY_A[:16]}" in out
    assert "rebuildable from the dataset" in out and "nothing was deleted" in out and "--yes" in out
    assert all((store / p).is_dir() for p in ("runs/" + KEY_A[:16], "runs/" + KEY_B[:16], "frame_cache/oldentry00000000"))


def test_gc_yes_deletes_only_the_unreferenced_run_and_frame_cache(setup, capsys) -> None:
    store, repo = setup
    out = gc(repo, capsys, "--yes")
    assert f"deleting {store / 'runs' / KEY_B[:16]}" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16]]
    assert sorted(p.name for p in (store / "frame_cache").iterdir() if p.is_dir()) == ["keepme0000000000"]
    assert (store / "wandb" / "run-1" / "events").is_file()


def test_gc_keeps_a_run_whose_lock_a_running_training_holds(setup, capsys) -> None:
    store, repo = setup
    place = RunPlace.make(repo / "artifacts" / "train", repo / "artifacts" / "train_live", store, KEY_B)
    with place.lock(KEY_B):  # as the Trainer holds it while it trains
        out = gc(repo, capsys, "--yes")
    assert "a running training holds" in out
    assert (store / "runs" / KEY_B[:16] / "checkpoints").is_dir()
    assert (store / "frame_cache" / "oldentry00000000").is_dir()  # the training may be reading it


def test_a_run_locked_after_the_plan_is_kept_at_deletion(setup, capsys) -> None:
    from vla_pipeline.checkpoint.store_gc import delete_planned, plan_gc

    store, repo = setup
    plan = plan_gc(compute_store_usage(store), store_refs.find_references(repo), repo)
    place = RunPlace.make(repo / "artifacts" / "train", repo / "artifacts" / "train_live", store, KEY_B)
    lines = []
    with place.lock(KEY_B):
        delete_planned(plan, lines.append)
    assert any(line.startswith(f"kept {store / 'runs' / KEY_B[:16]}") for line in lines)
    assert (store / "runs" / KEY_B[:16] / "checkpoints").is_dir()


def test_an_experiment_ref_keeps_the_run_its_dvc_lock_references(setup, capsys) -> None:
    store, repo = setup
    make_run(store, KEY_C)
    git(repo, "checkout", "-q", "-b", "exp-work")
    exp = commit_lock(repo, lock_text(repo, KEY_C), "exp1")
    git(repo, "update-ref", "refs/exps/ab/cdef/exp1", exp)  # as `dvc exp run` keeps an experiment
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "exp-work")  # reachable from the exp ref only
    (repo / "dvc.lock").write_text(git(repo, "show", "HEAD:dvc.lock") + "\n")
    out = gc(repo, capsys, "--yes")
    assert "exp exp1" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_C[:16]]


def test_without_the_dvc_cache_the_tracked_live_params_name_the_run(setup, capsys) -> None:
    store, repo = setup
    (repo / "artifacts" / "train_live").mkdir(parents=True)
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_B}))
    git(repo, "add", "artifacts/train_live/params.yaml")
    commit_lock(repo, lock_text(repo, KEY_B, cached=False), "train B, its objects not in the cache")
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_A}))
    out = gc(repo, capsys, "--yes")
    assert "could not tell" not in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_B[:16]]


def test_an_unresolved_revision_keeps_the_runs_begun_before_it(setup, capsys) -> None:
    store, repo = setup
    old = make_run(store, KEY_C)
    for path in [*old.rglob("*"), old]:
        os.utime(path, (1.5e9, 1.5e9))  # 2017: before the unresolved commit
    commit_lock(repo, lock_text(repo, "d" * 64, cached=False), "unresolvable",
                GIT_COMMITTER_DATE=OLD_DATE, GIT_AUTHOR_DATE=OLD_DATE)
    commit_lock(repo, lock_text(repo, KEY_A), "train A again")
    out = gc(repo, capsys, "--yes")
    assert "could not tell which run dvc.lock at commit" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_C[:16]]  # B began after it


def test_the_workspace_train_output_keeps_its_run(setup, capsys) -> None:
    store, repo = setup
    state = repo / "artifacts" / "train" / "checkpoints" / "000010" / "training_state"
    state.mkdir(parents=True)
    (state / "run_state.json").write_text(json.dumps({"run_key": KEY_B}))
    out = gc(repo, capsys, "--yes")
    assert "workspace artifacts/train" in out
    assert (store / "runs" / KEY_B[:16]).is_dir()


def test_each_dvc_lock_blob_is_parsed_once(setup, monkeypatch) -> None:
    store, repo = setup
    for i in range(5):
        (repo / f"f{i}").write_text(str(i))
        git(repo, "add", f"f{i}")
        git(repo, "commit", "-qm", f"code {i}")  # same dvc.lock blob
    reads = []
    real = store_refs.read_blob
    monkeypatch.setattr(store_refs, "read_blob", lambda r, blob: reads.append(blob) or real(r, blob))
    refs = store_refs.find_references(repo)
    assert len(reads) == 1
    assert refs.revisions == 7 and refs.runs[KEY_A[:16]][0].startswith("dvc.lock of branch main")


def test_du_prints_the_table_with_what_gc_would_do(setup, capsys) -> None:
    store, repo = setup
    assert main(["store", "du", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("run") and KEY_B[:16] in line)
    assert "no, gc deletes it" in row
    assert any(line.startswith("wandb") and "never deleted" in line for line in out.splitlines())
    assert "total:" in out


@pytest.mark.parametrize("argv, message", [
    (["store", "du", "--store", "{tmp}/nowhere"], "store {tmp}/nowhere does not exist"),
    (["store", "gc", "--store", "{tmp}", "--repo", "{tmp}"], "no dvc.lock in {tmp}"),
])
def test_a_missing_store_or_dvc_lock_is_one_line_without_traceback(tmp_path, capsys, argv, message) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(tmp=tmp_path)) and "Traceback" not in err
    assert err.count("\n") == 1


def test_the_manifest_name_is_the_frame_cache_one() -> None:
    from vla_pipeline.checkpoint.store_usage import FRAME_CACHE_MANIFEST
    from vla_pipeline.data.frame_cache import FRAME_CACHE_MANIFEST_FILE

    assert FRAME_CACHE_MANIFEST == FRAME_CACHE_MANIFEST_FILE


def test_a_frame_cache_being_built_is_kept(setup, capsys) -> None:
    from vla_pipeline.store import file_lock

    store, repo = setup
    (store / "frame_cache" / "newentry00000000.tmp").mkdir()  # save_frame_cache's unfinished entry
    with file_lock(store / "frame_cache" / "newentry00000000.lock", "building the frame cache"):
        out = gc(repo, capsys, "--yes")
    assert "being built" in out
    assert (store / "frame_cache" / "newentry00000000.tmp").is_dir()
    assert not (store / "frame_cache" / "oldentry00000000").exists()
