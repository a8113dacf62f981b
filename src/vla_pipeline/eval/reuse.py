"""Reusing an evaluation: ``evaluate@last`` copies ``evaluate@best``'s results when both name the same
checkpoint under the same protocol, code and data; anything else evaluates again."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from vla_pipeline.checkpoint.io import (
    compute_checkpoint_id,
    pretrained_dir_of,
    read_checkpoint_state,
)
from vla_pipeline.checkpoint.layout import CONTRACT_FILE
from vla_pipeline.data.contract import load_contract
from vla_pipeline.errors import read_json_artifact
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.eval.protocol import NOT_PROTOCOL, RANK_KEY, config_doc
from vla_pipeline.provenance import EVAL_ENTRY, compute_code_identity, compute_dataset_fingerprint
from vla_pipeline.tracking import TrackingConfig, make_tracker

TRACES_DIR = "live/plots/images/traces"  # where dvclive puts the trace PNGs (the stage's plots output)


REUSED_FILES = ("metrics.json", "episodes.csv", "predictions.npz")


def find_reusable(cfg: EvaluateConfig, source: Path) -> tuple[dict | None, str]:
    """(``source``'s protocol, "") when the evaluation in ``source`` is the one ``cfg`` asks for: the same
    checkpoint directory and content (its checkpoint id), every protocol setting, this code and the dataset it names, with
    all its outputs present; else (None, why not)."""
    path = source / "protocol.json"
    if not path.is_file():
        return None, f"{path} not found"
    try:
        protocol = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path} is unreadable ({e})"
    if not isinstance(protocol, dict):
        return None, f"{path} is not an evaluation protocol"
    if Path(protocol.get("checkpoint", "")).resolve() != pretrained_dir_of(cfg.checkpoint).resolve():
        return None, f"it evaluated {protocol.get('checkpoint')}, not {pretrained_dir_of(cfg.checkpoint)}"
    checkpoint_id = compute_checkpoint_id(cfg.checkpoint)
    if protocol.get("checkpoint_id") != checkpoint_id:
        return None, ("the checkpoint's id (the sha256 of its policy files) is not the one it evaluated: the "
                      "checkpoint changed since")
    if protocol.get("code_sha256") != compute_code_identity(EVAL_ENTRY):
        return None, "another version of vla_pipeline produced it"
    mine, theirs = config_doc(cfg), protocol.get("config", {})
    differ = sorted(k for k in mine.keys() | theirs.keys() if k not in NOT_PROTOCOL and mine.get(k) != theirs.get(k))
    if differ:
        return None, f"its evaluation settings differ: {', '.join(f'{k} {theirs.get(k)!r} vs {mine.get(k)!r}' for k in differ)}"
    missing = [name for name in REUSED_FILES if not (source / name).is_file()]
    pngs = sorted((source / TRACES_DIR).glob("*.png"))
    if not pngs:
        missing.append(f"{TRACES_DIR}/*.png")
    if cfg.videos and sorted(p.stem for p in (source / "videos").glob("*.mp4")) != [p.stem for p in pngs]:
        missing.append("videos/*.mp4 (one per trace PNG)")
    if missing:
        return None, f"its outputs are incomplete ({', '.join(missing)} missing)"
    if compute_dataset_fingerprint(cfg.dataset_root) != protocol.get("dataset_fingerprint"):
        return None, f"{cfg.dataset_root} is not the dataset version it evaluated"
    return protocol, ""


def reuse_evaluation(cfg: EvaluateConfig, source: Path, protocol: dict) -> dict:
    """``cfg.out_dir`` as a complete evaluation copied from ``source`` (``find_reusable`` said it is the
    same one): byte-identical metrics, episode table, predictions, trace PNGs and videos; the protocol
    says where it came from; dvclive and W&B get what ``evaluate`` logs."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in REUSED_FILES:
        shutil.copyfile(source / name, out / name)
    shutil.rmtree(out / "videos", ignore_errors=True)
    if cfg.videos:
        shutil.copytree(source / "videos", out / "videos")
    else:  # the evaluate stage's DVC output, empty without videos (as a computed evaluation leaves it)
        (out / "videos").mkdir()
    protocol = {**protocol, "config": config_doc(cfg), "reused_from": str(source)}
    (out / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    metrics = read_json_artifact(source / "metrics.json", f"evaluate@{source.name}")
    with open(out / "episodes.csv", newline="") as f:
        table = [{k: v if k == "task" else _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    fps = load_contract(pretrained_dir_of(cfg.checkpoint) / CONTRACT_FILE).fps
    tracker = make_tracker(TrackingConfig(
        live_dir=out / "live", wandb_dir=cfg.wandb_dir or out / "wandb", wandb_project=cfg.wandb_project,
        wandb_mode=cfg.wandb_mode, run_key=read_checkpoint_state(cfg.checkpoint).get("run_key", ""),
        job_type="evaluate",
    ))
    try:
        tracker.log_config(protocol)
        tracker.log_summary(metrics)
        tracker.log_table("episodes", table, x="episode_index", y=RANK_KEY)
        for png in sorted((source / TRACES_DIR).glob("*.png")):
            tracker.log_image(f"traces/{png.stem}", png)
            if cfg.videos:
                tracker.log_video(f"videos/{png.stem}", out / "videos" / f"{png.stem}.mp4", fps)
    finally:
        tracker.close()
    return metrics


def _number(text: str):
    """A value of episodes.csv as ``save_results`` wrote it: int, float or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
