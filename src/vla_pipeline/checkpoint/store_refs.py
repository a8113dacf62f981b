"""Which runs of the store a repository still references: read from every ``dvc.lock`` that git holds
(every commit reachable from a branch, a tag or a DVC experiment ref, ``git log --all``) and from the
workspace's own, so that ``vla store gc`` deletes only what no revision can check out again.

A ``dvc.lock`` records the train stage's output (``train.out_dir``, ``artifacts/train``) as the md5 of a
``.dir`` object in the DVC cache: a JSON list of ``{"md5", "relpath"}``. Its entries
``checkpoints/<step>/training_state/run_state.json`` lead to cache files holding the run key, and the
run's directory is ``<store>/runs/<run key[:16]>``. When the cache lacks either object (a fresh clone,
after ``dvc gc``), the revision's ``<train.live_dir>/params.yaml`` (dvclive's params, tracked by git)
names the run key. A revision resolved by neither is *unresolved*: the caller keeps conservatively.
Each distinct ``dvc.lock`` blob is parsed once, so hundreds of commits stay fast."""

from __future__ import annotations

import configparser
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_pipeline.checkpoint.layout import CHECKPOINTS_DIR, RUN_STATE_FILE, TRAINING_STATE_DIR
from vla_pipeline.errors import ConfigError
from vla_pipeline.store import RUN_KEY_CHARS

LOCK_FILE = "dvc.lock"
TRAIN_STAGE = "train"
DEFAULT_OUT_DIR = "artifacts/train"  # train.out_dir, when a dvc.lock does not record it
DEFAULT_LIVE_DIR = "artifacts/train_live"  # train.live_dir
LIVE_PARAMS_FILE = "params.yaml"  # dvclive's params in train.live_dir: has run_key
WORKSPACE = "workspace"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~6x faster on a 1,600-line dvc.lock


@dataclass(frozen=True)
class Revision:
    """A commit (``rev`` its sha, ``date`` its committer time in epoch seconds) or the workspace
    (``rev`` ``"workspace"``, ``date`` None); ``label`` names it for the user."""

    rev: str
    label: str
    date: float | None = None


@dataclass
class References:
    """``runs``: run directory name (``run key[:16]``) -> labels of the revisions whose dvc.lock (or, for the
    workspace, whose ``artifacts/train``) references it. ``unresolved``: revisions whose dvc.lock has a train
    output that neither the DVC cache nor the git-tracked live params could tie to a run."""

    runs: dict[str, list[str]] = field(default_factory=dict)
    unresolved: list[Revision] = field(default_factory=list)
    revisions: int = 0  # revisions that have a dvc.lock

    def add(self, keys: set[str], label: str) -> None:
        for key in sorted(keys):
            self.runs.setdefault(key[:RUN_KEY_CHARS], []).append(label)


def git(repo: Path, *args: str, stdin: str | None = None) -> str | None:
    """``git -C repo args`` 's stdout, or None when ``repo`` is not a git repository (or git is missing)."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                              check=False)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def list_revisions(repo: Path) -> list[Revision]:
    """Every commit reachable from any ref (branches, tags, ``refs/exps/...`` of ``dvc exp``), newest first,
    labelled by the ref whose tip it is (``exp <name>``, ``branch <name>``, ``tag <name>``), else its sha."""
    out = git(repo, "log", "--all", "--format=%H %ct")
    if out is None:
        return []
    tips: dict[str, str] = {}
    for line in (git(repo, "for-each-ref", "--format=%(objectname) %(refname)") or "").splitlines():
        sha, _, ref = line.partition(" ")
        kind = ("exp" if ref.startswith("refs/exps/") else "branch" if ref.startswith("refs/heads/")
                else "tag" if ref.startswith("refs/tags/") else None)
        if kind is not None and sha not in tips:
            tips[sha] = f"{kind} {ref.rsplit('/', 1)[-1]} ({sha[:9]})"
    revisions = []
    for line in out.splitlines():
        sha, _, date = line.partition(" ")
        revisions.append(Revision(sha, tips.get(sha, f"commit {sha[:9]}"), float(date)))
    return revisions


def blob_ids(repo: Path, revs: list[str], path: str) -> dict[str, str | None]:
    """``rev`` -> the blob id of ``path`` at that revision (None where it has none), in one git process."""
    if not revs:
        return {}
    out = git(repo, "cat-file", "--batch-check", stdin="".join(f"{rev}:{path}\n" for rev in revs)) or ""
    lines = out.splitlines()  # one per input line: "<sha> blob <size>", or "<rev>:<path> missing"
    lines += [""] * (len(revs) - len(lines))
    return {rev: (parts[0] if len(parts) == 3 and parts[1] == "blob" else None)
            for rev, parts in zip(revs, (line.split() for line in lines[:len(revs)]), strict=True)}


def read_blob(repo: Path, blob: str) -> str:
    return git(repo, "cat-file", "blob", blob) or ""


class DvcCache:
    """Read-only access to the objects of a repository's DVC cache (``.dvc/cache/files/md5/ab/cdef...``, the
    layout of DVC 3; ``.dvc/cache/ab/cdef...`` of DVC 2), honouring ``cache.dir`` in ``.dvc/config[.local]``."""

    def __init__(self, repo: Path):
        dvc_dir = Path(repo) / ".dvc"
        root = dvc_dir / "cache"
        for name in ("config", "config.local"):
            parser = configparser.ConfigParser()
            try:
                parser.read(dvc_dir / name)
                if parser.has_option("cache", "dir"):
                    root = (dvc_dir / parser.get("cache", "dir").strip("'\"")).resolve()
            except configparser.Error:
                pass
        self.root = root

    def read(self, md5: str, limit: int = 64 << 20) -> bytes | None:
        """The object ``md5`` (a ``.dir`` suffix allowed), or None when the cache does not hold it."""
        for path in (self.root / "files" / "md5" / md5[:2] / md5[2:], self.root / md5[:2] / md5[2:]):
            try:
                if path.is_file() and path.stat().st_size <= limit:
                    return path.read_bytes()
            except OSError:
                return None
        return None


def train_stage(lock_text: str, where: str) -> dict | None:
    """The ``train`` stage of a dvc.lock's text (None when it has none); a malformed file is refused."""
    try:
        doc = yaml.load(lock_text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML ({str(e).splitlines()[0]}); restore it with git") from None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    stage = stages.get(TRAIN_STAGE) if isinstance(stages, dict) else None
    return stage if isinstance(stage, dict) else None


def train_dirs(stage: dict) -> tuple[str, str]:
    """(``train.out_dir``, ``train.live_dir``) as the stage's params recorded them, else the defaults."""
    params = (stage.get("params") or {}).get("params.yaml") or {}
    train = params.get("train") if isinstance(params.get("train"), dict) else {}
    out_dir = train.get("out_dir") or params.get("train.out_dir") or DEFAULT_OUT_DIR
    live_dir = train.get("live_dir") or params.get("train.live_dir") or DEFAULT_LIVE_DIR
    return str(out_dir).rstrip("/"), str(live_dir).rstrip("/")


def run_keys_from_cache(stage: dict, cache: DvcCache) -> set[str] | None:
    """The run keys of the train output's checkpoints, read through the DVC cache; an empty set when the
    stage records no directory output (never ran); None when the cache lacks an object it needs."""
    out_dir, _ = train_dirs(stage)
    outs = [o for o in stage.get("outs") or [] if isinstance(o, dict) and str(o.get("md5", "")).endswith(".dir")]
    chosen = [o for o in outs if str(o.get("path", "")).rstrip("/") == out_dir] or outs
    keys: set[str] = set()
    for out in chosen:
        listing = cache.read(str(out["md5"]))
        if listing is None:
            return None
        try:
            entries = json.loads(listing)
        except ValueError:
            return None
        for entry in entries:
            parts = str(entry.get("relpath", "")).split("/")
            if len(parts) == 4 and parts[0] == CHECKPOINTS_DIR and parts[2:] == [TRAINING_STATE_DIR, RUN_STATE_FILE]:
                key = _key_of(cache.read(str(entry.get("md5", ""))))
                if key is None:
                    return None
                keys.add(key)
    return keys


def _key_of(data: bytes | str | None, yaml_text: bool = False) -> str | None:
    """The ``run_key`` in a run_state.json (or, ``yaml_text``, dvclive's params.yaml), if it is a sha256 hex."""
    if data is None:
        return None
    try:
        doc = yaml.load(data, Loader=_LOADER) if yaml_text else json.loads(data)
    except (ValueError, yaml.YAMLError):
        return None
    key = doc.get("run_key") if isinstance(doc, dict) else None
    return key if isinstance(key, str) and len(key) >= RUN_KEY_CHARS and all(c in "0123456789abcdef" for c in key) else None


def find_references(repo: Path) -> References:
    """The runs that the dvc.lock of every revision (``git log --all`` and the workspace) references, plus the
    run that the workspace's train output and live params name now. Refused when ``repo`` has no dvc.lock
    (not the pipeline's repository: nothing could be told apart)."""
    repo = Path(repo)
    if not (repo / LOCK_FILE).is_file():
        raise ConfigError(f"no {LOCK_FILE} in {repo.resolve()}: the store's runs are kept by what dvc.lock files "
                          f"reference; run this in the pipeline's repository, or pass --repo DIR")
    cache, refs = DvcCache(repo), References()
    parsed: dict[str, tuple[dict | None, set[str] | None]] = {}  # dvc.lock blob -> (train stage, its run keys)
    pending: list[tuple[Revision, str]] = []  # (revision, its live_dir): the cache could not tell
    revisions = list_revisions(repo)
    locks = blob_ids(repo, [r.rev for r in revisions], LOCK_FILE)
    for revision in revisions:
        blob = locks[revision.rev]
        if blob is None:
            continue
        if blob not in parsed:
            stage = train_stage(read_blob(repo, blob), f"{LOCK_FILE} at {revision.label}")
            parsed[blob] = (stage, None if stage is None else run_keys_from_cache(stage, cache))
        refs.revisions += 1
        stage, keys = parsed[blob]
        if keys is not None:
            refs.add(keys, f"dvc.lock of {revision.label}")
        elif stage is not None:
            pending.append((revision, train_dirs(stage)[1]))
    _resolve_from_live_params(repo, pending, refs)
    _add_workspace(repo, cache, refs)
    return refs


def _resolve_from_live_params(repo: Path, pending: list[tuple[Revision, str]], refs: References) -> None:
    """The revisions the DVC cache could not resolve, by their git-tracked ``<live_dir>/params.yaml``."""
    keys_of_blob: dict[str, str | None] = {}
    for live_dir in sorted({live for _, live in pending}):
        group = [revision for revision, live in pending if live == live_dir]
        blobs = blob_ids(repo, [r.rev for r in group], f"{live_dir}/{LIVE_PARAMS_FILE}")
        for revision in group:
            blob = blobs[revision.rev]
            if blob is not None and blob not in keys_of_blob:
                keys_of_blob[blob] = _key_of(read_blob(repo, blob), yaml_text=True)
            key = keys_of_blob.get(blob) if blob is not None else None
            if key is None:
                refs.unresolved.append(revision)
            else:
                refs.add({key}, f"dvc.lock of {revision.label}")


def _add_workspace(repo: Path, cache: DvcCache, refs: References) -> None:
    """The workspace's dvc.lock (committed or not), the checkpoints its train output holds now and the run key
    of its live params: all three kept, whichever the user checks out or resumes next."""
    stage = train_stage((repo / LOCK_FILE).read_text(), str(repo / LOCK_FILE))
    out_dir, live_dir = train_dirs(stage) if stage is not None else (DEFAULT_OUT_DIR, DEFAULT_LIVE_DIR)
    refs.revisions += 1
    keys = run_keys_from_cache(stage, cache) if stage is not None else set()
    live_key = _read_key(repo / live_dir / LIVE_PARAMS_FILE, yaml_text=True)
    if keys is None and live_key is None:
        refs.unresolved.append(Revision(WORKSPACE, f"the {WORKSPACE} ({repo / LOCK_FILE})",
                                        (repo / LOCK_FILE).stat().st_mtime))
    refs.add(keys or set(), f"dvc.lock of the {WORKSPACE}")
    refs.add({live_key} if live_key else set(), f"{WORKSPACE} {live_dir}")
    states = (repo / out_dir / CHECKPOINTS_DIR).glob(f"*/{TRAINING_STATE_DIR}/{RUN_STATE_FILE}")
    refs.add({k for k in (_read_key(p) for p in states) if k}, f"{WORKSPACE} {out_dir}")


def _read_key(path: Path, yaml_text: bool = False) -> str | None:
    try:
        return _key_of(path.read_text(), yaml_text) if path.is_file() else None
    except OSError:
        return None
