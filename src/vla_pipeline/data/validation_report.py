"""The validation report read back: the one checked reading of ``validate.report`` by every stage after
validate (norms, the frame cache, train). It refuses a missing, unreadable, failed or stale report, one
made against another contract and, when asked, one made with other ``dataset.exclude_episodes``.

It lives in ``data`` (layer 2), not beside the writer in ``validate`` (layer 3), because the frame
cache (``data/frame_cache.py``, layer 2) reads the report too and may not import upwards; it needs
only the report's JSON keys (``ok``, ``errors``, ``suggested_exclusions``, ``excluded_episodes``,
``dataset_root``, ``contract``, ``dataset_fingerprint``, ``contract_hash``: ``validate/report.py``'s
``Report``) and ``provenance``'s "same data?" check."""

from __future__ import annotations

from pathlib import Path

from vla_pipeline.data.tables import camera_keys, format_no_camera, load_info
from vla_pipeline.errors import ValidationError, check_artifact, read_json_artifact
from vla_pipeline.provenance import find_data_mismatch

RERUN = "run `dvc repro validate` (or `vla validate`)"
REPORT_KEYS = ("ok",)  # and, in a passing report, what every reader reads:
PASSED_KEYS = ("excluded_episodes",)


def read_report_json(path: Path) -> dict:
    """The report's JSON; a :class:`ValidationError` when it is missing, an :class:`ArtifactError` when it is
    torn or not a report (no ``ok``; a passing one without ``excluded_episodes``)."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"validation report {path} not found; {RERUN} first")
    report = read_json_artifact(path, "validate", REPORT_KEYS)
    return check_artifact(report, path, "validate", PASSED_KEYS) if report["ok"] else report


def _has_no_camera(dataset_root: Path) -> bool:
    try:
        return not camera_keys(load_info(dataset_root))
    except (OSError, ValueError):
        return False  # an unreadable info.json: the report's own errors say so


def format_failed(report: dict, path: Path, dataset_root: Path) -> str:
    """Why a failed report is refused: its first error, and exclusions only where validation found faults
    local to a few episodes (a dataset without a camera gets that one message and nothing else)."""
    if _has_no_camera(dataset_root):
        return format_no_camera(dataset_root)
    errors = report.get("errors") or []
    first = str(errors[0].get("message", "")).splitlines()[0] if errors else "no error recorded"
    more = f"{len(errors)} errors; the first: " if len(errors) > 1 else ""
    text = f"validation report {path} says {dataset_root} failed validation ({more}{first})"
    suggested = report.get("suggested_exclusions") or []
    if suggested:
        exclude = sorted(set(report.get("excluded_episodes") or []) | set(suggested))
        return (f"{text}; fix the dataset, or leave out the episodes whose faults are their own "
                f"(params.yaml dataset.exclude_episodes: {exclude}), then {RERUN}")
    return f"{text}; fix what it names (`vla validate` lists every error), then {RERUN}"


def load_report(path: Path, dataset_root: Path, contract_path: Path | None = None,
                exclude_episodes: tuple[int, ...] | None = None) -> dict:
    """The validation report of ``dataset_root``; refuses a missing, failed or stale one, and (when
    given) one made against another contract or with other ``dataset.exclude_episodes``."""
    path = Path(path)
    report = read_report_json(path)
    if not report.get("ok"):
        raise ValidationError(format_failed(report, path, Path(dataset_root)))
    recorded = {"dataset_fingerprint": None, "contract_hash": None, **report}  # a key missing is a mismatch
    mismatch = find_data_mismatch(recorded, dataset_root, contract_path=contract_path)
    if mismatch == "dataset":
        raise ValidationError(f"validation report {path} belongs to another version of {dataset_root}; {RERUN}")
    if mismatch == "contract":
        recorded_path = report.get("contract")
        if recorded_path and Path(recorded_path) == Path(contract_path):
            what = f"an earlier version of {contract_path} (the file changed since)"
        else:
            what = f"another contract{f' ({recorded_path})' if recorded_path else ''} than {contract_path}"
        raise ValidationError(f"validation report {path} was made against {what}; {RERUN}")
    if exclude_episodes is not None:
        require_same_exclusions(report, path, exclude_episodes)
    return report


def require_same_exclusions(report: dict, path: Path, exclude_episodes) -> None:
    """The report was made with these ``dataset.exclude_episodes`` (those a later stage worked with)."""
    if report.get("excluded_episodes") != sorted(set(exclude_episodes)):
        raise ValidationError(f"validation report {path} was made with dataset.exclude_episodes "
                              f"{report.get('excluded_episodes')}, not {sorted(set(exclude_episodes))}; {RERUN}")
