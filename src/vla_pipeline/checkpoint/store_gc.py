"""What ``vla store gc`` keeps and deletes in the store, and the deletion itself.

The store is machine-wide by default, so several clones of the repository may share it. Each ``vla store
du``/``gc`` registers its repository (``<store>/repos/<sha256 of its path>.json``) and gc consults every
registered clone that still exists and is a git repository. Kept:

* every run that the ``dvc.lock`` of any revision of any consulted clone references (every commit of every
  branch, tag and ``dvc exp`` ref, and the workspace's), the run each workspace's ``artifacts/train`` and
  live params name now, and those of DVC's temporary experiment workspaces
  (:mod:`vla_pipeline.checkpoint.store_refs`);
* every run whose ``.lock`` a running training holds (it is being written);
* while any revision is *unresolved* (neither the DVC cache nor its live params tie its dvc.lock to a run)
  or *unverified* (only its live params do): every run whose oldest file is no newer than the newest such
  commit (plus an hour). A commit's run was written before the commit was made;
* every run modified within the last ``keep_recent`` hours (default 72): a clone that never ran ``vla
  store`` is unknown here, and an experiment DVC has not committed yet may own it;
* every run when a registered clone could not be consulted (git failed there, say);
* ``runs/unknown-run`` (checkpoints move_aside found without a readable run key);
* the frame-cache entry a consulted clone's frame cache manifest names, and every entry while any
  training runs (it may be reading it); other entries are rebuildable and are deleted;
* ``wandb/``, the registry ``repos/`` and anything the pipeline did not make.

Nothing is deleted without ``yes``. Each deletion takes the entry's lock without waiting (a held lock
keeps the entry), renames the entry to ``.deleting-<name>-<pid>`` beside it while holding it, then
deletes the renamed directory; one an interrupted gc left is deleted by the next."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pipeline.checkpoint.store_refs import References, Revision, find_references, git_prefix
from vla_pipeline.checkpoint.store_usage import (
    DELETING,
    DELETING_PREFIX,
    FRAME_CACHE,
    FRAME_CACHE_MANIFEST,
    REGISTRY,
    REPOS_DIR,
    RUN,
    WANDB,
    EntryUsage,
    StoreUsage,
    format_size,
)
from vla_pipeline.errors import ConfigError
from vla_pipeline.store import file_lock

UNRESOLVED_SLACK_S = 3600.0  # clock and commit-time slack of the rule for unresolved revisions
DEFAULT_KEEP_RECENT_H = 72.0  # --keep-recent
DEFAULT_FRAME_CACHE_DIR = "artifacts/frame_cache"  # frame_cache.dir
RUN_LOCK_FILE = ".lock"  # RunPlace.lock: <run>/.lock, held by the training that writes the run
UNKNOWN_RUN = "unknown-run"  # run_place.move_aside's directory for checkpoints without a readable run key


@dataclass(frozen=True)
class Decision:
    entry: EntryUsage
    keep: bool
    why: str


@dataclass
class GcPlan:
    """Each store entry with keep/delete and why; ``unresolved``/``unverified``: the revisions gc could not
    tie to a run, or tied by their live params only."""

    decisions: list[Decision] = field(default_factory=list)
    unresolved: list[Revision] = field(default_factory=list)
    unverified: list[Revision] = field(default_factory=list)

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


@dataclass
class GcRules:
    """What besides the references decides: ``keep_recent_s`` (runs modified more recently are kept),
    ``complete`` (every registered clone was consulted), ``frame_entries`` (the consulted clones' frame
    caches), ``now``."""

    keep_recent_s: float = DEFAULT_KEEP_RECENT_H * 3600
    complete: bool = True
    frame_entries: set[str] = field(default_factory=set)
    now: float = field(default_factory=time.time)


@dataclass
class Consulted:
    """The references of every consulted clone, their frame-cache entries, one line per clone for the
    user, and whether every registered clone that exists was consulted."""

    refs: References
    rules: GcRules
    lines: list[str] = field(default_factory=list)


def registry_file(store: Path, repo: Path) -> Path:
    path = str(Path(repo).resolve())
    return Path(store) / REPOS_DIR / (hashlib.sha256(path.encode()).hexdigest() + ".json")


def register_repo(store: Path, repo: Path) -> str | None:
    """Record ``repo`` in the store's registry (what other clones' gc consults); a warning line if it failed."""
    target = registry_file(store, repo)
    try:
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(Path(repo).resolve()), "registered": time.time()}))
        os.replace(tmp, target)
    except OSError as e:
        return (f"could not register {Path(repo).resolve()} in {target.parent} ({e}): another clone's gc will not "
                f"know this one; make the store writable")
    return None


def registered_repos(store: Path) -> list[tuple[Path | None, Path]]:
    """(repository path, or None when unreadable; its registry file) of every registered clone."""
    found = []
    for source in sorted((Path(store) / REPOS_DIR).glob("*.json")):
        try:
            path = json.loads(source.read_text())["path"]
            found.append((Path(str(path)), source))
        except (OSError, ValueError, KeyError, TypeError):
            found.append((None, source))
    return found


def consult_repos(store: Path, repo: Path, keep_recent_h: float = DEFAULT_KEEP_RECENT_H) -> Consulted:
    """The references of ``repo`` (a ConfigError if it cannot be read) and of every other registered clone."""
    repo = Path(repo).resolve()
    refs = find_references(repo)
    consulted = Consulted(refs, GcRules(keep_recent_s=keep_recent_h * 3600))
    consulted.lines.append(f"consulted {repo} (this repository): {refs.revisions} revisions")
    if not refs.git:
        consulted.lines.append(f"{repo} is not a git repository: only its workspace's dvc.lock and outputs were "
                               f"consulted, no commit or experiment")
    for other, source in registered_repos(store):
        if other != repo:
            consulted.lines.append(consult_other(other, source, consulted))
    entries = [workspace_frame_cache_entry(r) for r in [repo, *(o for o, _ in registered_repos(store) if o)]]
    consulted.rules.frame_entries = {e for e in entries if e}
    return consulted


def consult_other(other: Path | None, source: Path, consulted: Consulted) -> str:
    """Merge one registered clone's references into ``consulted``; the line that says what happened."""
    if other is None:
        consulted.rules.complete = False
        return (f"could not read the registration {source}: no unreferenced run is deleted; delete that file if "
                f"its clone no longer uses this store")
    if not other.is_dir():
        return f"skipped {other}: registered ({source}) but it no longer exists"
    try:
        if git_prefix(other) is None:
            return f"skipped {other}: registered ({source}) but no longer a git repository"
        refs = find_references(other)
    except (ConfigError, OSError) as e:
        consulted.rules.complete = False
        return (f"could not consult {other}: {e}. No unreferenced run is deleted until it can be (or delete "
                f"{source} if that clone no longer uses this store)")
    consulted.refs.merge(refs, str(other))
    return f"consulted {other} (registered clone): {refs.revisions} revisions"


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


def decide_run(entry: EntryUsage, refs: References, rules: GcRules, locked: bool,
               unresolved_until: float | None) -> Decision:
    """Keep or delete one run directory, and why (the rules of this module's docstring)."""
    if entry.name == UNKNOWN_RUN:
        return Decision(entry, True, "checkpoints moved aside without a readable run key; never deleted by gc")
    if entry.name in refs.runs:
        return Decision(entry, True, f"referenced by {label_list(refs.runs[entry.name])}")
    if locked:
        return Decision(entry, True, f"a running training holds {entry.path / RUN_LOCK_FILE}")
    if unresolved_until is not None and (entry.oldest is None or entry.oldest <= unresolved_until):
        return Decision(entry, True, "may be what an unresolved or unverified dvc.lock references (begun before "
                                     "it was committed)")
    if entry.newest is None or entry.newest >= rules.now - rules.keep_recent_s:
        return Decision(entry, True, f"modified within the last {rules.keep_recent_s / 3600:g} h (--keep-recent): "
                                     f"a clone unknown to gc or an uncommitted experiment may use it")
    if not rules.complete:
        return Decision(entry, True, "not every registered clone could be consulted (see above)")
    return Decision(entry, False, "referenced by no dvc.lock of the consulted clones")


def decide_frame_cache(entry: EntryUsage, rules: GcRules, training: bool) -> Decision:
    if entry.name in rules.frame_entries:
        return Decision(entry, True, "a consulted clone's frame cache manifest names it")
    if training:
        return Decision(entry, True, "a training is running and may read it")
    if is_locked(*entry_lock(entry)):
        return Decision(entry, True, "being built (its lock is held)")
    if not rules.complete:
        return Decision(entry, True, "not every registered clone could be consulted (see above)")
    return Decision(entry, False, "no consulted clone's; rebuildable from the dataset (`dvc repro frame_cache`)")


OTHER_WHY = {WANDB: "never deleted by gc", REGISTRY: "the clones that ran `vla store` (gc consults them)",
             DELETING: "left by an interrupted gc"}


def plan_gc(usage: StoreUsage, refs: References, rules: GcRules) -> GcPlan:
    """Keep or delete every entry of ``usage`` (scanned by ``compute_store_usage``) given what ``refs``
    (``consult_repos``) references and ``rules``; nothing is deleted here."""
    dates = [r.date for r in [*refs.unresolved, *refs.unverified]]
    unresolved_until = None if not dates else float("inf") if None in dates else max(dates) + UNRESOLVED_SLACK_S
    plan = GcPlan(unresolved=list(refs.unresolved), unverified=list(refs.unverified))
    locked = {e.path: is_locked(e.path / RUN_LOCK_FILE, f"training run {e.name}") for e in usage.entries
              if e.kind == RUN}
    training = any(locked.values())  # whether the run is referenced or not
    for entry in usage.entries:
        if entry.kind == RUN:
            plan.decisions.append(decide_run(entry, refs, rules, locked[entry.path], unresolved_until))
        elif entry.kind == FRAME_CACHE:
            plan.decisions.append(decide_frame_cache(entry, rules, training))
        else:
            plan.decisions.append(Decision(entry, entry.kind != DELETING,
                                           OTHER_WHY.get(entry.kind, "not made by the pipeline; left alone")))
    return plan


def entry_lock(entry: EntryUsage) -> tuple[Path, str]:
    """The lock file that guards ``entry`` and what its holder does: a run's ``.lock`` (its training), a
    frame-cache entry's ``<entry>.lock`` (its build; also for the ``<entry>.tmp`` a build is filling)."""
    if entry.kind == RUN:
        return entry.path / RUN_LOCK_FILE, f"training run {entry.name} in {entry.path}"
    name = entry.name.removesuffix(".tmp")
    return entry.path.with_name(name + ".lock"), f"building the frame cache {entry.path.with_name(name)}"


def delete_planned(plan: GcPlan, echo: Callable[[str], None] = print) -> int:
    """Delete the entries ``plan`` marks, printing each path as it goes; an entry whose lock is held now is
    kept, one that cannot be deleted is reported and the others go on. Returns the bytes freed (what the
    entries held, less what is also linked from outside the store)."""
    freed = 0
    for decision in plan.to_delete:
        entry = decision.entry
        try:
            freed += delete_entry(entry, echo)
        except OSError as e:
            echo(f"could not delete {entry.path}: {e}; it is left in place (the next `vla store gc --yes` tries "
                 f"again); continuing with the others")
    return freed


def delete_entry(entry: EntryUsage, echo: Callable[[str], None]) -> int:
    """Under the entry's lock (not waited for), rename it to ``.deleting-<name>-<pid>`` beside it (atomic, same
    file system), release the lock, then delete the renamed directory. Returns the bytes freed."""
    doomed = entry.path
    if entry.kind != DELETING:
        if not entry.path.exists():
            return 0
        lock, what = entry_lock(entry)
        doomed = entry.path.with_name(f"{DELETING_PREFIX}{entry.name}-{os.getpid()}")
        try:
            with file_lock(lock, what, wait=False):
                os.rename(entry.path, doomed)
        except ConfigError:
            echo(f"kept {entry.path}: another process took {lock} meanwhile ({what})")
            return 0
    echo(f"deleting {entry.path} ({format_size(entry.bytes)})")
    shutil.rmtree(doomed)
    return entry.bytes - entry.shared
