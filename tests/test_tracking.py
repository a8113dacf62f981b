"""Tracking: W&B (offline fallback when online is unreachable) holds what rebuilds a run, dvclive
logs lr every step plus throughput, and no secret from the environment is ever written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_pipeline.preflight.report import Check, PreflightReport

from conftest import vla, write_train_params
from procs import run_bounded

SECRETS = {
    "WANDB_API_KEY": "0123456789abcdef" + "5ecre7" * 4,  # 40 characters, like a real key
    "HF_TOKEN": "hf_" + "Sup3rSecretT0ken" * 2,
    "HUGGING_FACE_HUB_TOKEN": "hf_" + "An0therSecretT0ken" * 2,
}


@pytest.fixture(scope="module")
def online_run(params, tiny_run, tmp_path_factory):
    """W&B mode online, with an API key in the environment but the service unreachable."""
    work = tmp_path_factory.mktemp("tracked")
    p = write_train_params(params, tiny_run, work, steps=6, decay_steps=6, save_every=0, eval_every=3, log_every=2,
                           wandb_mode="online", wandb_init_timeout=5)
    report = PreflightReport([Check("numerics", "reference", "pass", "cpu"), Check("disk", "free", "warn", "1 GiB")])
    report.save(work / "preflight" / "report.json")
    result = vla("train", "--params", str(p), env={**SECRETS, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


def _records(wandb_dir: Path) -> list:
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    (path,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    store, records = datastore.DataStore(), []
    store.open_for_scan(str(path))
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def test_unreachable_online_falls_back_to_offline(online_run) -> None:
    work, result = online_run
    assert "unreachable" in result.stderr and "logging offline" in result.stderr
    assert len(list((work / "wandb").glob("wandb/offline-run-*"))) == 1


def test_wandb_run_holds_config_commit_versions_and_artifacts(online_run) -> None:

    work, _ = online_run
    records = _records(work / "wandb")
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert config["steps"] == 6 and config["phase"] == "smoke" and config["runtime_resolved"]["precision"] == "fp32"
    head = run_bounded(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert config["git"]["commit"] == head and isinstance(config["git"]["dirty"], bool)
    assert config["versions"]["lerobot"] == "0.4.2" and config["versions"]["transformers"] == "4.53.3"
    assert config["versions"]["torch"] and "gpus" in config["hardware"]
    stats = json.loads((Path(config["norms_dir"]) / "stats.json").read_text())
    assert config["data"]["fingerprint"] == stats["dataset_fingerprint"]
    artifacts = {r.artifact.name: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"}
    tables = {n for n in artifacts if n.endswith("episode_quality")}  # the report's quality score per episode
    assert len(tables) == 1 and set(artifacts) - tables == {"dataset", "norm_stats", "preflight", "checkpoint-last",
                                                            "checkpoint-best"}
    assert json.loads(artifacts["preflight"].metadata) == {"pass": 1, "warn": 1, "fail": 0}
    assert [c.path for c in artifacts["preflight"].manifest.contents] == ["report.json"]
    assert json.loads(artifacts["dataset"].metadata)["fingerprint"] == stats["dataset_fingerprint"]
    assert [c.path for c in artifacts["norm_stats"].manifest.contents] == ["stats.json"]
    files = {c.path for c in artifacts["checkpoint-last"].manifest.contents}
    assert {"model.safetensors", "config.json", "norm_stats.json", "train_config.json", "versions.json"} <= files
    assert json.loads(artifacts["checkpoint-last"].metadata)["step"] == 6
    staged = [p for p in (work / "wandb").rglob("model.safetensors")]  # no second copy of the checkpoint
    assert not staged, staged
    assert list((work / "wandb").glob("wandb/offline-run-*/files/media/images/**/*.png"))  # training curves


def test_dvclive_logs_lr_every_step_and_no_timings(online_run) -> None:
    work, _ = online_run
    metrics = work / "live" / "plots" / "metrics"
    lr_steps = [int(line.split("\t")[0]) for line in (metrics / "train/lr.tsv").read_text().splitlines()[1:]]
    assert lr_steps == list(range(1, 7))
    for name in ("train/loss", "train/grad_norm", "val/loss"):
        assert len((metrics / f"{name}.tsv").read_text().splitlines()) > 1, name
    assert not (metrics / "perf").exists()  # timings go to W&B only: a repro leaves git-tracked files alone
    summary = json.loads((work / "live" / "metrics.json").read_text())
    assert "perf" not in summary and summary["resolved"] == {"lr": 2.0e-3, "steps": 6, "batch_size": 4}
    assert set(summary["data"]) == {"split_id", "n_val_episodes", "n_train_episodes", "quality_min", "quality_mean",
                                    "n_flagged_episodes"}
    assert summary["preflight"] == {"pass": 1, "warn": 1, "fail": 0}  # comparable in `dvc exp show`
    lrs = [float(line.split("\t")[1]) for line in (metrics / "train/lr.tsv").read_text().splitlines()[1:]]
    assert lrs[-1] < lrs[1]  # the cosine schedule decays within the run's 6 steps


def test_secrets_are_never_written(online_run) -> None:
    work, result = online_run
    leaks = []
    for path in work.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [f"{path}: {name}" for name, value in SECRETS.items() if value.encode() in data]
    for name, value in SECRETS.items():
        if value in result.stdout or value in result.stderr:
            leaks.append(f"console: {name}")
    assert not leaks, leaks
    assert sum(1 for p in work.rglob("*") if p.is_file()) > 30  # the scan saw the run's files


def test_resume_survives_files_a_kill_left_half_written(tmp_path) -> None:
    """SIGKILL while dvclive writes: an empty summary, an empty params file and a torn last TSV row.
    Resuming drops them (and the rows past the checkpoint) instead of failing in dvclive."""
    from vla_pipeline.tracking import DvcLiveTracker

    live = tmp_path / "live"
    tracker = DvcLiveTracker(live, None)
    for step in range(1, 7):
        tracker.log_metrics({"train/loss": 1.0 / step}, step)
    tracker.live.end()
    loss = live / "plots" / "metrics" / "train" / "loss.tsv"
    loss.write_text(loss.read_text() + "7\t0.1")  # torn: the timestamp and the newline never came
    (live / "metrics.json").write_text("")
    (live / "params.yaml").write_text("")
    resumed = DvcLiveTracker(live, 4)
    resumed.log_metrics({"train/loss": 0.2}, 5)
    rows = [r.split("\t") for r in loss.read_text().splitlines()]
    assert [r[rows[0].index("step")] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert json.loads((live / "metrics.json").read_text())["train"]["loss"] == 0.2


def test_wandb_that_fails_to_start_is_retried_then_left_out_with_a_warning(tmp_path, monkeypatch, capsys) -> None:
    """Seen in CI: two queued experiments started W&B offline at once and its local service timed out;
    the evaluation then died with a traceback. Now: one retry with twice the timeout, then dvclive only."""
    import wandb

    from vla_pipeline import tracking

    timeouts = []

    def failing(cfg, mode, run_id):
        timeouts.append(cfg.init_timeout)
        raise wandb.errors.CommError("Run initialization has timed out after 5 sec.")

    monkeypatch.setattr(tracking.WandbTracker, "_init", staticmethod(failing))
    cfg = tracking.TrackingConfig(live_dir=tmp_path / "live", wandb_dir=tmp_path / "wandb", wandb_mode="offline",
                                  init_timeout=5)
    tracker = tracking.make_tracker(cfg)
    assert timeouts == [5, 10]
    assert [type(t).__name__ for t in tracker.trackers] == ["DvcLiveTracker"]
    tracker.log_metrics({"val/loss": 1.5}, step=1)  # the run goes on: dvclive logs
    tracker.close()
    assert "failed to start twice" in capsys.readouterr().err
    assert (tmp_path / "live" / "metrics.json").is_file()


def test_the_run_carries_the_validation_reports_quality_score_per_episode(tiny_run):
    """issue 29: the quality score of every episode reaches the run (a bar per episode, its summary)."""
    quality = json.loads(tiny_run.report.read_text())["episode_quality"]
    assert quality and all(0.0 <= q <= 1.0 for q in quality.values())
    plotted = json.loads((tiny_run.live / "plots" / "custom" / "episode_quality.json").read_text())
    rows = plotted["episode_quality"] if isinstance(plotted, dict) else plotted
    assert sorted((str(r["episode"]), r["quality"]) for r in rows) == sorted(quality.items())
    summary = json.loads((tiny_run.live / "metrics.json").read_text())["data"]
    assert summary["quality_min"] == min(quality.values())
    assert summary["n_flagged_episodes"] == sum(q < 1 for q in quality.values())


def test_two_queued_experiments_ending_together_do_not_fail_on_dvclives_shared_signal_file(tmp_path, monkeypatch):
    """`dvc queue start --jobs 2`: both experiments' dvclive write and remove one VS Code signal file in the
    main repo (DVC_ROOT); the one that loses the race between dvclive's exists() and remove() still ends."""
    import dvclive.vscode

    from vla_pipeline.tracking import DvcLiveTracker

    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "main"))
    monkeypatch.chdir(tmp_path)  # not inside this repository
    first, second = (DvcLiveTracker(tmp_path / f"live{i}", None) for i in (0, 1))
    for tracker in (first, second):
        tracker.log_metrics({"train/loss": 1.0}, step=0)  # each marks the step: the file exists
    first.close()  # removes it
    exists = dvclive.vscode.os.path.exists  # the second saw it before the first removed it:
    monkeypatch.setattr(dvclive.vscode.os.path, "exists", lambda p: p.endswith("DVCLIVE_STEP_COMPLETED") or exists(p))
    second.close()
    assert json.loads((tmp_path / "live1" / "metrics.json").read_text())["train"]["loss"] == 1.0
