"""What the store uses on disk (``vla store du``): per run directory, per frame-cache entry and for
``wandb/``, counting every inode once.

Checkpoint files are hard links: the store's run directory, the workspace's ``artifacts/train`` (when
DVC's checkout links) and ``.dvc/cache`` may all name the same inode, and summing file sizes would count
those bytes two or three times. Sizes here are **bytes on disk** (``st_blocks * 512``, what ``du``
reports: a sparse or partly written file counts what it occupies) of each ``(st_dev, st_ino)`` once.
A file whose ``st_nlink`` exceeds the links found inside the store is also linked from outside it
(``artifacts/train``, the DVC cache): deleting the store's copy does not free those bytes, and the
``shared`` column says how many they are. Directories' own blocks are not counted."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vla_pipeline.checkpoint.layout import CHECKPOINTS_DIR, RUN_STATE_FILE, SET_ASIDE_DIR, TRAINING_STATE_DIR
from vla_pipeline.errors import ConfigError
from vla_pipeline.store import FRAME_CACHE_DIR, RUNS_DIR, WANDB_DIR

#: data.frame_cache.FRAME_CACHE_MANIFEST_FILE, not imported from there (it imports torch and LeRobot)
FRAME_CACHE_MANIFEST = "manifest.json"
RUN, FRAME_CACHE, WANDB, OTHER, OUTSIDE = "run", "frame_cache", "wandb", "other", "outside"
DELETING, REGISTRY = "deleting", "registry"
DELETING_PREFIX = ".deleting-"  # runs/.deleting-<name>-<pid>: what gc renamed before deleting it
REPOS_DIR = "repos"  # <store>/repos/<sha256 of a repository's path>.json: the clones that ran `vla store`


@dataclass
class EntryUsage:
    """One row of ``vla store du``. ``bytes``: on disk, each inode once. ``shared``: for a store entry, the
    part of ``bytes`` also linked from outside the store (not freed by deleting the entry); for an
    ``outside`` row (a path given as ``also``), the part that is the store's own inodes (no extra space).
    ``checkpoints``/``set_aside``/``run_keys``: runs only (``run_keys`` from their run_state.json)."""

    kind: str
    name: str
    path: Path
    bytes: int = 0
    shared: int = 0
    files: int = 0
    newest: float | None = None
    oldest: float | None = None
    checkpoints: int | None = None
    set_aside: int | None = None
    run_keys: tuple[str, ...] = ()
    inodes: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict, repr=False)  # -> (bytes, nlink)


@dataclass
class StoreUsage:
    """Every entry of the store, the ``also`` paths, and ``total``: bytes on disk of all of them, each inode once."""

    store: Path
    entries: list[EntryUsage]
    outside: list[EntryUsage]
    total: int


def walk_files(root: Path) -> Iterator[os.stat_result]:
    """``lstat`` of every non-directory under ``root`` (symbolic links are not followed); ``root`` may be a file."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield st
        return
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for item in it:
                    if item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
                    else:
                        yield item.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while we walked (a checkpoint pruned by a running training)
            continue


def scan(entry: EntryUsage, links_seen: dict[tuple[int, int], int]) -> EntryUsage:
    """Fill ``entry``'s bytes, file count and times from its files; ``links_seen`` counts each inode's paths."""
    for st in walk_files(entry.path):
        inode = (st.st_dev, st.st_ino)
        links_seen[inode] = links_seen.get(inode, 0) + 1
        entry.files += 1
        if inode not in entry.inodes:
            entry.inodes[inode] = (st.st_blocks * 512, st.st_nlink)
            entry.bytes += st.st_blocks * 512
        entry.newest = st.st_mtime if entry.newest is None else max(entry.newest, st.st_mtime)
        entry.oldest = st.st_mtime if entry.oldest is None else min(entry.oldest, st.st_mtime)
    return entry


def describe_run(entry: EntryUsage) -> EntryUsage:
    """A run's checkpoint count (``checkpoints/<step>``), set-aside count (``set_aside/<when>/<step>``) and the
    run keys its run_state.json files record (normally one, whose first 16 digits are the directory's name)."""
    steps = [p for p in (entry.path / CHECKPOINTS_DIR).glob("*") if p.is_dir() and p.name.isdigit()]
    entry.checkpoints = len(steps)
    entry.set_aside = sum(1 for p in (entry.path / SET_ASIDE_DIR).glob("*/*") if p.is_dir())
    keys = set()
    for step in steps:
        try:
            keys.add(str(json.loads((step / TRAINING_STATE_DIR / RUN_STATE_FILE).read_text())["run_key"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    entry.run_keys = tuple(sorted(keys))
    return entry


def list_entries(store: Path) -> list[EntryUsage]:
    """The store's entries, unscanned: ``runs/<name>/``, ``frame_cache/<entry>/`` (its ``.lock`` files are not
    entries), a ``.deleting-*`` directory that an interrupted gc left in either, ``wandb/``, the registry
    ``repos/``, and anything else at the top as ``other`` (the pipeline did not make it)."""
    store = Path(store)
    if not store.is_dir():
        raise ConfigError(f"store {store} does not exist (or is not a directory): nothing to show or clean; check "
                          f"base.store in params.yaml, $VLA_STORE, or pass --store PATH")
    entries = []
    for top in sorted(store.iterdir()):
        if top.name in (RUNS_DIR, FRAME_CACHE_DIR) and top.is_dir() and not top.is_symlink():
            kind = RUN if top.name == RUNS_DIR else FRAME_CACHE
            entries += [EntryUsage(DELETING if p.name.startswith(DELETING_PREFIX) else kind, p.name, p)
                        for p in sorted(top.iterdir()) if p.is_dir() and not p.is_symlink()]
            entries += [EntryUsage(OTHER, f"{top.name}/{p.name}", p) for p in sorted(top.iterdir())
                        if not (p.is_dir() and not p.is_symlink()) and not p.name.endswith(".lock")]
        else:
            kind = WANDB if top.name == WANDB_DIR else REGISTRY if top.name == REPOS_DIR else OTHER
            entries.append(EntryUsage(kind, top.name, top))
    return entries


def compute_store_usage(store: Path, also: Iterable[Path] = ()) -> StoreUsage:
    """Bytes on disk per store entry and per ``also`` path (e.g. the workspace's ``artifacts/train`` and
    ``.dvc/cache``), each inode counted once per row and once in ``total``, with the part of each store entry
    also linked from outside the store. Refused when the store does not exist."""
    links_seen: dict[tuple[int, int], int] = {}
    entries = [scan(e, links_seen) for e in list_entries(store)]
    for entry in entries:
        entry.shared = sum(size for inode, (size, nlink) in entry.inodes.items() if nlink > links_seen[inode])
        if entry.kind == RUN:
            describe_run(entry)
    counted = {inode: size for e in entries for inode, (size, _) in e.inodes.items()}
    outside = []
    for path in also:
        row = scan(EntryUsage(OUTSIDE, str(path), Path(path)), {})
        row.shared = sum(size for inode, (size, _) in row.inodes.items() if inode in links_seen)
        counted.update((inode, size) for inode, (size, _) in row.inodes.items())
        outside.append(row)
    return StoreUsage(Path(store), entries, outside, sum(counted.values()))


def format_size(n: int) -> str:
    """``n`` bytes in binary units, as ``du -h`` writes them (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_time(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def format_usage(usage: StoreUsage, status: Callable[[EntryUsage], str]) -> list[str]:
    """The table of ``vla store du``: kind, name, size, shared, checkpoints, last modified and ``status(entry)``
    (whether it is referenced), the ``also`` rows, then the total."""
    header = ("kind", "name", "size", "shared", "ckpts", "last modified", "referenced")
    rows = [header]
    for e in usage.entries:
        ckpts = "-" if e.checkpoints is None else str(e.checkpoints) + (f"+{e.set_aside}" if e.set_aside else "")
        rows.append((e.kind, e.name, format_size(e.bytes), format_size(e.shared), ckpts, format_time(e.newest),
                     status(e)))
    for e in usage.outside:
        rows.append((e.kind, e.name, format_size(e.bytes), format_size(e.shared), "-", format_time(e.newest),
                     "outside the store"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    where = f"{usage.store} and the outside paths above" if usage.outside else str(usage.store)
    lines.append(f"total: {format_size(usage.total)} on disk in {where}, each file counted once")
    lines.append("shared: of a store entry, the bytes also linked from outside the store (deleting the entry does "
                 "not free them); of an outside path, the bytes that are the store's own files. ckpts: checkpoints"
                 "(+set aside)")
    return lines
