"""The validation report: made from the findings, printed for people and saved as JSON. Later stages
read it back through ``data/validation_report.py`` (one checked read-back, at the data layer so the
frame cache can use it), which refuses a failed report or one of another dataset, contract or
exclusion list."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vla_pipeline.data.tables import format_no_camera
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint
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
    suggested_trims: dict[int, list[int]] = field(default_factory=dict)  # episode -> [first, last] frame to keep
    episode_quality: dict[int, float] = field(default_factory=dict)  # episode -> score in [0, 1] (1: no finding)


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
    warn_summaries, warn_wide = summarize_wide_faults([f for f in warnings if f.suggestion], n_usable)
    quality = compute_episode_quality(errors, warnings, episode_lengths(view), excluded_set)  # before the summaries
    warnings = warn_summaries + [f for f in warnings if f.check not in warn_wide or f.episode is None]
    suggested = sorted({f.episode for f in errors if f.episode is not None and f.check not in wide}
                       | {f.episode for f in warnings if f.suggestion == "exclude" and f.episode is not None})
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
                           "errors": n_err[name], "warnings": n_warn[name],
                           **{k: v for k, v in st.items() if k != "state"}}  # what the check measured
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
        suggested_exclusions=suggested, dataset_wide=wide + warn_wide, summary=summary,
        suggested_trims=compute_trims(warnings, set(suggested)),
        episode_quality=quality,
    )


def compute_trims(warnings: list[Finding], excluded: set[int]) -> dict[int, list[int]]:
    """The frames to keep of each episode with an idle head or tail (none for an episode suggested for
    exclusion): the narrowest keep range its findings give."""
    trims: dict[int, list[int]] = {}
    for f in warnings:
        if f.suggestion == "trim" and f.trim and f.episode is not None and f.episode not in excluded:
            first, last = trims.get(f.episode, [f.trim[0], f.trim[1]])
            trims[f.episode] = [max(first, f.trim[0]), min(last, f.trim[1])]
    return dict(sorted(trims.items()))


#: what a finding takes off its episode's quality score (docs/validation.md: Quality score)
PENALTY_ERROR, PENALTY_EXCLUDE, PENALTY_OTHER = 1.0, 0.5, 0.1


def compute_episode_quality(errors: list[Finding], warnings: list[Finding], lengths: dict[int, int],
                            excluded: set[int]) -> dict[int, float]:
    """Per episode, the product over its findings of (1 - penalty): an error leaves 0; a warning that
    suggests excluding the episode takes half, or the share of frames it covers if larger; a trim takes
    the share of frames it removes; any other warning a tenth. An episode with no finding scores 1;
    excluded episodes are left out."""
    score = {e: 1.0 for e in lengths if e not in excluded}
    for f in errors:
        if f.episode in score:
            score[f.episode] = 0.0
    for f in warnings:
        if f.episode not in score:
            continue
        n = max(1, lengths[f.episode])
        if f.suggestion == "exclude":
            covered = (f.frames[1] - f.frames[0] + 1) / n if f.frames else 0.0
            penalty = max(PENALTY_EXCLUDE, covered)
        elif f.suggestion == "trim" and f.trim:
            penalty = 1.0 - (f.trim[1] - f.trim[0] + 1) / n
        else:
            penalty = PENALTY_OTHER
        score[f.episode] *= 1.0 - min(1.0, max(0.0, penalty))
    return {e: round(v, 4) for e, v in score.items()}


def episode_lengths(view: View | None) -> dict[int, int]:
    """Frames per episode, from the data rows (the episodes table may lack lengths or disagree)."""
    if view is None or view.frames is None or "episode_index" not in view.frames.scalars:
        return {}
    episodes, counts = np.unique(view.frames["episode_index"], return_counts=True)
    return dict(zip(episodes.tolist(), counts.tolist(), strict=True))


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


JSON_REPORT = "the JSON report"  # where the full report is, when the caller does not name its path


def format_report(report: Report | dict, limit: int = MAX_OFFENDERS, where: str = JSON_REPORT) -> str:
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
    if r.get("suggested_trims"):
        trims = ", ".join(f"{e}: {a}..{b}" for e, (a, b) in list(r["suggested_trims"].items())[:limit])
        lines.append(f"idle heads or tails to trim (episode: frames to keep) {trims}"
                     f"{' ...' if len(r['suggested_trims']) > limit else ''}; `vla trim` writes a trimmed copy")
    if not r["suggested_exclusions"] and r["errors"] and any(e["episode"] is not None for e in r["errors"]) \
            and not r["dataset_wide"]:
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
    dry_run = r["checks"].get("dry_run", {})
    if dry_run.get("status") == "pass":
        lines.append(f"dry run: {dry_run['frames']} sampled frames read through the decode and frame-cache paths "
                     f"equal the source frames and table rows; one training step ran")
    lines.append(format_verdict(r, None if where == JSON_REPORT else where))
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def format_verdict(r: dict, where: str | None = None) -> str:
    """The report's last line, a sentence: passed with what was validated, or failed with what to do;
    ``where``: the report's path."""
    if r.get("ok", not r["errors"]):
        summary, counted = r.get("summary") or {}, []
        if summary.get("n_episodes") is not None:
            excluded = summary.get("n_excluded_episodes")
            counted.append(_count(summary["n_episodes"], "episode") + (f" ({excluded} excluded)" if excluded else ""))
        if summary.get("n_frames") is not None:
            counted.append(_count(summary["n_frames"], "frame"))
        counted.append(_count(len(r["warnings"]), "warning"))
        return f"Validation passed: {', '.join(counted)}" + (f"; report written to {where}." if where else ".")
    full = f" (full report: {where})." if where else "."
    root = r.get("dataset_root")
    if root and any(e["message"] == format_no_camera(root) for e in r["errors"]):
        return f"Validation failed: {root} has no camera stream, so Pi0.5 cannot be trained on it{full}"
    checks = list(dict.fromkeys(e["check"] for e in r["errors"]))
    todo = "fix it" if len(r["errors"]) == 1 else "fix them"
    if r["suggested_exclusions"]:
        todo += ", or exclude the episodes named above (dataset.exclude_episodes)"
    return f"Validation failed: {_count(len(r['errors']), 'error')} in {', '.join(checks)}; {todo}, then validate again{full}"
