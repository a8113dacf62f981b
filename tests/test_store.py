"""The store (store.py): runs keyed by their run key outside the DVC outputs, published best/last, the
shared frame cache built once under a lock, `vla train --out`, and Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from vla_pipeline.checkpoint.layout import BEST_FILE, LAST_FILE, read_pointer
from vla_pipeline.errors import ConfigError, TrainInputError
from vla_pipeline.store import file_lock, resolve_store

from conftest import CONTRACT, REPO, make_train_config, vla, with_faults, write_train_params
from procs import kill_group, run_bounded


def _store_config(params, tiny_run, work: Path, **overrides):
    values = dict(norms_dir=tiny_run.norms, validation_report=tiny_run.report, runs_in_store=True,
                  store=work / "store", steps=6, decay_steps=6, save_every=2, eval_every=2, keep_last=0)
    values.update(overrides)
    return make_train_config(params, tiny_run.dataset, work, **values)


def _weights(step_dir: Path) -> bytes:
    return (step_dir / "pretrained_model" / "model.safetensors").read_bytes()


def test_auto_store_is_the_environment_or_the_user_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VLA_STORE", str(tmp_path / "s"))
    assert resolve_store("auto") == resolve_store(None) == resolve_store(Path("auto")) == (tmp_path / "s").resolve()
    assert resolve_store(str(tmp_path / "x")) == (tmp_path / "x").resolve()
    monkeypatch.delenv("VLA_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_store("auto") == (tmp_path / "cache" / "vla-pipeline").resolve()


def test_a_run_resumes_from_the_store_after_its_outputs_were_reset(params, tiny_run, tmp_path, capsys) -> None:
    """What `dvc exp run` does before running: the train stage's outputs go back to dvc.lock's (here:
    gone). The run's checkpoints are in the store, keyed by its run key: it resumes, bit-identical."""
    import shutil

    from vla_pipeline.train.trainer import train

    cfg = _store_config(params, tiny_run, tmp_path)
    train(cfg)
    (run_dir,) = (tmp_path / "store" / "runs").iterdir()
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert steps == ["000002", "000004", "000006"]  # keep_last 0: every checkpoint, in the store
    last, best = read_pointer(tmp_path / "train", LAST_FILE), read_pointer(tmp_path / "train", BEST_FILE)
    published = sorted(p.name for p in (tmp_path / "train" / "checkpoints").iterdir())
    assert published == sorted({Path(last["path"]).name, Path(best["path"]).name})  # only what the run produces
    assert last == read_pointer(run_dir, LAST_FILE) and best == read_pointer(run_dir, BEST_FILE)
    published_weights = tmp_path / "train" / last["path"] / "pretrained_model" / "model.safetensors"
    stored_weights = run_dir / last["path"] / "pretrained_model" / "model.safetensors"
    assert published_weights.read_bytes() == stored_weights.read_bytes()
    assert os.stat(published_weights).st_ino == os.stat(stored_weights).st_ino  # a hard link, not a copy
    assert (tmp_path / "live/plots/metrics/train/loss.tsv").read_text() == \
        (run_dir / "live/plots/metrics/train/loss.tsv").read_text()
    reference = _weights(run_dir / "checkpoints/000006")

    # killed after step 4's save: the store lost step 6; DVC reset the workspace's outputs
    shutil.rmtree(run_dir / "checkpoints/000006")
    (run_dir / LAST_FILE).write_text(json.dumps({"path": "checkpoints/000004", "step": 4}))
    shutil.rmtree(tmp_path / "train")
    shutil.rmtree(tmp_path / "live")
    capsys.readouterr()
    train(cfg)
    assert f"resuming from {run_dir / 'checkpoints' / '000004'} (step 4 of 6)" in capsys.readouterr().out
    assert _weights(run_dir / "checkpoints/000006") == reference
    assert _weights(tmp_path / "train/checkpoints/000006") == reference
    assert sorted(p.name for p in (tmp_path / "train" / "checkpoints").iterdir()) == published


def test_checkpoints_found_in_the_outputs_are_moved_into_the_store_never_deleted(params, tiny_run, tmp_path,
                                                                                capsys) -> None:
    """A run from before the store (its checkpoints in artifacts/train) or of a cleaned store: they move to
    the store under their own run key, and the run with that key resumes from them."""
    from vla_pipeline.train.trainer import train

    legacy = _store_config(params, tiny_run, tmp_path, runs_in_store=False)
    train(legacy)  # checkpoints 2, 4, 6 in tmp_path/train
    weights = _weights(tmp_path / "train/checkpoints/000006")
    other = _store_config(params, tiny_run, tmp_path, steps=4, decay_steps=4)  # another run key
    capsys.readouterr()
    train(other)
    out = capsys.readouterr().out
    assert out.count("moved checkpoint") == 3 and "it is kept there" in out
    runs = sorted((tmp_path / "store" / "runs").iterdir())
    assert len(runs) == 2  # the legacy run's key and the new run's key
    moved = next(r for r in runs if (r / "checkpoints/000006").is_dir())
    assert _weights(moved / "checkpoints/000006") == weights
    assert sorted(p.name for p in (tmp_path / "train/checkpoints").iterdir()) == sorted(
        {Path(read_pointer(tmp_path / "train", n)["path"]).name for n in (LAST_FILE, BEST_FILE)})
    capsys.readouterr()
    train(_store_config(params, tiny_run, tmp_path))  # the legacy config again: nothing left to train
    assert f"resuming from {moved / 'checkpoints' / '000006'} (step 6 of 6)" in capsys.readouterr().out
    assert _weights(tmp_path / "train/checkpoints/000006") == weights


def test_one_process_at_a_time_trains_a_run(tmp_path, capsys) -> None:
    lock = tmp_path / "runs" / "abc" / ".lock"
    held, release = threading.Event(), threading.Event()

    def holder():
        with file_lock(lock, "training run abc"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    with pytest.raises(ConfigError, match=r"another process holds .*\.lock \(training run abc\); wait for it"), \
            file_lock(lock, "training run abc", wait=False):
        pass
    threading.Timer(0.5, release.set).start()
    with file_lock(lock, "building x"):  # waits, saying so, then gets it
        assert release.is_set()  # only once the holder let go
    assert "waiting for another process to finish building x" in capsys.readouterr().err
    thread.join()


BUILD = """
import sys
from pathlib import Path
from vla_pipeline.data.frame_cache import FrameCacheConfig, save_frame_cache
cfg = FrameCacheConfig(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), resolution=(28, 28),
                       store=Path(sys.argv[4]))
save_frame_cache(cfg)
"""


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_two_experiments_build_the_shared_frame_cache_once(demo_dataset, tmp_path) -> None:
    """Two frame_cache stages at once (two queued experiments), each with its own output directory."""
    from vla_pipeline.data.frame_cache import FRAME_CACHE_MANIFEST_FILE, load_frame_cache
    from vla_pipeline.provenance import compute_dataset_fingerprint

    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(demo_dataset), str(CONTRACT),
                               str(tmp_path / f"exp{i}" / "frame_cache"), str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for i in (0, 1)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    assert all(p.returncode == 0 for p in procs), outputs
    printed = "".join(out + err for out, err in outputs)
    assert printed.count("frame cache: reusing") == 1, printed  # the second builder waited, then reused
    (entry,) = [p for p in (store / "frame_cache").iterdir() if p.is_dir()]
    manifests = [json.loads((tmp_path / f"exp{i}/frame_cache" / FRAME_CACHE_MANIFEST_FILE).read_text()) for i in (0, 1)]
    assert manifests[0] == manifests[1] and manifests[0]["store_entry"] == entry.name
    assert [p.name for p in (tmp_path / "exp0/frame_cache").iterdir()] == [FRAME_CACHE_MANIFEST_FILE]  # no frames in the workspace
    fingerprint = compute_dataset_fingerprint(demo_dataset)
    assert load_frame_cache(tmp_path / "exp1/frame_cache", fingerprint, (28, 28), store).directory == entry
    for f in entry.glob("*.u8"):
        f.write_bytes(f.read_bytes()[:100])  # a damaged entry
    with pytest.raises(TrainInputError, match=r"names the frame cache .* which is .*unreadable.*dvc repro -f"):
        load_frame_cache(tmp_path / "exp1/frame_cache", fingerprint, (28, 28), store)
    import shutil

    shutil.rmtree(entry)  # a cleaned store: the stage that needs the entry builds it again
    import torch

    torch.manual_seed(5)
    rebuilt = load_frame_cache(tmp_path / "exp1/frame_cache", fingerprint, (28, 28), store,
                               rebuild_from=(demo_dataset, CONTRACT))
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))  # the rebuild drew nothing from the run's random streams
    assert rebuilt.directory == entry and json.loads((entry / FRAME_CACHE_MANIFEST_FILE).read_text()) == {
        k: v for k, v in manifests[0].items() if k != "store_entry"}


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_vla_train_out_keeps_the_whole_run_together(params, tiny_run, tmp_path) -> None:
    work = tmp_path / "workspace"
    p = write_train_params(params, tiny_run, work, save_every=2, wandb_mode="offline")
    out = tmp_path / "elsewhere"
    result = vla("train", "--params", str(p), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_pointer(out, LAST_FILE)["step"] == 4 and (out / "checkpoints/000004").is_dir()
    assert (out / "live/metrics.json").is_file() and (out / "live/plots/metrics/train/loss.tsv").is_file()
    assert list((out / "wandb").rglob("*.wandb"))
    assert not any((work / name).exists() for name in ("train", "live", "wandb"))  # the params' paths: untouched


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_vla_train_in_a_dvc_workspace_runs_in_the_store_and_publishes_like_the_stage(params, tiny_run,
                                                                                      tmp_path) -> None:
    """A train.out_dir inside the DVC workspace is the stage's output, which DVC deletes before the stage
    runs (dvc.yaml: not persist): `vla train` there keeps its run in the store, as the stage does."""
    work = tmp_path / "workspace"
    p = write_train_params(params, tiny_run, work, save_every=2, keep_last=0)
    doc = yaml.safe_load(p.read_text())
    doc["train"].update(out_dir="artifacts/train", live_dir="artifacts/train_live")
    doc["base"]["store"] = str(tmp_path / "store")
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    (work / "dvc.yaml").write_text("stages: {}\n")
    result = run_bounded([sys.executable, "-m", "vla_pipeline.cli", "train", "--params", str(p)], cwd=work,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "store" / "runs").iterdir()
    assert sorted(d.name for d in (run / "checkpoints").iterdir()) == ["000002", "000004"]  # the run: in the store
    published = work / "artifacts" / "train"
    assert read_pointer(published, LAST_FILE)["step"] == 4
    weights = published / "checkpoints" / "000004" / "pretrained_model" / "model.safetensors"
    assert weights.stat().st_ino == (run / "checkpoints/000004/pretrained_model/model.safetensors").stat().st_ino


def test_ctrl_c_prints_one_line_and_exits_130(params, tiny_run, tmp_path) -> None:
    p = write_train_params(params, tiny_run, tmp_path, steps=6, decay_steps=6, save_every=2)
    env = with_faults(dict(os.environ), VLA_TEST_SIGNAL="INT", VLA_TEST_SIGKILL_AT_STEP="4")
    result = run_bounded([sys.executable, "-m", "vla_pipeline.cli", "train", "--params", str(p)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    line = (f"interrupted: training stopped at step 4 of 6; last complete checkpoint: step 2 "
            f"({tmp_path / 'train' / 'checkpoints' / '000002'}); run the same command again to resume from it "
            f"(train.resume: auto)")
    assert line in result.stderr.splitlines(), result.stderr[-2000:]


def test_the_stage_scripts_read_the_schema_checked_params(tmp_path) -> None:
    """The stages' loader is the CLI's: a typo in params.yaml stops `dvc repro` before any stage works."""
    sys.path.insert(0, str(REPO / "stages"))
    try:
        from _params import load_params
    finally:
        sys.path.remove(str(REPO / "stages"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["keep_lats"] = 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="unknown key 'train.keep_lats'; did you mean 'train.keep_last'"):
        load_params(path)
