"""What ``vla store gc`` keeps and deletes in the store, and the deletion itself.

Kept:

* every run that the ``dvc.lock`` of any revision references (every commit of every branch, tag and
  ``dvc exp`` ref, and the workspace's), and the run the workspace's ``artifacts/train`` and live params
  name now (:mod:`vla_pipeline.checkpoint.store_refs`): ``git checkout``/``dvc exp apply`` then ``dvc
  checkout`` or a resume can still find it;
* every run whose ``.lock`` a running training holds (it is being written);
* while any revision is *unresolved* (neither the DVC cache nor its live params tie its dvc.lock to a run):
  every run whose oldest file is no newer than the newest unresolved commit (plus an hour). A commit's
  run was written before the commit was made, so only runs begun after every unresolved commit are
  certainly not the one it references;
* the frame-cache entry the workspace's frame cache manifest names, and every entry while a training runs
  (it may be reading it); other entries are rebuildable from the dataset (the frame_cache stage, or the
  train stage when it finds its entry gone) and are deleted;
* ``wandb/`` (W&B's own files: sync or delete them yourself) and anything the pipeline did not make.

Nothing is deleted without ``yes``; each deletion takes the entry's lock first (a run's ``.lock``, a
frame-cache entry's ``<entry>.lock``), so a training or a frame-cache build that starts meanwhile is not
cut short: the entry is then kept, and the output says so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pipeline.checkpoint.store_refs import References, Revision
from vla_pipeline.checkpoint.store_usage import (
    FRAME_CACHE,
    FRAME_CACHE_MANIFEST,
    RUN,
    EntryUsage,
    StoreUsage,
    format_size,
)
from vla_pipeline.errors import ConfigError
from vla_pipeline.store import file_lock

UNRESOLVED_SLACK_S = 3600.0  # clock and commit-time slack of the rule for unresolved revisions
DEFAULT_FRAME_CACHE_DIR = "artifacts/frame_cache"  # frame_cache.dir
RUN_LOCK_FILE = ".lock"  # RunPlace.lock: <run>/.lock, held by the training that writes the run


@dataclass(frozen=True)
class Decision:
    entry: EntryUsage
    keep: bool
    why: str


@dataclass
class GcPlan:
    """Each store entry with keep/delete and why; ``unresolved``: the revisions gc could not tie to a run."""

    decisions: list[Decision] = field(default_factory=list)
    unresolved: list[Revision] = field(default_factory=list)

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def read_workspace_param(repo: Path, dotted: str, default: str | None) -> str | None:
    """``dotted`` (``frame_cache.dir``) from the repository's params.yaml, else ``default``."""
    try:
        doc = yaml.safe_load((Path(repo) / "params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return default
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return default if doc is None else str(doc)


def workspace_frame_cache_entry(repo: Path) -> str | None:
    """The store entry that the workspace's frame cache manifest (the frame_cache stage's output) names."""
    manifest = Path(repo) / read_workspace_param(repo, "frame_cache.dir", DEFAULT_FRAME_CACHE_DIR) / FRAME_CACHE_MANIFEST
    try:
        entry = json.loads(manifest.read_text()).get("store_entry")
    except (OSError, ValueError, AttributeError):
        return None
    return str(entry) if entry else None


def is_locked(lock: Path, what: str) -> bool:
    """Whether another process holds the file lock ``lock`` now. A lock file that does not exist is free (and
    is not created: its time would count as the run's)."""
    if not Path(lock).is_file():
        return False
    try:
        with file_lock(lock, what, wait=False):
            return False
    except ConfigError:
        return True


def label_list(labels: list[str]) -> str:
    return labels[0] + (f" (+{len(labels) - 1} more)" if len(labels) > 1 else "")


def decide_run(entry: EntryUsage, refs: References, unresolved_until: float | None) -> Decision:
    """Keep or delete one run directory, and why (the rules of this module's docstring)."""
    if entry.name in refs.runs:
        return Decision(entry, True, f"referenced by {label_list(refs.runs[entry.name])}")
    if is_locked(entry.path / RUN_LOCK_FILE, f"training run {entry.name}"):
        return Decision(entry, True, f"a running training holds {entry.path / RUN_LOCK_FILE}")
    if unresolved_until is not None and (entry.oldest is None or entry.oldest <= unresolved_until):
        return Decision(entry, True, "may be what an unresolved dvc.lock references (begun before it was committed)")
    return Decision(entry, False, "referenced by no dvc.lock")


def decide_frame_cache(entry: EntryUsage, workspace_entry: str | None, training: bool) -> Decision:
    if entry.name == workspace_entry:
        return Decision(entry, True, "the workspace's frame cache manifest names it")
    if training:
        return Decision(entry, True, "a training is running and may read it")
    if is_locked(*entry_lock(entry)):
        return Decision(entry, True, "being built (its lock is held)")
    return Decision(entry, False, "not the workspace's; rebuildable from the dataset (`dvc repro frame_cache`)")


def plan_gc(usage: StoreUsage, refs: References, repo: Path) -> GcPlan:
    """Keep or delete every entry of ``usage`` (scanned by ``compute_store_usage``) given what ``refs`` (from
    ``find_references(repo)``) references; nothing is deleted here."""
    dates = [r.date for r in refs.unresolved if r.date is not None]
    unresolved_until = (max(dates) + UNRESOLVED_SLACK_S) if dates else (float("inf") if refs.unresolved else None)
    plan = GcPlan(unresolved=list(refs.unresolved))
    runs = {e.path: decide_run(e, refs, unresolved_until) for e in usage.entries if e.kind == RUN}
    training = any(d.why.startswith("a running training") for d in runs.values())
    workspace_entry = workspace_frame_cache_entry(repo)
    for entry in usage.entries:
        if entry.kind == RUN:
            plan.decisions.append(runs[entry.path])
        elif entry.kind == FRAME_CACHE:
            plan.decisions.append(decide_frame_cache(entry, workspace_entry, training))
        else:
            plan.decisions.append(Decision(entry, True, "never deleted by gc" if entry.kind == "wandb"
                                           else "not made by the pipeline; left alone"))
    return plan


def entry_lock(entry: EntryUsage) -> tuple[Path, str]:
    """The lock file that guards ``entry`` and what its holder does: a run's ``.lock`` (its training), a
    frame-cache entry's ``<entry>.lock`` (its build; also for the ``<entry>.tmp`` a build is filling)."""
    if entry.kind == RUN:
        return entry.path / RUN_LOCK_FILE, f"training run {entry.name} in {entry.path}"
    name = entry.name.removesuffix(".tmp")
    return entry.path.with_name(name + ".lock"), f"building the frame cache {entry.path.with_name(name)}"


def delete_planned(plan: GcPlan, echo: Callable[[str], None] = print) -> int:
    """Delete the entries ``plan`` marks, each under its lock (taken without waiting: an entry whose lock is
    held now is kept, and ``echo`` says so), printing each path as it goes. Returns the bytes freed (what the
    entries held, less what is also linked from outside the store)."""
    freed = 0
    for decision in plan.to_delete:
        entry = decision.entry
        lock, what = entry_lock(entry)
        if not entry.path.exists():
            continue
        try:
            with file_lock(lock, what, wait=False):
                echo(f"deleting {entry.path} ({format_size(entry.bytes)})")
                shutil.rmtree(entry.path)
        except ConfigError:
            echo(f"kept {entry.path}: another process took {lock} meanwhile ({what})")
            continue
        freed += entry.bytes - entry.shared
    return freed
