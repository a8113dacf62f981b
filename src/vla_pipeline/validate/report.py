"""The validation report: made from the findings, printed for people, saved as JSON, and read back
by later stages, which refuse a report of another dataset, contract or exclusion list."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vla_pipeline.errors import ValidationError
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint, find_data_mismatch
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.findings import MAX_OFFENDERS, MIN_EPISODES, Finding, Findings, View


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


def format_report(report: Report | dict, limit: int = MAX_OFFENDERS, where: str = "the JSON report") -> str:
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
    recorded = {"dataset_fingerprint": None, "contract_hash": None, **report}  # a key missing is a mismatch
    mismatch = find_data_mismatch(recorded, dataset_root, contract_path=contract_path)
    if mismatch == "dataset":
        raise ValidationError(f"validation report {path} belongs to another version of {dataset_root}; "
                              f"run `dvc repro validate`")
    if mismatch == "contract":
        raise ValidationError(f"validation report {path} was made against another contract than {contract_path}; "
                              f"run `dvc repro validate`")
    if exclude_episodes is not None:
        require_same_exclusions(report, path, exclude_episodes)
    return report


def require_same_exclusions(report: dict, path: Path, exclude_episodes) -> None:
    """The report was made with these ``dataset.exclude_episodes`` (those a later stage worked with)."""
    if report.get("excluded_episodes") != sorted(set(exclude_episodes)):
        raise ValidationError(f"validation report {path} was made with dataset.exclude_episodes "
                              f"{report.get('excluded_episodes')}, not {sorted(set(exclude_episodes))}; run "
                              f"`dvc repro validate`")
