"""Dataset validation: read the raw files (meta JSON, parquet, video containers) and either pass
with a report or fail with errors that say what is wrong, where, and what to do.

Every check runs even when others fail (a check that cannot run on a malformed dataset becomes
an error of its own, never a traceback). Errors inside ``exclude_episodes`` are reported as
excluded and do not fail the run; every later stage leaves those episodes out.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_pipeline import checks
from vla_pipeline.checks import Finding, Findings, View
from vla_pipeline.contract import compute_contract_hash, load_contract
from vla_pipeline.data import compute_dataset_fingerprint, load_info
from vla_pipeline.errors import ValidationError
from vla_pipeline.frames import load_episodes_meta, load_frames_raw, load_task_indices
from vla_pipeline.params import int_list, param

REPORT_LIMIT = 100  # findings per check kept in the JSON report

INFO, FRAMES, EPISODES, TASKS = "info", "frames", "episodes", "tasks"
# name, function, what it needs loaded
ERROR_CHECKS: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("codebase", checks.check_codebase, (INFO,)),
    ("fps", checks.check_fps, (INFO,)),
    ("contract_keys", checks.check_contract_keys, (INFO,)),
    ("feature_names", checks.check_feature_names, (INFO,)),
    ("features_in_data", checks.check_features_in_data, (INFO, FRAMES)),
    ("global_index", checks.check_global_index, (INFO, FRAMES)),
    ("episode_bounds", checks.check_episode_bounds, (INFO, FRAMES, EPISODES)),
    ("frame_index", checks.check_frame_index, (INFO, FRAMES)),
    ("timestamps", checks.check_timestamps, (INFO, FRAMES)),
    ("tasks", checks.check_tasks, (INFO, FRAMES, TASKS)),
    ("vector_shape", checks.check_vector_shape, (INFO, FRAMES)),
    ("sequence_length", checks.check_sequence_length, (INFO, FRAMES)),
    ("finite", checks.check_finite, (INFO, FRAMES)),
    ("ranges", checks.check_ranges, (INFO, FRAMES)),
    ("videos", checks.check_videos, (INFO, EPISODES)),
]
WARNING_CHECKS: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("short_episodes", checks.check_short_episodes, (INFO, EPISODES)),
    ("static_joints", checks.check_static_joints, (INFO, FRAMES)),
    ("action_jumps", checks.check_action_jumps, (INFO, FRAMES)),
    ("duplicate_episodes", checks.check_duplicate_episodes, (INFO, FRAMES)),
]
REQUIRED_COLUMNS = ("index", "episode_index", "frame_index", "timestamp")


@dataclass(frozen=True)
class ValidateConfig:
    dataset_root: Path
    contract_path: Path
    report_path: Path
    exclude_episodes: tuple[int, ...] = ()
    min_episode_length: int = 1  # the policy's chunk size: shorter episodes get a warning
    decode_samples: int = 0  # frames to decode per video file (0: container metadata only)

    @classmethod
    def from_params(cls, p: dict) -> ValidateConfig:
        return cls(
            dataset_root=param(p, "dataset.root", Path),
            contract_path=param(p, "dataset.contract", Path),
            report_path=param(p, "validate.report", Path),
            exclude_episodes=tuple(param(p, "dataset.exclude_episodes", int_list)),
            min_episode_length=param(p, "policy.chunk_size", int),
            decode_samples=param(p, "validate.decode_samples", int),
        )


@dataclass
class Report:
    ok: bool
    dataset_root: str
    contract: str
    contract_hash: str
    dataset_fingerprint: str
    checks: dict[str, dict]
    errors: list[dict]
    warnings: list[dict]
    excluded: list[dict]
    exclude_episodes: list[int]
    summary: dict = field(default_factory=dict)


def load_view(cfg: ValidateConfig, out: Findings) -> tuple[View | None, set[str]]:
    """Load what the checks read; what cannot be loaded is an error and marks its checks skipped."""
    root = Path(cfg.dataset_root)
    contract = load_contract(cfg.contract_path)
    try:
        info = load_info(root)
        info["features"], info["fps"]  # noqa: B018  (both required)
    except (OSError, ValueError, KeyError, TypeError) as e:
        out.error("info_json", f"{root}/meta/info.json cannot be read ({type(e).__name__}: {e}); is {root} a "
                  f"LeRobotDataset v3.0 root?")
        return None, set()
    view, loaded = View(root, info, contract, min_episode_length=cfg.min_episode_length,
                        decode_samples=cfg.decode_samples), {"info"}
    dims = {}
    for key in (contract.action_key, contract.state_key):
        # a missing key or malformed shape is reported by contract_keys / feature_names
        with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
            dims[key] = int(info["features"][key]["shape"][0])
    loaders = {
        "frames": ("data_files", lambda: load_frames_raw(root, dims), "frames"),
        "episodes": ("episodes_meta", lambda: load_episodes_meta(root), "episodes"),
        "tasks": ("tasks_meta", lambda: load_task_indices(root), "tasks"),
    }
    for need, (check, load, attr) in loaders.items():
        try:
            setattr(view, attr, load())
            loaded.add(need)
        except Exception as e:  # noqa: BLE001  (an unreadable file is a finding, not a crash)
            out.error(check, f"cannot read {attr} ({type(e).__name__}: {e}); re-export the dataset")
    if "frames" in loaded and not all(c in view.frames.columns for c in REQUIRED_COLUMNS):
        loaded.discard("frames")
        out.error("data_files", f"data parquet lacks columns {[c for c in REQUIRED_COLUMNS if c not in view.frames.columns]}")
    return view, loaded


def run_checks(view: View, loaded: set[str], out: Findings) -> dict[str, str]:
    """Run every check whose inputs loaded; a check that crashes becomes an error finding."""
    status = {}
    for name, fn, needs in ERROR_CHECKS + WARNING_CHECKS:
        if not set(needs) <= loaded:
            status[name] = "skipped"
            continue
        try:
            fn(view, out)
            status[name] = "ran"
        except Exception as e:  # noqa: BLE001
            out.error(name, f"check could not run ({type(e).__name__}: {e}); the dataset is malformed here")
            status[name] = "ran"
    return status


def make_report(cfg: ValidateConfig, out: Findings, status: dict[str, str], view: View | None) -> Report:
    excluded_set = set(cfg.exclude_episodes)
    errors = [f for f in out.errors if f.episode is None or f.episode not in excluded_set]
    excluded = [f for f in out.errors if f.episode is not None and f.episode in excluded_set]
    warnings = [f for f in out.warnings if f.episode is None or f.episode not in excluded_set]
    n_err, n_warn = Counter(f.check for f in errors), Counter(f.check for f in warnings)
    for f in errors:
        status.setdefault(f.check, "ran")
    table = {
        name: {"status": "skipped" if st == "skipped" else "fail" if n_err[name] else "warn" if n_warn[name] else "pass",
               "errors": n_err[name], "warnings": n_warn[name]}
        for name, st in status.items()
    }
    summary = {}
    if view is not None and view.frames is not None:
        summary = {"n_frames": view.frames.n, "n_episodes": len(set(view.frames["episode_index"].tolist())),
                   "n_excluded_episodes": len(excluded_set)}
    root = Path(cfg.dataset_root)
    return Report(
        ok=not errors, dataset_root=str(root), contract=str(cfg.contract_path),
        contract_hash=compute_contract_hash(cfg.contract_path),
        dataset_fingerprint=compute_dataset_fingerprint(root) if root.is_dir() else "",
        checks=table, errors=_capped(errors), warnings=_capped(warnings), excluded=_capped(excluded),
        exclude_episodes=sorted({f.episode for f in errors if f.episode is not None}), summary=summary,
    )


def _capped(findings: list[Finding]) -> list[dict]:
    """The first REPORT_LIMIT findings of each check, as dicts."""
    seen: Counter = Counter()
    kept = []
    for f in findings:
        seen[f.check] += 1
        if seen[f.check] <= REPORT_LIMIT:
            kept.append(asdict(f))
    return kept


def format_report(report: Report | dict, limit: int = checks.MAX_OFFENDERS) -> str:
    """A short human table: one line per check, then the first offenders of each failing check."""
    r = report if isinstance(report, dict) else asdict(report)
    lines = [f"{'check':<20} {'status':<8} {'errors':>6} {'warnings':>8}"]
    lines += [f"{n:<20} {c['status']:<8} {c['errors']:>6} {c['warnings']:>8}" for n, c in r["checks"].items()]
    for name in [n for n, c in r["checks"].items() if c["errors"]]:
        lines += [f"  [{name}] {e['message']}" for e in [e for e in r["errors"] if e["check"] == name][:limit]]
    if r["exclude_episodes"]:
        lines.append(f"to train without them, set in params.yaml  dataset.exclude_episodes: {r['exclude_episodes']}")
    return "\n".join(lines)


def validate_dataset(cfg: ValidateConfig) -> Report:
    """Run every check and write the report; raise :class:`ValidationError` if any error remains."""
    out = Findings()
    view, loaded = load_view(cfg, out)
    status = run_checks(view, loaded, out) if view is not None else {"info_json": "ran"}
    report = make_report(cfg, out, status, view)
    path = Path(cfg.report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2))
    if not report.ok:
        raise ValidationError(
            f"dataset {cfg.dataset_root} failed validation against {cfg.contract_path} "
            f"({len(report.errors)} errors; full report: {path}):\n{format_report(report)}"
        )
    return report


def load_report(path: Path, dataset_root: Path) -> dict:
    """The validation report of ``dataset_root``; refuses a missing, failed or stale one."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"validation report {path} not found; run `dvc repro validate`")
    report = json.loads(path.read_text())
    if not report.get("ok"):
        raise ValidationError(f"validation report {path} says the dataset failed; fix it or set "
                              f"dataset.exclude_episodes, then `dvc repro validate`")
    if report.get("dataset_fingerprint") != compute_dataset_fingerprint(dataset_root):
        raise ValidationError(f"validation report {path} belongs to another version of {dataset_root}; "
                              f"run `dvc repro validate`")
    return report
