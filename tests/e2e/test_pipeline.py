"""The DVC workflows a user runs, on a copy of this repository with shrunk params:
`dvc repro`, `dvc exp run -S train.lr=...`, `dvc metrics diff`, and stage isolation."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import commit_all, make_workspace

from conftest import replayable_seed, run_killed_before_step
from procs import run_bounded, start_queue_workers, stop_queue_workers, vla_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first test also builds `repo` (dvc repro)

SECRETS = {"WANDB_API_KEY": "0123456789abcdef" + "5ecre7" * 4, "HF_TOKEN": "hf_" + "Sup3rSecretT0ken" * 2}


def _run(cmd: list[str], cwd: Path, **env_extra: str) -> str:
    result = run_bounded(cmd, cwd=cwd, env=vla_env(**env_extra), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("clone") / "repo")
    _run(["dvc", "repro"], root, **SECRETS)
    commit_all(root, "repro")
    return root


@pytest.fixture(autouse=True)
def _baseline(repo: Path) -> None:
    """Every test starts from the committed workspace (params.yaml, dvc.lock and the outputs they name),
    whatever ran before it: no test depends on another's order."""
    _run(["git", "reset", "-q", "--hard", "HEAD"], repo)
    _run(["dvc", "checkout", "--force", "--quiet"], repo)


def _last(repo: Path) -> Path:
    doc = json.loads((repo / "artifacts/train/last_checkpoint.json").read_text())
    return repo / "artifacts/train" / doc["path"] / "pretrained_model"


def test_repro_produces_every_artifact(repo: Path) -> None:
    assert json.loads((repo / "artifacts/validation/report.json").read_text())["ok"]
    stats = json.loads((repo / "artifacts/norms/stats.json").read_text())
    assert len(stats["features"]["action"]["q01"]) == 6  # arm-only
    assert (_last(repo) / "model.safetensors").is_file()
    for which in ("best", "last"):
        out = repo / "artifacts/eval" / which
        metrics = json.loads((out / "metrics.json").read_text())
        assert {"action_mse", "baseline_hold_mse", "joints", "smoothness", "saturation", "per_task"} <= set(metrics)
        traces = sorted(p.stem for p in (out / "live/plots/images/traces").glob("*.png"))
        assert set(traces) >= {"best", "worst"}  # 2 held-out episodes: median is best
        assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) == traces
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo)


def _inodes(root: Path) -> dict[tuple[int, int], int]:
    """(device, inode) -> size of every regular file under ``root``."""
    return {(st.st_dev, st.st_ino): st.st_size for st in (p.stat() for p in root.rglob("*") if p.is_file())}


def _assert_checkpoint_bytes_exist_once(repo: Path) -> None:
    """Every published file is a name of the DVC cache's inode; the store's file is that same inode, except
    for small files whose content another output already put in the (content-addressed) cache, e.g.
    norm_stats.json, equal to artifacts/norms/stats.json: at most 1% of the bytes."""
    published = sorted(p for p in (repo / "artifacts/train/checkpoints").rglob("*") if p.is_file())
    store, cache = _inodes(Path(os.environ["VLA_STORE"]) / "runs"), _inodes(repo / ".dvc/cache")
    total = sum(p.stat().st_size for p in published)
    assert published and total > 100_000
    inode = lambda p: (p.stat().st_dev, p.stat().st_ino)  # noqa: E731
    assert all(inode(p) in cache for p in published), "published files are copies of the DVC cache's"
    not_shared = [p for p in published if inode(p) not in store]
    assert sum(p.stat().st_size for p in not_shared) <= 0.01 * total, f"copies of the store's files: {not_shared}"
    assert not [p for p in not_shared if p.suffix == ".safetensors"], not_shared
    # size accounting: the published checkpoints add (almost) no byte to what the store and the DVC cache hold
    both = sum({**store, **cache}.values())
    assert sum({**store, **cache, **_inodes(repo / "artifacts/train/checkpoints")}.values()) == both
    assert both <= sum(store.values()) + sum(cache.values()) - 0.99 * total


def test_checkpoint_bytes_exist_once_across_store_artifacts_and_dvc_cache(repo: Path) -> None:
    """The published checkpoints are hard links of the store's files, and DVC (cache.type hardlink in
    .dvc/config) links the same inodes into its cache: after `dvc repro`, after `dvc checkout`, and after
    the train stage runs again (a persist output would be "unprotected" first: DVC copies every linked file)."""
    _assert_checkpoint_bytes_exist_once(repo)
    shutil.rmtree(repo / "artifacts/train")
    _run(["dvc", "checkout", "artifacts/train"], repo)
    _assert_checkpoint_bytes_exist_once(repo)
    out = _run(["dvc", "repro", "-f", "-s", "train"], repo)  # the finished run, found in the store, published again
    assert "resuming from" in out
    _assert_checkpoint_bytes_exist_once(repo)
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo)


def test_evaluate_stage_mp4_has_a_frame_per_episode_frame(repo: Path) -> None:
    import csv

    import av

    out = repo / "artifacts/eval/last"
    with open(out / "episodes.csv", newline="") as f:
        lengths = {int(r["episode_index"]): int(r["n_frames"]) for r in csv.DictReader(f)}
    video = out / "videos" / "worst.mp4"
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    worst = json.loads((out / "protocol.json").read_text())["media"]["worst"]
    assert frames == lengths[worst] >= 20


def test_evaluate_params_do_not_retrain(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["stride"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_run(["dvc", "status", "--json"], repo))
        assert set(status) == {"evaluate@best", "evaluate@last"}
    finally:
        _run(["git", "checkout", "params.yaml"], repo)


def test_no_secret_reaches_dvc_lock_or_artifacts(repo: Path) -> None:
    """`dvc repro` ran with W&B and HF tokens in its environment."""
    files = [repo / "dvc.lock", *(p for p in (repo / "artifacts").rglob("*") if p.is_file())]
    leaks = [f"{p}: {k}" for p in files for k, v in SECRETS.items() if v.encode() in p.read_bytes()]
    assert not leaks and len(files) > 30, leaks


@pytest.mark.parametrize("command", [["dvc", "repro", "train"], ["dvc", "exp", "run", "train"]],
                         ids=["repro", "exp-run"])
def test_killed_run_resumes_bit_identical_with_the_same_command(repo: Path, command: list[str], tmp_path) -> None:
    """SIGKILL `dvc repro` / `dvc exp run` mid-training, then the same command: it resumes from the run's
    newest checkpoint in the store (`dvc exp run` first resets artifacts/train to dvc.lock's) and ends
    with the weights of an uninterrupted run."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(steps=30, decay_steps=30, save_every=5, log_every=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        store = tmp_path / "store"
        _run(["dvc", "repro", "train"], repo, VLA_STORE=str(store))
        reference = (_last(repo) / "model.safetensors").read_bytes()
        _run(["git", "checkout", "HEAD", "--", "dvc.lock"], repo)  # the reference run is not the baseline
        shutil.rmtree(repo / "artifacts/train")
        shutil.rmtree(repo / "artifacts/train_live")
        shutil.rmtree(store / "runs")  # (the frame cache stays: it is the same)
        seed = replayable_seed()
        kill_step = random.Random(seed).randint(7, 25)
        killed = f"{' '.join(command)} killed before step {kill_step} (replay: VLA_TEST_SEED={seed})"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "VLA_STORE": str(store)}
        run_killed_before_step(command, kill_step, env=env, cwd=repo)
        # (dvc exp run checked out the baseline's checkpoints first: they were moved into the store, not lost)
        (run_dir,) = [r for r in (store / "runs").iterdir() if not (r / "checkpoints" / "000006").exists()]
        newest = max((run_dir / "checkpoints").iterdir())  # a periodic save or a new best
        assert int(newest.name) < kill_step, killed
        out = _run(command, repo, VLA_STORE=str(store))
        assert f"resuming from {newest} (step {int(newest.name)} of 30)" in out, f"{killed}; printed:\n{out[-3000:]}"
        assert (_last(repo) / "model.safetensors").read_bytes() == reference, killed
    finally:
        _run(["git", "reset", "-q", "--hard", "HEAD"], repo)  # dvc autostages dvc.lock
        _run(["dvc", "checkout", "--force"], repo)
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], repo)


def test_a_temp_experiment_keeps_its_wandb_files_in_the_store(repo: Path, tmp_path) -> None:
    """`dvc exp run --temp` runs in a copy DVC deletes afterwards: the W&B offline runs of train and
    evaluate are in <store>/wandb, ready for `wandb sync`."""
    store = tmp_path / "store"
    _run(["dvc", "exp", "run", "--temp", "-S", "train.lr=1.5e-3"], repo, VLA_STORE=str(store))
    runs = sorted((store / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 3, runs  # train, evaluate@best, evaluate@last
    assert all(next(r.glob("*.wandb")).stat().st_size > 0 for r in runs)
    assert not (repo / ".dvc" / "tmp" / "exps" / "tmp").exists() or not any(
        (repo / ".dvc" / "tmp" / "exps" / "tmp").iterdir())


def test_exp_run_changes_lr_and_metrics_diff_shows_it(repo: Path) -> None:
    _run(["dvc", "exp", "run", "-S", "train.lr=1e-3"], repo)
    resolved = json.loads((_last(repo) / "train_config.json").read_text())
    assert resolved["lr"] == pytest.approx(1e-3)
    diff = json.loads(_run(["dvc", "metrics", "diff", "--all", "--json"], repo))
    changed = diff["artifacts/eval/last/metrics.json"]
    assert changed["action_mse"]["diff"] != 0
    assert changed["baseline_hold_mse"]["diff"] == 0  # same held-out data, same baseline
    # every metric of the protocol (every leaf of metrics.json) is in the diff, for best and last
    for which in ("best", "last"):
        leaves = _leaves(json.loads((repo / f"artifacts/eval/{which}/metrics.json").read_text()))
        assert set(leaves) == set(diff[f"artifacts/eval/{which}/metrics.json"]) and len(leaves) > 60
    table = _run(["dvc", "metrics", "diff", "--all"], repo)
    for key in ("smoothness.chunk_boundary_jump", "saturation.clip_count", "joints.arm_gripper.pos.rmse",
                "baseline_mean_mse_normalized", "per_task."):
        assert key in table


def _leaves(metrics: dict, prefix: str = "") -> list[str]:
    return [leaf for k, v in metrics.items()
            for leaf in (_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])]


def test_exp_run_phase_with_override(repo: Path) -> None:
    """`-S train.phase=sanity -S train.steps=N`: sanity's values everywhere but the override."""
    _run(["dvc", "exp", "run", "-S", "train.phase=sanity", "-S", "train.steps=20"], repo)
    resolved = json.loads((_last(repo) / "train_config.json").read_text())
    sanity = yaml.safe_load((repo / "params.yaml").read_text())["phases"]["sanity"]
    assert resolved["phase"] == "sanity" and resolved["steps"] == 20
    assert resolved["lr"] == pytest.approx(sanity["lr"]) and resolved["decay_lr"] == pytest.approx(sanity["decay_lr"])
    assert (resolved["save_every"], resolved["eval_every"]) == (sanity["save_every"], sanity["eval_every"])
    logged = yaml.safe_load((repo / "artifacts/train_live/params.yaml").read_text())
    assert logged["phase"] == "sanity" and logged["steps"] == 20


@pytest.mark.parametrize("attempt", range(int(os.environ.get("VLA_QUEUE_REPEATS", "1"))))
def test_two_queued_experiments_build_the_frame_cache_once(repo: Path, tmp_path, attempt: int) -> None:
    """`dvc exp run --queue` twice, then two queue workers at once: each experiment runs in its own
    temporary copy, whose frame_cache stage finds the store's entry (built by the first, under its lock).
    The two trainings share the 2 cores (cores.py) instead of each taking both. VLA_QUEUE_REPEATS=10 runs
    it ten times in a row (docs/testing.md)."""
    import time

    store = tmp_path / "store"
    names = [f"queued-lr1-{attempt}", f"queued-lr3-{attempt}"]
    for name, lr in zip(names, ("1.0e-3", "3.0e-3"), strict=True):
        _run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}"], repo, VLA_STORE=str(store))
    try:
        start_queue_workers(repo, 2, tmp_path / "queue-start.log", VLA_STORE=str(store))
        status = ""
        for _ in range(200):  # a bound, not a measurement (the test's own timeout is 1200 s)
            status = _run(["dvc", "queue", "status"], repo)
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(5)
        assert sum(line.split()[-1] == "Success" for line in status.splitlines()
                   if any(n in line for n in names)) == 2, status
        logs = [_run(["dvc", "queue", "logs", name], repo) for name in names]
    finally:
        stop_queue_workers(repo)
    assert sum(log.count("frame cache: building") for log in logs) == 1, logs
    assert sum(log.count("frame cache: reusing") for log in logs) == 1, logs
    assert len(list((store / "frame_cache").glob("*/manifest.json"))) == 1


def test_exp_run_with_a_new_unknown_key_is_refused_before_any_work(repo: Path) -> None:
    """DVC's own hint for a key params.yaml lacks is `-S +key=value`; following it with a typo must not start
    a run at the default learning rate."""
    try:
        result = run_bounded(["dvc", "exp", "run", "-S", "+train.lrr=1e-3"], cwd=repo, env=vla_env(),
                             capture_output=True, text=True, timeout=900)
        printed = result.stdout + result.stderr
        assert result.returncode != 0 and "unknown key 'train.lrr'; did you mean 'train.lr'?" in printed, printed
        assert "Traceback" not in printed and "resuming" not in printed and "train:" not in printed
    finally:
        _run(["git", "checkout", "params.yaml"], repo)
