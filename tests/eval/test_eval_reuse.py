"""`evaluate@last` reuses `evaluate@best` when both name the same checkpoint: the stage script on a
real (tiny) train run whose best checkpoint is its last gives byte-identical outputs without loading
the model or running inference; anything that differs (settings, checkpoint manifest, code, data,
missing outputs) evaluates again; DVC runs `evaluate@last` after `evaluate@best`."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

import vla_pipeline.eval.reuse as reuse
import vla_pipeline.eval.run as ev
from vla_pipeline.checkpoint.io import write_manifest
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.eval.reuse import find_reusable
from vla_pipeline.eval.run import evaluate

from conftest import REPO

OUTPUTS = ("metrics.json", "episodes.csv", "predictions.npz")


def _stage(which: str, params: dict) -> None:
    """`python stages/evaluate.py <which>`, in this process (so inference can be counted)."""
    sys.path.insert(0, str(REPO / "stages"))
    try:
        spec = importlib.util.spec_from_file_location("evaluate_stage", REPO / "stages" / "evaluate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "stages"))
    argv = sys.argv
    sys.argv = ["stages/evaluate.py", which]
    try:
        module.main(params)
    finally:
        sys.argv = argv


@pytest.fixture
def stage_params(params, tiny_run, tmp_path) -> dict:
    p = copy.deepcopy(params)
    p["dataset"]["root"] = str(tiny_run.dataset)
    p["train"]["out_dir"] = str(tiny_run.train)
    p["frame_cache"]["enable"] = False
    p["evaluate"].update(out_dir=str(tmp_path / "eval"), stride=2, num_workers=0)
    p["evaluate"]["wandb"].update(mode="disabled", dir=str(tmp_path / "wandb"))
    return p


@pytest.fixture
def inference_calls(monkeypatch) -> list:
    calls = []
    real = ev.predict_episodes

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "predict_episodes", counted)
    return calls


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(out: Path) -> dict[str, str]:
    """Every output file the stage declares (protocol.json aside), by path relative to ``out``."""
    files = [*(out / name for name in OUTPUTS), *(out / "videos").glob("*.mp4"),
             *(out / "live/plots/images").rglob("*.png")]
    return {str(p.relative_to(out)): _digest(p) for p in files}


def test_last_reuses_best_when_the_best_is_the_last(tiny_run, stage_params, inference_calls, monkeypatch,
                                                    capsys) -> None:
    best, last = (json.loads((tiny_run.train / f"{k}_checkpoint.json").read_text()) for k in ("best", "last"))
    assert best["path"] == last["path"]  # 4 steps, one validation at the end
    _stage("best", stage_params)
    assert len(inference_calls) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("evaluate@last loaded the model")

    monkeypatch.setattr(ev, "load_checkpoint", no_model)
    _stage("last", stage_params)
    assert len(inference_calls) == 1, "evaluate@last ran inference again"
    assert "reusing its results" in capsys.readouterr().out

    out = Path(stage_params["evaluate"]["out_dir"])
    reused = _files(out / "last")
    assert reused == _files(out / "best")
    assert {Path(p).suffix for p in reused} == {".json", ".csv", ".npz", ".mp4", ".png"}
    protocol_best = json.loads((out / "best/protocol.json").read_text())
    protocol_last = json.loads((out / "last/protocol.json").read_text())
    assert protocol_last.pop("reused_from") == str(out / "best")
    assert protocol_last.pop("config")["out_dir"] == str(out / "last")
    protocol_best.pop("config")
    assert protocol_last == protocol_best
    # dvclive and W&B side: the same episode plot as an evaluation of its own would log
    assert (out / "last/live/plots/custom/episodes.json").is_file()


def test_without_videos_both_evaluations_leave_their_empty_videos_output(stage_params, inference_calls) -> None:
    """dvc.yaml declares <out>/<key>/videos as an output: `dvc repro` fails when it is missing, also when
    evaluate@last reuses evaluate@best's results."""
    stage_params["evaluate"]["videos"] = False
    _stage("best", stage_params)
    _stage("last", stage_params)
    assert len(inference_calls) == 1  # last reused best
    out = Path(stage_params["evaluate"]["out_dir"])
    for which in ("best", "last"):
        assert (out / which / "videos").is_dir() and not any((out / which / "videos").iterdir()), which


def test_last_evaluates_when_its_settings_differ(tiny_run, stage_params, inference_calls, capsys) -> None:
    _stage("best", stage_params)
    stage_params["evaluate"]["noise_seed"] = 1  # as if evaluate@best were from before the change
    _stage("last", stage_params)
    assert len(inference_calls) == 2
    assert "not reusing" in capsys.readouterr().out
    out = Path(stage_params["evaluate"]["out_dir"])
    protocol = json.loads((out / "last/protocol.json").read_text())
    assert "reused_from" not in protocol and protocol["noise_seed"] == 1
    assert (out / "last/metrics.json").read_bytes() != (out / "best/metrics.json").read_bytes()


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory) -> tuple[EvaluateConfig, Path]:
    """One evaluation of the tiny run's checkpoint (a copy of its train dir, so it can be changed)."""
    work = tmp_path_factory.mktemp("reuse")
    shutil.copytree(tiny_run.train, work / "train")
    checkpoint = work / "train" / tiny_run.checkpoint.relative_to(tiny_run.train)
    cfg = EvaluateConfig(checkpoint, tiny_run.dataset, work / "best", stride=2, videos=True, wandb_mode="disabled")
    evaluate(cfg)
    return EvaluateConfig(checkpoint, tiny_run.dataset, work / "last", stride=2, videos=True,
                          wandb_mode="disabled"), work / "best"


def test_the_same_evaluation_is_reusable(evaluated) -> None:
    cfg, source = evaluated
    protocol, why = find_reusable(cfg, source)
    assert protocol is not None and why == ""
    # where results go and how fast they come do not matter
    other = EvaluateConfig(cfg.checkpoint, cfg.dataset_root, Path("elsewhere"), stride=2, videos=True,
                           num_workers=1, wandb_mode="offline", wandb_project="p")
    assert find_reusable(other, source)[0] is not None


@pytest.mark.parametrize(("change", "reason"), [
    (dict(stride=1), "stride 2 vs 1"),
    (dict(batch_size=3), "batch_size 16 vs 3"),
    (dict(videos=False), "videos True vs False"),
    (dict(saturation_margin=0.02), "saturation_margin"),
    (dict(frame_cache=Path("cache")), "frame_cache"),
])
def test_other_settings_are_not_reused(evaluated, change, reason) -> None:
    cfg, source = evaluated
    values = dict(stride=2, videos=True, wandb_mode="disabled") | change
    protocol, why = find_reusable(EvaluateConfig(cfg.checkpoint, cfg.dataset_root, cfg.out_dir, **values), source)
    assert protocol is None and reason in why


def test_another_or_changed_checkpoint_is_not_reused(evaluated, tmp_path) -> None:
    cfg, source = evaluated
    step_dir = cfg.checkpoint.parent
    copy_dir = tmp_path / step_dir.name
    shutil.copytree(step_dir, copy_dir)  # the same files elsewhere: another checkpoint directory
    protocol, why = find_reusable(EvaluateConfig(copy_dir / "pretrained_model", cfg.dataset_root, cfg.out_dir,
                                                 stride=2, videos=True), source)
    assert protocol is None and "it evaluated" in why
    versions = cfg.checkpoint / "versions.json"
    original = versions.read_bytes()
    try:
        versions.write_bytes(original + b"\n")  # a re-saved checkpoint of the same step: other policy files
        write_manifest(step_dir)
        protocol, why = find_reusable(cfg, source)
        assert protocol is None and "checkpoint's id" in why
    finally:
        versions.write_bytes(original)
        write_manifest(step_dir)
    assert find_reusable(cfg, source)[0] is not None


def test_other_code_data_or_missing_outputs_are_not_reused(evaluated, monkeypatch, tmp_path) -> None:
    cfg, source = evaluated
    with monkeypatch.context() as m:
        m.setattr(reuse, "compute_code_identity", lambda entry: "0" * 64)
        assert "another version of vla_pipeline" in find_reusable(cfg, source)[1]
    with monkeypatch.context() as m:
        m.setattr(reuse, "compute_dataset_fingerprint", lambda root: "0" * 64)
        assert "not the dataset version" in find_reusable(cfg, source)[1]
    partial = tmp_path / "partial"
    shutil.copytree(source, partial)
    next((partial / "videos").glob("*.mp4")).unlink()
    assert "outputs are incomplete" in find_reusable(cfg, partial)[1]
    (partial / "protocol.json").write_text("{")  # torn
    assert "unreadable" in find_reusable(cfg, partial)[1]
    (partial / "protocol.json").unlink()
    assert "not found" in find_reusable(cfg, partial)[1]


def test_dvc_runs_evaluate_last_after_evaluate_best() -> None:
    """DVC orders stages only by dependencies: evaluate@last depends on evaluate@best's output dir."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        best, last = stages["evaluate@best"], stages["evaluate@last"]
        assert nx.has_path(repo.index.graph, last, best) and not nx.has_path(repo.index.graph, best, last)
        assert "artifacts/eval/best" in {str(d.def_path) for d in last.deps}
