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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.features import vector_dim
from vla_pipeline.data.tables import (
    SUPPORTED_CODEBASE,
    load_episodes_meta,
    load_frames_raw,
    load_info,
    load_task_indices,
)
from vla_pipeline.errors import ValidationError
from vla_pipeline.validate import (
    checks_meta,
    checks_motion,
    checks_session,
    checks_tables,
    checks_vectors,
    videos,
)
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.findings import Findings, View
from vla_pipeline.validate.report import Report, format_report, make_report

INFO, FRAMES, EPISODES, TASKS_META = "info", "frames", "episodes", "tasks"


LOADERS = {INFO: "info_json", FRAMES: "data_files", EPISODES: "episodes_meta", TASKS_META: "tasks_meta"}


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[View, Findings], None]
    loads: tuple[str, ...] = (INFO,)  # what must have loaded
    after: tuple[str, ...] = ("codebase",)  # checks whose errors make this one meaningless


SHAPES = ("contract_keys", "feature_names", "features_in_data")  # the vectors exist, are named, are in the data


CHECKS: list[Check] = [
    Check("codebase", checks_meta.check_codebase, after=()),
    Check("fps", checks_meta.check_fps),
    Check("contract_keys", checks_meta.check_contract_keys),
    Check("feature_names", checks_meta.check_feature_names, after=("codebase", "contract_keys")),
    Check("features_in_data", checks_meta.check_features_in_data, (INFO, FRAMES)),
    Check("global_index", checks_tables.check_global_index, (INFO, FRAMES)),
    Check("episode_bounds", checks_tables.check_episode_bounds, (INFO, FRAMES, EPISODES)),
    Check("exclusions", checks_meta.check_exclusions, (INFO, EPISODES)),
    Check("frame_index", checks_tables.check_frame_index, (INFO, FRAMES)),
    Check("timestamps", checks_tables.check_timestamps, (INFO, FRAMES)),
    Check("tasks", checks_tables.check_tasks, (INFO, FRAMES, TASKS_META)),
    Check("vector_shape", checks_vectors.check_vector_shape, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("sequence_length", checks_vectors.check_sequence_length, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("finite", checks_vectors.check_finite, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("ranges", checks_vectors.check_ranges, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("camera_features", videos.check_camera_features, after=("codebase", "contract_keys")),
    Check("videos", videos.check_videos, (INFO, EPISODES), ("codebase", "contract_keys")),
    Check("images", videos.check_images, (INFO, FRAMES), ("codebase", "contract_keys")),
    # warnings only
    Check("short_episodes", checks_vectors.check_short_episodes, (INFO, EPISODES)),
    Check("camera_streams", videos.check_camera_streams, (INFO, EPISODES), ("codebase", "contract_keys")),
    Check("static_joints", checks_vectors.check_static_joints, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("action_jumps", checks_vectors.check_action_jumps, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("calibration", checks_vectors.check_calibration, (INFO, FRAMES), ("codebase", *SHAPES)),
    Check("duplicate_episodes", checks_vectors.check_duplicate_episodes, (INFO, FRAMES), ("codebase", *SHAPES)),
    # behavioural checks on the contract's joints (warnings with a suggested exclusion or trim)
    *(Check(name, fn, (INFO, FRAMES), ("codebase", *SHAPES)) for name, fn in (
        ("frozen_state", checks_motion.check_frozen_state),
        ("state_follows_action", checks_motion.check_state_follows_action),
        ("saturation", checks_motion.check_saturation),
        ("glitches", checks_motion.check_glitches),
        ("idle_ends", checks_motion.check_idle_ends),
        ("action_is_state", checks_session.check_action_is_state),
        ("action_lag", checks_session.check_action_lag),
        ("scale_mismatch", checks_session.check_scale_mismatch),
        ("near_duplicate_episodes", checks_session.check_near_duplicate_episodes),
        ("drift", checks_session.check_drift),
    )),
]


REQUIRED_COLUMNS = ("index", "episode_index", "frame_index", "timestamp")


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
                exclude_episodes=tuple(cfg.exclude_episodes), contract_path=Path(cfg.contract_path),
                quality=cfg.quality)
    if info.get("codebase_version") != SUPPORTED_CODEBASE:
        return view, {INFO}  # another layout: the codebase check says how to convert; nothing else is read
    dims = {}
    for key in (contract.action_key, contract.state_key):
        # a missing key or malformed shape is reported by contract_keys / feature_names
        with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
            dims[key] = vector_dim(info, key)
    loaders = {
        FRAMES: (lambda: load_frames_raw(root, dims), "frames"),
        EPISODES: (lambda: load_episodes_meta(root), "episodes"),
        TASKS_META: (lambda: load_task_indices(root), "tasks"),
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
        lacking = [c for c in REQUIRED_COLUMNS if c not in view.frames.columns]
        out.error("data_files", f"data parquet lacks columns {lacking}, which LeRobot's loader needs (a recorder that "
                  f"never wrote them); re-export the dataset with LeRobot's writer, or add them: index is the frame's "
                  f"running number over the dataset in episode order, frame_index its number in the episode, "
                  f"timestamp frame_index / fps", value=lacking)
    return view, loaded


DRY_RUN = "dry_run"


def make_checks(dry_run: Callable[[View, Findings], dict | None] | None) -> list[Check]:
    """Every check, and the dry run of the run itself last: it reads the data only when nothing before it
    failed outside the excluded episodes (the train stage could not start)."""
    if dry_run is None:
        return CHECKS
    return [*CHECKS, Check(DRY_RUN, dry_run, (INFO, FRAMES, EPISODES, TASKS_META), tuple(c.name for c in CHECKS))]


def run_checks(view: View, loaded: set[str], out: Findings,
               dry_run: Callable[[View, Findings], dict | None] | None = None) -> dict[str, dict]:
    """Run every check whose inputs loaded and whose prerequisites passed; the others are skipped with
    what they need. A check that crashes becomes an error finding, never a traceback."""
    status: dict[str, dict] = {}
    for check in make_checks(dry_run):
        needs = [LOADERS[n] for n in check.loads if n not in loaded]
        for before in check.after:  # a skipped prerequisite passes on what it needs: the root cause is named
            st = status.get(before, {"state": "skipped", "needs": [before]})
            needs += st["needs"] if st["state"] == "skipped" else [before] if any(
                f.check == before and f.episode not in view.exclude_episodes for f in out.errors) else []
        needs = list(dict.fromkeys(needs))
        if needs:
            status[check.name] = {"state": "skipped", "needs": needs}
            continue
        result = None
        try:
            result = check.fn(view, out)
        except Exception as e:  # noqa: BLE001
            out.error(check.name, f"check could not run ({type(e).__name__}: {e}); the files are malformed here: "
                      f"see the other errors, or re-export the dataset")
        status[check.name] = {"state": "ran", **(result or {})}  # a check may return what it measured
    return status


def validate_dataset(cfg: ValidateConfig, dry_run: Callable[[View, Findings], dict | None] | None = None) -> Report:
    """Run every check, then ``dry_run`` (the run's data path and one training step, built by the entry
    point: ``train.dry_run.make_dry_run_check``), and write the report; raise :class:`ValidationError` if
    any error remains."""
    out = Findings()
    view, loaded = load_view(cfg, out)
    status = run_checks(view, loaded, out, dry_run) if view is not None else {"info_json": {"state": "ran"}}
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
