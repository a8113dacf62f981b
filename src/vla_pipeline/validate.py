"""Dataset validation: read the raw files (meta JSON, parquet, video containers) and either pass
with a report or fail with errors that say what is wrong, where, and what to do.

Every check runs unless what it needs is missing: a file that did not load, or an earlier check
whose failure makes it meaningless (a contract whose keys the dataset lacks leaves nothing for
the vector checks to look at); such a check is ``skipped`` with what it needs, never ``pass``.
Errors inside ``exclude_episodes`` are reported as excluded and do not fail the run; every later
stage leaves those episodes out. A check that fails in all or most episodes is one dataset-level
error (the dataset, not a few episodes, is at fault), and excluding episodes is suggested only
for faults that are local to a few.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_pipeline import checks, video_checks
from vla_pipeline.checks import MIN_EPISODES, Finding, Findings, View
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.tables import load_episodes_meta, load_frames_raw, load_info, load_task_indices
from vla_pipeline.errors import ValidationError
from vla_pipeline.params import int_list, param
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint

INFO, FRAMES, EPISODES, TASKS = "info", "frames", "episodes", "tasks"
LOADERS = {INFO: "info_json", FRAMES: "data_files", EPISODES: "episodes_meta", TASKS: "tasks_meta"}


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[View, Findings], None]
    loads: tuple[str, ...] = (INFO,)  # what must have loaded
    after: tuple[str, ...] = ("codebase",)  # checks whose errors make this one meaningless


SHAPES = ("contract_keys", "feature_names", "features_in_data")  # the vectors exist, are named, are in the data
CHECKS: list[Check] = [
    Check("codebase", checks.check_codebase, after=()),
    Check("fps", checks.check_fps),
    Check("contract_keys", checks.check_contract_keys),
    Check("feature_names", checks.check_feature_names, after=("codebase", "contract_keys")),
    Check("features_in_data", checks.check_features_in_data, (INFO, FRAMES)),
    Check("global_index", checks.check_global_index, (INFO, FRAMES)),
    Check("episode_bounds", checks.check_episode_bounds, (INFO, FRAMES, EPISODES)),
    Check("exclusions", checks.check_exclusions, (INFO, EPISODES)),
    Check("frame_index", checks.check_frame_index, (INFO, FRAMES)),
    Check("timestamps", checks.check_timestamps, (INFO, FRAMES)),
    Check("tasks", checks.check_tasks, (INFO, FRAMES, TASKS)),
    Check("vector_shape", checks.check_vector_shape, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("sequence_length", checks.check_sequence_length, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("finite", checks.check_finite, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("ranges", checks.check_ranges, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("videos", video_checks.check_videos, (INFO, EPISODES), ("codebase", "contract_keys")),
    # warnings only
    Check("short_episodes", checks.check_short_episodes, (INFO, EPISODES)),
    Check("camera_streams", video_checks.check_camera_streams, (INFO, EPISODES), ("codebase", "contract_keys")),
    Check("static_joints", checks.check_static_joints, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("action_jumps", checks.check_action_jumps, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("calibration", checks.check_calibration, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("duplicate_episodes", checks.check_duplicate_episodes, (INFO, FRAMES), ("codebase", *SHAPES)),
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
    checks: dict[str, dict]  # name -> status (pass | warn | fail | skipped), counts, and what a skipped check needs
    errors: list[dict]  # every error outside the excluded episodes (dataset-level summaries first)
    warnings: list[dict]
    excluded: list[dict]  # errors inside dataset.exclude_episodes (they do not fail the run)
    excluded_episodes: list[int]  # dataset.exclude_episodes as configured
    suggested_exclusions: list[int]  # episodes whose faults are local: what dataset.exclude_episodes could add
    dataset_wide: list[str] = field(default_factory=list)  # checks that fail in all or most episodes
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
    view = View(root, info, contract, min_episode_length=cfg.min_episode_length, decode_samples=cfg.decode_samples,
                exclude_episodes=tuple(cfg.exclude_episodes))
    if info.get("codebase_version") != checks.SUPPORTED_CODEBASE:
        return view, {INFO}  # another layout: the codebase check says how to convert; nothing else is read
    dims = {}
    for key in (contract.action_key, contract.state_key):
        # a missing key or malformed shape is reported by contract_keys / feature_names
        with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
            dims[key] = int(info["features"][key]["shape"][0])
    loaders = {
        FRAMES: (lambda: load_frames_raw(root, dims), "frames"),
        EPISODES: (lambda: load_episodes_meta(root), "episodes"),
        TASKS: (lambda: load_task_indices(root), "tasks"),
    }
    loaded = {INFO}
    for need, (load, attr) in loaders.items():
        try:
            setattr(view, attr, load())
            loaded.add(need)
        except Exception as e:  # noqa: BLE001  (an unreadable file is a finding, not a crash)
            out.error(LOADERS[need], f"cannot read {attr} ({type(e).__name__}: {e}); re-export the dataset")
    if FRAMES in loaded and not all(c in view.frames.columns for c in REQUIRED_COLUMNS):
        loaded.discard(FRAMES)
        out.error("data_files", f"data parquet lacks columns {[c for c in REQUIRED_COLUMNS if c not in view.frames.columns]}")
    return view, loaded


def run_checks(view: View, loaded: set[str], out: Findings) -> dict[str, dict]:
    """Run every check whose inputs loaded and whose prerequisites passed; the others are skipped with
    what they need. A check that crashes becomes an error finding, never a traceback."""
    status: dict[str, dict] = {}
    for check in CHECKS:
        needs = [LOADERS[n] for n in check.loads if n not in loaded]
        for before in check.after:  # a skipped prerequisite passes on what it needs: the root cause is named
            st = status.get(before, {"state": "skipped", "needs": [before]})
            needs += st["needs"] if st["state"] == "skipped" else [before] if any(
                f.check == before for f in out.errors) else []
        needs = list(dict.fromkeys(needs))
        if needs:
            status[check.name] = {"state": "skipped", "needs": needs}
            continue
        try:
            check.fn(view, out)
        except Exception as e:  # noqa: BLE001
            out.error(check.name, f"check could not run ({type(e).__name__}: {e}); the files are malformed here: "
                      f"see the other errors, or re-export the dataset")
        status[check.name] = {"state": "ran"}
    return status


def count_episodes(view: View | None) -> int | None:
    if view is None:
        return None
    if view.episodes is not None:
        return len(view.episodes["episode_index"])
    if view.frames is not None:
        return len(set(view.frames["episode_index"].tolist()))
    return None


def summarize_wide_faults(errors: list[Finding], n_usable: int | None) -> tuple[list[Finding], list[str]]:
    """One dataset-level error for each check that fails in all or most usable episodes: such a fault is
    the dataset's (a layout, a converter, a lost directory), and excluding the episodes is not the fix."""
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in errors:
        if f.episode is not None:
            by_check[f.check].append(f)
    wide, summaries = [], []
    for name, found in by_check.items():
        episodes = sorted({f.episode for f in found})
        if n_usable and len(episodes) * 2 > n_usable:  # more than half (all of them included)
            wide.append(name)
            summaries.append(Finding(name, f"{len(episodes)} of {n_usable} episodes fail this check: a fault of the "
                                     f"whole dataset, not of a few episodes, so excluding them is not the fix. "
                                     f"First: {found[0].message}", value=len(episodes), expected=0))
    return summaries, wide


def make_report(cfg: ValidateConfig, out: Findings, status: dict[str, dict], view: View | None) -> Report:
    excluded_set = set(cfg.exclude_episodes)
    errors = [f for f in out.errors if f.episode is None or f.episode not in excluded_set]
    excluded = [f for f in out.errors if f.episode is not None and f.episode in excluded_set]
    warnings = [f for f in out.warnings if f.episode is None or f.episode not in excluded_set]
    n_episodes = count_episodes(view)
    n_usable = None if n_episodes is None else n_episodes - len(excluded_set & set(range(n_episodes)))
    summaries, wide = summarize_wide_faults(errors, n_usable)
    errors = summaries + errors
    suggested = sorted({f.episode for f in errors if f.episode is not None and f.check not in wide})
    if n_usable is not None and n_usable - len(suggested) < MIN_EPISODES:
        suggested = []  # excluding them would leave too little: the dataset needs fixing (format_report says so)
    n_err, n_warn = Counter(f.check for f in errors), Counter(f.check for f in warnings)
    for f in errors:
        status.setdefault(f.check, {"state": "ran"})
    table = {}
    for name, st in status.items():
        if st["state"] == "skipped":
            table[name] = {"status": "skipped", "needs": st["needs"], "errors": 0, "warnings": 0}
        else:
            table[name] = {"status": "fail" if n_err[name] else "warn" if n_warn[name] else "pass",
                           "errors": n_err[name], "warnings": n_warn[name]}
    summary = {}
    if view is not None and view.frames is not None:
        summary = {"n_frames": view.frames.n, "n_episodes": n_episodes, "n_excluded_episodes": len(excluded_set)}
    root = Path(cfg.dataset_root)
    return Report(
        ok=not errors, dataset_root=str(root), contract=str(cfg.contract_path),
        contract_hash=compute_contract_hash(cfg.contract_path),
        dataset_fingerprint=compute_dataset_fingerprint(root) if root.is_dir() else "",
        checks=table, errors=[asdict(f) for f in errors], warnings=[asdict(f) for f in warnings],
        excluded=[asdict(f) for f in excluded], excluded_episodes=sorted(excluded_set),
        suggested_exclusions=suggested, dataset_wide=wide, summary=summary,
    )


def _indent(message: str) -> str:
    return message.replace("\n", "\n    ")


def _listed(findings: list[dict], limit: int, where: str) -> list[str]:
    """``limit`` messages per check, then how many more there are (the JSON report has them all)."""
    lines, per_check = [], defaultdict(list)
    for f in findings:
        per_check[f["check"]].append(f)
    for name, found in per_check.items():
        lines += [f"  [{name}] {_indent(f['message'])}" for f in found[:limit]]
        if len(found) > limit:
            lines.append(f"  [{name}] ... and {len(found) - limit} more (all in {where})")
    return lines


def format_report(report: Report | dict, limit: int = checks.MAX_OFFENDERS, where: str = "the JSON report") -> str:
    """The causes first (errors, then warnings), what to do, then the check table (every check that did
    not pass on a line of its own; skipped checks with what they need)."""
    r = report if isinstance(report, dict) else asdict(report)
    lines = []
    if r["errors"]:
        lines += [f"errors ({len(r['errors'])}):"]
        wide = set(r["dataset_wide"])
        shown = [e for e in r["errors"] if e["check"] not in wide or e["episode"] is None]
        lines += _listed(shown, limit, where)
    if r["warnings"]:
        lines += [f"warnings ({len(r['warnings'])}):", *_listed(r["warnings"], limit, where)]
    if r["suggested_exclusions"]:
        lines.append(f"to train without the episodes whose faults are their own, set in params.yaml  "
                     f"dataset.exclude_episodes: {sorted(set(r['excluded_episodes']) | set(r['suggested_exclusions']))}")
    elif r["errors"] and any(e["episode"] is not None for e in r["errors"]) and not r["dataset_wide"]:
        lines.append(f"excluding the failing episodes would leave fewer than {MIN_EPISODES}: fix the dataset")
    passed = [n for n, c in r["checks"].items() if c["status"] == "pass"]
    lines.append(f"{'check':<20} {'status':<8} {'errors':>6} {'warnings':>8}")
    for name, c in r["checks"].items():
        if c["status"] == "skipped":
            lines.append(f"{name:<20} skipped (needs: {', '.join(c['needs'])})")
        elif c["status"] != "pass":
            lines.append(f"{name:<20} {c['status']:<8} {c['errors']:>6} {c['warnings']:>8}")
    if passed:
        lines.append(f"passed: {', '.join(passed)}")
    return "\n".join(lines)


def validate_dataset(cfg: ValidateConfig) -> Report:
    """Run every check and write the report; raise :class:`ValidationError` if any error remains."""
    out = Findings()
    view, loaded = load_view(cfg, out)
    status = run_checks(view, loaded, out) if view is not None else {"info_json": {"state": "ran"}}
    report = make_report(cfg, out, status, view)
    path = Path(cfg.report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2))
    if not report.ok:
        raise ValidationError(
            f"dataset {cfg.dataset_root} failed validation against {cfg.contract_path} "
            f"({len(report.errors)} error{'' if len(report.errors) == 1 else 's'}; full report: {path}):\n{format_report(report, where=str(path))}"
        )
    return report


def load_report(path: Path, dataset_root: Path, contract_path: Path | None = None,
                exclude_episodes: tuple[int, ...] | None = None) -> dict:
    """The validation report of ``dataset_root``; refuses a missing, failed or stale one, and (when
    given) one made against another contract or with other ``dataset.exclude_episodes``."""
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
    if contract_path is not None and report.get("contract_hash") != compute_contract_hash(contract_path):
        raise ValidationError(f"validation report {path} was made against another contract than {contract_path}; "
                              f"run `dvc repro validate`")
    if exclude_episodes is not None and report.get("excluded_episodes") != sorted(set(exclude_episodes)):
        raise ValidationError(f"validation report {path} was made with dataset.exclude_episodes "
                              f"{report.get('excluded_episodes')}, not {sorted(set(exclude_episodes))}; run "
                              f"`dvc repro validate`")
    return report
