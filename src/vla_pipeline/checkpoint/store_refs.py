"""Which runs of the store a repository still references: read from every ``dvc.lock`` that git holds
(every commit reachable from a branch, a tag or a DVC experiment ref, ``git log --all``) and from the
workspace's own, so that ``vla store gc`` deletes only what no revision can check out again.

A ``dvc.lock`` records the train stage's output (``train.out_dir``, ``artifacts/train``) as the md5 of a
``.dir`` object in the DVC cache: a JSON list of ``{"md5", "relpath"}``. Its entries
``checkpoints/<step>/training_state/run_state.json`` lead to cache files holding the run key, and the
run's directory is ``<store>/runs/<run key[:16]>``. When the cache lacks either object (a fresh clone,
after ``dvc gc``), the revision's ``<train.live_dir>/params.yaml`` (dvclive's params, tracked by git)
names the run key, *unverified* (the live params are republished even by a train stage that then
failed). A revision resolved by neither, or whose ``.dir`` is there but incomplete or malformed, is
*unresolved*: the caller keeps conservatively. The train outputs and live params in DVC's temporary
experiment workspaces (``.dvc/tmp/exps/``: a ``dvc exp run --temp``/``--queue`` still evaluating) count
too. A DVC project in a subdirectory of the git repository reads ``<rev>:<prefix>dvc.lock``. When git
fails in a git repository the caller gets a ConfigError, never an empty history; a directory that is
not a git repository has the workspace alone (``References.git`` False).
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
    (``rev`` ``"workspace"``, ``date`` None); ``label`` names it for the user, ``why`` why it is unresolved."""

    rev: str
    label: str
    date: float | None = None
    why: str = ""


@dataclass
class References:
    """``runs``: run directory name (``run key[:16]``) -> labels of the revisions whose dvc.lock (or, for the
    workspace, whose ``artifacts/train``) references it. ``unresolved``: revisions whose dvc.lock has a train
    output that neither the DVC cache nor the git-tracked live params could tie to a run. ``unverified``:
    revisions tied to a run by their live params only (their run is referenced, and they count as
    unresolved for the caller's time rule). ``git``: False when ``repo`` is not a git repository."""

    runs: dict[str, list[str]] = field(default_factory=dict)
    unresolved: list[Revision] = field(default_factory=list)
    unverified: list[Revision] = field(default_factory=list)
    revisions: int = 0  # revisions that have a dvc.lock
    git: bool = True

    def merge(self, other: References, where: str) -> None:
        """Add ``other`` (another clone's references), its labels suffixed with ``where``."""
        for name, labels in other.runs.items():
            self.runs.setdefault(name, []).extend(f"{label} in {where}" for label in labels)
        self.unresolved += other.unresolved
        self.unverified += other.unverified
        self.revisions += other.revisions

    def add(self, keys: set[str], label: str) -> None:
        for key in sorted(keys):
            self.runs.setdefault(key[:RUN_KEY_CHARS], []).append(label)


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    """``git -C repo args`` 's stdout; a ConfigError with git's own message when git is missing or fails."""
    what = f"`git {' '.join(args[:2])}` in {Path(repo).resolve()}"
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                              check=False)
    except OSError as e:
        raise ConfigError(f"{what} could not run ({e}): install git or put it on PATH; gc cannot tell which runs "
                          f"the repository's history references without it") from None
    if done.returncode != 0:
        said = "; ".join(line.strip() for line in done.stderr.splitlines() if line.strip()) or f"exit {done.returncode}"
        raise ConfigError(f"{what} failed: {said}; fix the repository (for 'dubious ownership': `git config --global "
                          f"--add safe.directory {Path(repo).resolve()}`; for corruption: `git fsck`) and run again")
    return done.stdout


def git_prefix(repo: Path) -> str | None:
    """The DVC project's path inside its git repository (``git rev-parse --show-prefix``, ``""`` at its top),
    or None when ``repo`` is not in a git repository. Where a ``.git`` exists in ``repo`` or above it, a
    failing git is a ConfigError (never taken for "not a repository")."""
    repo = Path(repo).resolve()
    has_git = any((p / ".git").exists() for p in (repo, *repo.parents))
    try:
        return git(repo, "rev-parse", "--show-prefix").strip()
    except ConfigError:
        if has_git:
            raise
        return None


def list_revisions(repo: Path) -> list[Revision]:
    """Every commit reachable from any ref (branches, tags, ``refs/exps/...`` of ``dvc exp``), newest first,
    labelled by the ref whose tip it is (``exp <name>``, ``branch <name>``, ``tag <name>``), else its sha."""
    out = git(repo, "log", "--all", "--format=%H %ct")
    tips: dict[str, str] = {}
    for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines():
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
    out = git(repo, "cat-file", "--batch-check", stdin="".join(f"{rev}:{path}\n" for rev in revs))
    lines = out.splitlines()  # one per input line: "<sha> blob <size>", or "<rev>:<path> missing"
    lines += [""] * (len(revs) - len(lines))
    return {rev: (parts[0] if len(parts) == 3 and parts[1] == "blob" else None)
            for rev, parts in zip(revs, (line.split() for line in lines[:len(revs)]), strict=True)}


def read_blob(repo: Path, blob: str) -> str:
    return git(repo, "cat-file", "blob", blob)


def dvc_config_value(path: Path, section: str, option: str) -> str | None:
    """``option`` of ``[section]`` in a DVC config file, its quotes stripped (DVC writes ``dir = "../c"``,
    which configparser keeps); None when absent or unreadable."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        value = parser.get(section, option) if parser.has_option(section, option) else None
    except configparser.Error:
        return None
    return None if value is None else value.strip().strip("'\"").strip()


class DvcCache:
    """Read-only access to the objects of a repository's DVC cache (``.dvc/cache/files/md5/ab/cdef...``, the
    layout of DVC 3; ``.dvc/cache/ab/cdef...`` of DVC 2), honouring ``cache.dir`` in ``.dvc/config[.local]``."""

    def __init__(self, repo: Path):
        dvc_dir = Path(repo) / ".dvc"
        root = dvc_dir / "cache"
        for name in ("config", "config.local"):
            value = dvc_config_value(dvc_dir / name, "cache", "dir")
            if value:
                root = (dvc_dir / value).resolve()
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


ABSENT = "absent"  # the train output's .dir object is not in the DVC cache: the live params may tell


def run_keys_from_cache(stage: dict, cache: DvcCache) -> tuple[set[str] | None, str]:
    """(the run keys of the train output's checkpoints read through the DVC cache, ``""``); an empty set
    when the stage records no directory output (never ran). (None, ``ABSENT``) when the cache lacks the
    ``.dir`` object; (None, why) when the ``.dir`` is there but malformed or an object it lists is missing."""
    out_dir, _ = train_dirs(stage)
    outs = [o for o in stage.get("outs") or [] if isinstance(o, dict) and str(o.get("md5", "")).endswith(".dir")]
    chosen = [o for o in outs if str(o.get("path", "")).rstrip("/") == out_dir] or outs
    keys: set[str] = set()
    for out in chosen:
        listing = cache.read(str(out["md5"]))
        if listing is None:
            return None, ABSENT
        try:
            entries = json.loads(listing)
        except ValueError:
            entries = None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            return None, f"its train output's listing {out['md5']} in the DVC cache is malformed"
        for entry in entries:
            parts = str(entry.get("relpath", "")).split("/")
            if len(parts) == 4 and parts[0] == CHECKPOINTS_DIR and parts[2:] == [TRAINING_STATE_DIR, RUN_STATE_FILE]:
                key = _key_of(cache.read(str(entry.get("md5", ""))))
                if key is None:
                    return None, f"the DVC cache lacks (or cannot read) its {entry.get('relpath')}"
                keys.add(key)
    return keys, ""


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
    run that the workspace's train output and live params name now and those of DVC's temporary experiment
    workspaces. Refused when ``repo`` has no dvc.lock (not the pipeline's repository: nothing could be told
    apart), or when git fails in a git repository."""
    repo = Path(repo)
    if not (repo / LOCK_FILE).is_file():
        raise ConfigError(f"no {LOCK_FILE} in {repo.resolve()}: the store's runs are kept by what dvc.lock files "
                          f"reference; run this in the pipeline's repository, or pass --repo DIR")
    cache, refs, prefix = DvcCache(repo), References(), git_prefix(repo)
    refs.git = prefix is not None
    parsed: dict[str, tuple[dict | None, set[str] | None, str]] = {}  # dvc.lock blob -> (train stage, keys, why)
    pending: list[tuple[Revision, str]] = []  # (revision, its live_dir): the cache lacks its .dir
    revisions = list_revisions(repo) if prefix is not None else []
    locks = blob_ids(repo, [r.rev for r in revisions], f"{prefix}{LOCK_FILE}")
    for revision in revisions:
        blob = locks[revision.rev]
        if blob is None:
            continue
        if blob not in parsed:
            stage = train_stage(read_blob(repo, blob), f"{LOCK_FILE} at {revision.label}")
            parsed[blob] = (stage, *(run_keys_from_cache(stage, cache) if stage is not None else (set(), "")))
        refs.revisions += 1
        stage, keys, why = parsed[blob]
        if keys is not None:
            refs.add(keys, f"dvc.lock of {revision.label}")
        elif why == ABSENT:
            pending.append((revision, train_dirs(stage)[1]))
        else:
            refs.unresolved.append(Revision(revision.rev, revision.label, revision.date, why))
    _resolve_from_live_params(repo, prefix or "", pending, refs)
    _add_workspace(repo, cache, refs)
    _add_exp_workspaces(repo, prefix or "", refs)
    return refs


def _resolve_from_live_params(repo: Path, prefix: str, pending: list[tuple[Revision, str]], refs: References) -> None:
    """The revisions whose train output the DVC cache lacks, by their git-tracked ``<live_dir>/params.yaml``:
    their run is referenced, unverified (the revision also counts as unresolved for the time rule)."""
    keys_of_blob: dict[str, str | None] = {}
    for live_dir in sorted({live for _, live in pending}):
        group = [revision for revision, live in pending if live == live_dir]
        blobs = blob_ids(repo, [r.rev for r in group], f"{prefix}{live_dir}/{LIVE_PARAMS_FILE}")
        for revision in group:
            blob = blobs[revision.rev]
            if blob is not None and blob not in keys_of_blob:
                keys_of_blob[blob] = _key_of(read_blob(repo, blob), yaml_text=True)
            key = keys_of_blob.get(blob) if blob is not None else None
            if key is None:
                refs.unresolved.append(Revision(revision.rev, revision.label, revision.date,
                                                "neither the DVC cache nor its git-tracked live params name it"))
            else:
                refs.unverified.append(revision)
                refs.add({key}, f"dvc.lock of {revision.label} (from live params, unverified)")


def _add_workspace(repo: Path, cache: DvcCache, refs: References) -> None:
    """The workspace's dvc.lock (committed or not), the checkpoints its train output holds now and the run key
    of its live params: all three kept, whichever the user checks out or resumes next."""
    stage = train_stage((repo / LOCK_FILE).read_text(), str(repo / LOCK_FILE))
    out_dir, live_dir = train_dirs(stage) if stage is not None else (DEFAULT_OUT_DIR, DEFAULT_LIVE_DIR)
    refs.revisions += 1
    keys, why = run_keys_from_cache(stage, cache) if stage is not None else (set(), "")
    live_key = _read_key(repo / live_dir / LIVE_PARAMS_FILE, yaml_text=True)
    revision = Revision(WORKSPACE, f"the {WORKSPACE} ({repo / LOCK_FILE})", (repo / LOCK_FILE).stat().st_mtime)
    if keys is None and (why != ABSENT or live_key is None):
        refs.unresolved.append(Revision(revision.rev, revision.label, revision.date,
                                        why if why != ABSENT else "neither the DVC cache nor its live params name it"))
    elif keys is None:
        refs.unverified.append(revision)
    refs.add(keys or set(), f"dvc.lock of the {WORKSPACE}")
    refs.add({live_key} if live_key else set(), f"{WORKSPACE} {live_dir}")
    refs.add(_checkpoint_keys(repo / out_dir), f"{WORKSPACE} {out_dir}")


def _add_exp_workspaces(repo: Path, prefix: str, refs: References) -> None:
    """The run keys in DVC's temporary experiment workspaces (DVC 3: ``.dvc/tmp/exps/<tmp>`` for ``--queue``,
    ``.dvc/tmp/exps/standalone/<tmp>`` for ``--temp``; each a clone of the git repository, the DVC project
    at ``<prefix>`` in it): an experiment whose train released its lock but whose refs/exps DVC has not
    written yet (it still evaluates)."""
    exps = repo / ".dvc" / "tmp" / "exps"
    for workspace in sorted([*exps.glob("*/"), *exps.glob("standalone/*/")]):
        project = workspace / prefix
        if not (project / "params.yaml").is_file():
            continue
        out_dir, live_dir = _workspace_dirs(project)
        live_key = _read_key(project / live_dir / LIVE_PARAMS_FILE, yaml_text=True)
        label = f"dvc exp workspace {workspace.relative_to(repo)}"
        refs.add(_checkpoint_keys(project / out_dir) | ({live_key} if live_key else set()), label)


def _workspace_dirs(project: Path) -> tuple[str, str]:
    try:
        doc = yaml.load((project / "params.yaml").read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        doc = None
    train = doc.get("train") if isinstance(doc, dict) and isinstance(doc.get("train"), dict) else {}
    return (str(train.get("out_dir") or DEFAULT_OUT_DIR).rstrip("/"),
            str(train.get("live_dir") or DEFAULT_LIVE_DIR).rstrip("/"))


def _checkpoint_keys(out_dir: Path) -> set[str]:
    states = out_dir.glob(f"{CHECKPOINTS_DIR}/*/{TRAINING_STATE_DIR}/{RUN_STATE_FILE}")
    return {k for k in (_read_key(p) for p in states) if k}


def _read_key(path: Path, yaml_text: bool = False) -> str | None:
    try:
        return _key_of(path.read_text(), yaml_text) if path.is_file() else None
    except OSError:
        return None
