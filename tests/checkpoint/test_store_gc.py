"""``vla store du`` and ``vla store gc``: disk use with hard links counted once, and cleaning that keeps
every run a commit's, an experiment's or the workspace's dvc.lock references, or a running training
holds. Built on a fake store and a tiny git repository with a fake DVC cache, in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from vla_pipeline.checkpoint import store_refs
from vla_pipeline.checkpoint.run_place import RunPlace
from vla_pipeline.checkpoint.store_usage import compute_store_usage
from vla_pipeline.cli import main

from procs import run_bounded

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
KEY_A, KEY_B, KEY_C = ("a" * 64, "b" * 64, "c" * 64)
OLD_DATE = "2020-01-01T00:00:00+00:00"


def git(repo: Path, *args: str, **env: str) -> str:
    return run_bounded([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True,
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
    """``vla store gc --repo repo extra`` (with ``--keep-recent 0`` unless ``extra`` sets it)'s output."""
    recent = [] if "--keep-recent" in extra else ["--keep-recent", "0"]
    assert main(["store", "gc", "--repo", str(repo), *recent, *extra]) == 0
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
    from vla_pipeline.checkpoint.store_gc import consult_repos, delete_planned, plan_gc

    store, repo = setup
    consulted = consult_repos(store, repo, keep_recent_h=0)
    plan = plan_gc(compute_store_usage(store), consulted.refs, consulted.rules)
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
    assert main(["store", "du", "--repo", str(repo), "--keep-recent", "0"]) == 0
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


def make_clone(tmp_path: Path, store: Path, key: str, name: str = "clone2") -> Path:
    """Another git repository sharing ``store`` whose one commit's dvc.lock references run ``key``."""
    clone = tmp_path / name
    clone.mkdir()
    git(clone, "init", "-q", "-b", "main")
    (clone / ".gitignore").write_text(".dvc/cache\n")
    (clone / "params.yaml").write_text(yaml.safe_dump({"base": {"store": str(store)}}))
    commit_lock(clone, lock_text(clone, key), "train")
    return clone


def test_gc_keeps_the_runs_of_another_clone_that_ran_store_du(setup, tmp_path, capsys) -> None:
    store, repo = setup
    clone = make_clone(tmp_path, store, KEY_B)
    assert main(["store", "du", "--repo", str(clone)]) == 0  # registers it in <store>/repos
    capsys.readouterr()
    out = gc(repo, capsys, "--yes")
    assert f"consulted {clone} (registered clone)" in out and f"consulted {repo} (this repository)" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_B[:16]]
    (clone / ".git" / "HEAD").write_text("garbage\n")  # that clone's git now fails: nothing unreferenced goes
    make_run(store, KEY_C)
    (store / "frame_cache" / "another000000000").mkdir()
    out = gc(repo, capsys, "--yes")
    assert f"could not consult {clone}" in out and (store / "runs" / KEY_C[:16]).is_dir()
    assert (store / "frame_cache" / "another000000000").is_dir()
    shutil.rmtree(clone)  # a clone that is gone no longer keeps anything
    out = gc(repo, capsys, "--yes")
    assert f"skipped {clone}: registered" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16]]


def test_gc_keeps_recent_runs_by_default(setup, capsys) -> None:
    store, repo = setup
    out = gc(repo, capsys, "--yes", "--keep-recent", "72")
    assert "modified within the last 72 h" in out and (store / "runs" / KEY_B[:16]).is_dir()


def test_a_failing_git_is_an_error_and_a_directory_without_git_says_it_has_the_workspace_alone(
        setup, tmp_path, capsys, monkeypatch) -> None:
    store, repo = setup
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path / "no-bin"))  # git not on PATH
        assert main(["store", "gc", "--repo", str(repo), "--keep-recent", "0", "--yes"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: `git ") and "install git" in err and err.count("\n") == 1
    assert (store / "runs" / KEY_B[:16]).is_dir()
    shutil.rmtree(repo / ".git")
    out = gc(repo, capsys)
    assert f"{repo} is not a git repository: only its workspace's dvc.lock" in out


def test_frame_caches_are_kept_while_a_referenced_run_trains(setup, capsys) -> None:
    store, repo = setup
    place = RunPlace.make(repo / "artifacts" / "train", repo / "artifacts" / "train_live", store, KEY_A)
    with place.lock(KEY_A):
        out = gc(repo, capsys, "--yes")
    assert "a training is running and may read it" in out
    assert (store / "frame_cache" / "oldentry00000000").is_dir()


@pytest.mark.parametrize("where", ["standalone/tmpab12cd", "tmpqueued"])
def test_an_experiment_dvc_still_evaluates_keeps_its_runs(setup, capsys, where) -> None:
    store, repo = setup
    make_run(store, KEY_C)
    workspace = repo / ".dvc" / "tmp" / "exps" / where  # DVC 3's temp (--temp) and queue workspaces
    state = workspace / "artifacts" / "train" / "checkpoints" / "000010" / "training_state"
    state.mkdir(parents=True)
    (state / "run_state.json").write_text(json.dumps({"run_key": KEY_B}))
    (workspace / "artifacts" / "train_live").mkdir(parents=True)
    (workspace / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_C}))
    (workspace / "params.yaml").write_text(yaml.safe_dump({"train": {"out_dir": "artifacts/train"}}))
    out = gc(repo, capsys, "--yes")
    assert f"dvc exp workspace .dvc/tmp/exps/{where}" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_B[:16], KEY_C[:16]]


def test_deletion_renames_under_the_lock_reports_errors_and_finishes_what_a_crash_left(
        setup, capsys, monkeypatch) -> None:
    from vla_pipeline.checkpoint import store_gc

    store, repo = setup
    make_run(store, KEY_C)
    removed, real = [], shutil.rmtree

    def rmtree(path, *a, **k):
        removed.append(Path(path).name)
        if KEY_B[:16] in Path(path).name:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, *a, **k)

    monkeypatch.setattr(store_gc.shutil, "rmtree", rmtree)
    out = gc(repo, capsys, "--yes")
    assert f".deleting-{KEY_C[:16]}-{os.getpid()}" in removed and not (store / "runs" / KEY_C[:16]).exists()
    assert f"could not delete {store / 'runs' / KEY_B[:16]}: [Errno 13]" in out and "Traceback" not in out
    assert not (store / "frame_cache" / "oldentry00000000").exists()  # the others went on
    monkeypatch.setattr(store_gc.shutil, "rmtree", real)
    leftover = store / "runs" / f".deleting-{KEY_B[:16]}-{os.getpid()}"
    assert main(["store", "du", "--repo", str(repo)]) == 0
    assert any(line.startswith("deleting") and leftover.name in line for line in capsys.readouterr().out.splitlines())
    gc(repo, capsys, "--yes")
    assert not leftover.exists()


def test_a_relative_base_store_is_taken_from_the_repository(setup, tmp_path, capsys, monkeypatch) -> None:
    store, repo = setup
    (repo / "params.yaml").write_text(yaml.safe_dump({"base": {"store": "../store"}}))
    (tmp_path / "x" / "y").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "x" / "y")  # ../store from here is tmp_path/x/store, which does not exist
    assert main(["store", "du", "--repo", str(repo)]) == 0
    assert f"on disk in {store} and" in capsys.readouterr().out


def test_live_params_name_a_run_only_without_the_dir_unverified_and_under_the_time_rule(setup, capsys) -> None:
    store, repo = setup
    old = make_run(store, KEY_C)
    for path in [*old.rglob("*"), old]:
        os.utime(path, (1.5e9, 1.5e9))  # 2017: before the commit below
    (repo / "artifacts" / "train_live").mkdir(parents=True)
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_B}))
    git(repo, "add", "artifacts/train_live/params.yaml")
    commit_lock(repo, lock_text(repo, KEY_B, cached=False), "B, .dir not in the cache",
                GIT_COMMITTER_DATE=OLD_DATE, GIT_AUTHOR_DATE=OLD_DATE)
    commit_lock(repo, lock_text(repo, KEY_A), "train A again")
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_A}))
    out = gc(repo, capsys, "--yes")
    assert "(from live params, unverified)" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_B[:16], KEY_C[:16]]


def test_a_dir_in_the_cache_is_used_alone_and_a_malformed_one_is_unresolved(setup, capsys) -> None:
    store, repo = setup
    (repo / "artifacts" / "train_live").mkdir(parents=True)
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_B}))
    git(repo, "add", "artifacts/train_live/params.yaml")
    text = lock_text(repo, KEY_C)  # its .dir is cached; the run_state.json object it lists is then removed
    state_md5 = hashlib.md5(json.dumps({"step": 10, "run_key": KEY_C}).encode()).hexdigest()
    (repo / ".dvc" / "cache" / "files" / "md5" / state_md5[:2] / state_md5[2:]).unlink()
    commit_lock(repo, text, "C, partly in the cache; the live params say B (a failed stage republished them)")
    malformed = cache_put(repo, b'{"not": "a list"}', ".dir")
    commit_lock(repo, text.replace(text.split("md5: ")[1].split()[0], malformed), "a malformed .dir")
    (repo / "artifacts" / "train_live" / "params.yaml").write_text(yaml.safe_dump({"run_key": KEY_A}))
    out = gc(repo, capsys)
    assert "(from live params" not in out and "lacks (or cannot read) its checkpoints/000010" in out
    assert f"listing {malformed} in the DVC cache is malformed" in out and "Traceback" not in out
    assert f"delete {store / 'runs' / KEY_B[:16]}" not in out  # kept by the time rule, not by the live params
    assert "may be what an unresolved or unverified dvc.lock references" in out


def test_moved_aside_checkpoints_are_kept(setup, capsys) -> None:
    store, repo = setup
    (store / "runs" / "unknown-run" / "checkpoints" / "000010").mkdir(parents=True)
    out = gc(repo, capsys, "--yes")
    assert "moved aside without a readable run key" in out and (store / "runs" / "unknown-run").is_dir()


def test_a_dvc_project_in_a_subdirectory_reads_its_own_dvc_lock_at_each_commit(tmp_path, capsys) -> None:
    store, top = tmp_path / "store", tmp_path / "top"
    repo = top / "proj"
    make_run(store, KEY_A)
    make_run(store, KEY_C)
    repo.mkdir(parents=True)
    git(top, "init", "-q", "-b", "main")
    (top / ".gitignore").write_text(".dvc/cache\n")
    (repo / "params.yaml").write_text(yaml.safe_dump({"base": {"store": str(store)}}))
    commit_lock(repo, lock_text(repo, KEY_C), "train C")
    commit_lock(repo, lock_text(repo, KEY_A), "train A")
    out = gc(repo, capsys, "--yes")
    assert "dvc.lock of commit" in out
    assert sorted(p.name for p in (store / "runs").iterdir()) == [KEY_A[:16], KEY_C[:16]]


def test_a_quoted_cache_dir_in_dvc_config_is_read(tmp_path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text('[cache]\n    dir = "../elsewhere"\n    type = "hardlink,copy"\n')
    assert store_refs.DvcCache(tmp_path).root == (tmp_path / "elsewhere").resolve()
    assert store_refs.dvc_config_value(tmp_path / ".dvc" / "config", "cache", "type") == "hardlink,copy"


def test_the_cli_default_keep_recent_is_gc_s() -> None:
    from vla_pipeline.checkpoint.store_gc import DEFAULT_KEEP_RECENT_H
    from vla_pipeline.cli_data import KEEP_RECENT_H

    assert KEEP_RECENT_H == DEFAULT_KEEP_RECENT_H
