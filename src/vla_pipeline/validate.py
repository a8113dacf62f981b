"""Dataset validation: read the raw files (meta JSON, parquet, videos) and either pass with a
report or fail with errors that say what, where, and what to do."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vla_pipeline.contract import Contract, load_contract
from vla_pipeline.data import column_array, feature_names, load_frames, load_info
from vla_pipeline.errors import ContractError, ValidationError
from vla_pipeline.params import param

SUPPORTED_CODEBASE = "v3.0"


@dataclass(frozen=True)
class ValidateConfig:
    dataset_root: Path
    contract_path: Path
    report_path: Path
    timestamp_tolerance_s: float = 1e-3

    @classmethod
    def from_params(cls, p: dict) -> ValidateConfig:
        return cls(
            dataset_root=param(p, "base.dataset_root", Path),
            contract_path=param(p, "base.contract", Path),
            report_path=param(p, "validate.report", Path),
            timestamp_tolerance_s=param(p, "validate.timestamp_tolerance_s", float),
        )


@dataclass
class Report:
    dataset_root: str
    contract: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_meta(root: Path, contract: Contract, report: Report) -> dict | None:
    try:
        info = load_info(root)
    except (OSError, json.JSONDecodeError) as e:
        report.errors.append(f"{root}/meta/info.json: cannot be read as JSON ({e}); is this a LeRobot dataset root?")
        return None
    if info.get("codebase_version") != SUPPORTED_CODEBASE:
        report.errors.append(
            f"meta/info.json: codebase_version {info.get('codebase_version')!r} is not {SUPPORTED_CODEBASE}; "
            f"convert the dataset with LeRobot's v2.1->v3.0 converter"
        )
    features = info.get("features", {})
    for role, key in (("action", contract.action_key), ("state", contract.state_key), *contract.cameras.items()):
        if key not in features:
            report.errors.append(f"meta/info.json: {role} key '{key}' missing; dataset has {sorted(features)}")
    for key in (contract.action_key, contract.state_key):
        if key in features:
            try:
                contract.select_indices(feature_names(info, key), key)
            except ContractError as e:
                report.errors.append(str(e))
    if info.get("fps") != contract.fps:
        report.errors.append(f"meta/info.json: fps {info.get('fps')} != contract fps {contract.fps}")
    return info


def check_frames(root: Path, info: dict, contract: Contract, tol: float, report: Report) -> None:
    frames = load_frames(root)
    report.summary.update(n_frames=int(len(frames)), n_episodes=int(frames["episode_index"].nunique()))
    if not np.array_equal(frames["index"].to_numpy(), np.arange(len(frames))):
        report.errors.append("data: global 'index' is not contiguous 0..N-1")
    dt = 1.0 / info["fps"]
    for ep, rows in frames.groupby("episode_index", sort=True):
        fi = rows["frame_index"].to_numpy()
        if not np.array_equal(fi, np.arange(len(rows))):
            report.errors.append(f"episode {ep}: frame_index does not run 0..{len(rows) - 1}")
        gaps = np.diff(rows["timestamp"].to_numpy())
        if len(gaps) and np.abs(gaps - dt).max() > tol:
            worst = int(np.abs(gaps - dt).argmax())
            report.errors.append(
                f"episode {ep}: timestamp spacing {gaps[worst]:.5f}s at frame {worst + 1} differs from "
                f"1/fps={dt:.5f}s by more than {tol}s"
            )
    for key in (contract.action_key, contract.state_key):
        values = column_array(frames, key)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = np.where(bad.any(axis=1))[0]
            eps = sorted(set(frames["episode_index"].to_numpy()[rows].tolist()))
            report.errors.append(f"{key}: {int(bad.sum())} NaN/Inf values in episodes {eps[:10]}")


def check_videos(root: Path, info: dict, contract: Contract, report: Report) -> None:
    n_files = 0
    for key in contract.cameras.values():
        files = list((Path(root) / "videos" / key).glob("**/*.mp4"))
        if not files:
            report.errors.append(f"videos/{key}: no video files found for camera key '{key}'")
        n_files += len(files)
    report.summary["n_video_files"] = n_files


def validate_dataset(cfg: ValidateConfig) -> Report:
    """Run every check; write the report; raise :class:`ValidationError` if any error was found."""
    contract = load_contract(cfg.contract_path)
    report = Report(dataset_root=str(cfg.dataset_root), contract=contract.name)
    info = check_meta(Path(cfg.dataset_root), contract, report)
    if info is not None and not report.errors:
        check_frames(Path(cfg.dataset_root), info, contract, cfg.timestamp_tolerance_s, report)
        check_videos(Path(cfg.dataset_root), info, contract, report)
    Path(cfg.report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.report_path).write_text(json.dumps({"ok": report.ok, **asdict(report)}, indent=2))
    if not report.ok:
        raise ValidationError(
            f"dataset {cfg.dataset_root} failed validation ({len(report.errors)} errors, report: "
            f"{cfg.report_path}):\n  - " + "\n  - ".join(report.errors)
        )
    return report
