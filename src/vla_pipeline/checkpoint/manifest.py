"""A checkpoint's manifest (``manifest.json``: the size and sha256 of every file), what verification
demands of a checkpoint before anything of it is loaded, and the checkpoint id.

A checkpoint verifies when its manifest is a well-formed object of ``"relative/path": {"size": <int>,
"sha256": <64 hex digits>}`` (no ``..``, no absolute path; at most ``MAX_MANIFEST_BYTES``), every file of
the directory is listed (a file added after the save is refused by name), nothing in it is a symbolic
link (a link could load a file from outside), each file has its size and sha256, a step directory's
``pretrained_model/manifest.json`` lists exactly the step manifest's ``pretrained_model/`` files, and the
processor configs hold only allow-listed LeRobot steps (:mod:`.processor_steps`). The manifest is not
signed: it tells a damaged or altered checkpoint from the one that was saved, not who saved it."""


from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection
from pathlib import Path

from vla_pipeline.checkpoint.layout import (
    CHECKPOINT_MANIFEST_FILE,
    PRETRAINED_DIR,
    read_small_file,
    write_atomic,
)
from vla_pipeline.checkpoint.processor_steps import PROCESSOR_CONFIG_FILES, read_processor_config
from vla_pipeline.errors import CheckpointError
from vla_pipeline.phases import timed
from vla_pipeline.provenance import sha256_file

MAX_MANIFEST_BYTES = 4 << 20  # ours are a few KiB; 4 MiB lists tens of thousands of files
INNER_MANIFEST = f"{PRETRAINED_DIR}/{CHECKPOINT_MANIFEST_FILE}"
_SHA256 = re.compile(r"[0-9a-f]{64}")
DAMAGED = ("The checkpoint was damaged after it was saved (disk, copy or edit); restore it (`dvc checkout "
           "artifacts/train`, or copy it again) or pick another checkpoint")
NOT_AS_SAVED = "A checkpoint loads only as it was saved; restore it (or copy it again) or pick another checkpoint"
ENTRY_FORMAT = '{"size": <bytes>, "sha256": <64 hex digits>}'


class VerificationError(Exception):
    """Why a checkpoint does not verify, and what the user can do (``advice``)."""

    def __init__(self, message: str, advice: str = DAMAGED):
        super().__init__(message)
        self.advice = advice


def write_manifest(directory: Path) -> None:
    """Size and sha256 of every file; written last, so a checkpoint without it is incomplete. A
    ``pretrained_model/`` inside gets its own manifest too (the same hashes), so the policy directory
    verifies on its own wherever it is copied."""
    directory = Path(directory)
    try:
        names = list_files(directory)
    except VerificationError as e:
        raise CheckpointError(f"cannot write the manifest of {directory}: {e}") from None
    with timed("hashing", f"checkpoint manifest of {directory}"):
        manifest = {name: _hash_entry(directory / name) for name in names if name != INNER_MANIFEST}
    inner = directory / PRETRAINED_DIR
    if inner.is_dir():
        prefix = f"{PRETRAINED_DIR}/"
        sub = {name[len(prefix):]: entry for name, entry in manifest.items() if name.startswith(prefix)}
        write_atomic(inner / CHECKPOINT_MANIFEST_FILE, json.dumps(sub, indent=1))
        manifest[INNER_MANIFEST] = _hash_entry(inner / CHECKPOINT_MANIFEST_FILE)
    write_atomic(directory / CHECKPOINT_MANIFEST_FILE, json.dumps(dict(sorted(manifest.items())), indent=1))


def _hash_entry(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def list_files(directory: Path) -> list[str]:
    """Every file under ``directory`` (relative POSIX paths, sorted), its own manifest aside. A symbolic
    link (to a file or a directory) or anything but a regular file or a directory is refused."""
    found, pending = [], [(Path(directory), "")]
    while pending:
        here, prefix = pending.pop()
        with os.scandir(here) as entries:
            for entry in entries:
                path, rel = Path(entry.path), f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise VerificationError(
                        f"{path} is a symbolic link (to {os.readlink(path)}): a checkpoint holds regular files only",
                        "Replace the link by a copy of its file (`cp -rL` copies a checkpoint without links; DVC: "
                        "`dvc config cache.type reflink,hardlink,copy` and `dvc checkout --relink`)")
                if entry.is_dir(follow_symlinks=False):
                    pending.append((path, f"{rel}/"))
                elif entry.is_file(follow_symlinks=False):
                    found.append(rel)
                else:
                    raise VerificationError(f"{path} is neither a regular file nor a directory", NOT_AS_SAVED)
    return sorted(name for name in found if name != CHECKPOINT_MANIFEST_FILE)


def read_manifest(directory: Path) -> dict[str, dict]:
    """The manifest of ``directory``, refused unless it has the one shape a manifest has."""
    path = Path(directory) / CHECKPOINT_MANIFEST_FILE
    if not path.is_file() and not path.is_symlink():
        raise VerificationError(f"{directory} has no {CHECKPOINT_MANIFEST_FILE} (a save that did not finish)")
    try:
        doc = json.loads(read_small_file(path, MAX_MANIFEST_BYTES))
    except CheckpointError as e:
        raise VerificationError(str(e), NOT_AS_SAVED) from None
    except (ValueError, RecursionError):
        raise VerificationError(f"{path} is not valid JSON") from None
    if not isinstance(doc, dict):
        why = f"a JSON {type(doc).__name__}, not an object of file -> {ENTRY_FORMAT}"
        raise VerificationError(f"{path} is not a manifest: {why}", NOT_AS_SAVED)
    for name, entry in doc.items():
        why = _name_problem(name) or _entry_problem(entry)
        if why is not None:
            raise VerificationError(f"{path} is not a manifest: its entry {_short(name)} {why}", NOT_AS_SAVED)
    return doc


def _name_problem(name: str) -> str | None:
    parts = name.split("/")
    if name.startswith("/") or any(c in name for c in "\\\0") or any(p in ("", ".", "..") for p in parts):
        return "is not a relative path inside the checkpoint (no '..', no leading '/')"
    return "lists the manifest itself" if name == CHECKPOINT_MANIFEST_FILE else None


def _entry_problem(entry) -> str | None:
    if (not isinstance(entry, dict) or set(entry) != {"size", "sha256"} or type(entry["size"]) is not int
            or entry["size"] < 0 or not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"])):
        return f"is {_short(entry)}, not {ENTRY_FORMAT}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:197]}..."


def verify_files(directory: Path, not_read: Collection[str] = ()) -> dict[str, dict]:
    """The manifest of ``directory`` once every rule holds (module docstring); raises
    :class:`VerificationError`. ``not_read``: files the caller does not read, whose size is checked but not
    their sha256 (a loader that only needs the processors skips hashing the weights)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    names = set(list_files(directory))
    unlisted = sorted(names - manifest.keys())
    if unlisted:
        shown = ", ".join(str(directory / n) for n in unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise VerificationError(f"{shown} {'is' if len(unlisted) == 1 else 'are'} not in {directory / CHECKPOINT_MANIFEST_FILE}: "
                              f"added after the checkpoint was saved",
                              "Remove what was added, or save the checkpoint again; a checkpoint loads only the files "
                              "its manifest lists")
    for name, entry in manifest.items():
        path = directory / name
        if name not in names:
            raise VerificationError(f"{path} is missing")
        if path.stat().st_size != entry["size"]:
            raise VerificationError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['size']} (truncated?)")
    with timed("hashing", f"checkpoint verification of {directory}"):
        for name, entry in manifest.items():
            if name not in not_read and sha256_file(directory / name) != entry["sha256"]:
                raise VerificationError(f"{directory / name} does not match its sha256 in the manifest (corrupt)")
    _check_inner_manifest(directory, manifest)
    _check_processors(directory, manifest)
    return manifest


def _check_inner_manifest(directory: Path, manifest: dict[str, dict]) -> None:
    """A step directory's policy manifest lists what the step manifest lists under ``pretrained_model/``."""
    if INNER_MANIFEST not in manifest:
        return
    prefix = f"{PRETRAINED_DIR}/"
    expected = {n[len(prefix):]: e for n, e in manifest.items() if n.startswith(prefix) and n != INNER_MANIFEST}
    inner = read_manifest(directory / PRETRAINED_DIR)
    if inner != expected:
        differ = sorted(k for k in expected.keys() | inner.keys() if expected.get(k) != inner.get(k))
        raise VerificationError(f"{directory / INNER_MANIFEST} does not list what {directory / CHECKPOINT_MANIFEST_FILE} "
                              f"lists under {prefix} ({len(differ)} differ, e.g. {differ[:3]})", NOT_AS_SAVED)


def _check_processors(directory: Path, manifest: dict[str, dict]) -> None:
    policy = f"{PRETRAINED_DIR}/" if any(n.startswith(f"{PRETRAINED_DIR}/") for n in manifest) else ""
    for name in PROCESSOR_CONFIG_FILES:
        if f"{policy}{name}" in manifest:
            try:
                read_processor_config(directory / policy / name)
            except CheckpointError as e:
                raise VerificationError(str(e), "Its processors are not ones this pipeline saves; pick another "
                                              "checkpoint") from None


def verify_checkpoint(directory: Path) -> str | None:
    """``None`` if the checkpoint verifies (module docstring); else what is wrong."""
    try:
        verify_files(directory)
    except VerificationError as e:
        return str(e)
    return None


def require_verified(directory: Path, use: str, not_read: Collection[str] = ()) -> dict[str, dict]:
    """The verified manifest of ``directory`` (:func:`verify_files`); a checkpoint that does not verify is
    refused, naming the file and what to do."""
    try:
        return verify_files(directory, not_read)
    except VerificationError as e:
        raise CheckpointError(f"refusing to {use}: {e}. {e.advice}") from None


def compute_files_id(files: dict[str, dict]) -> str:
    """sha256 over the lines ``<sha256>  <path>`` of ``files`` (verified manifest entries) sorted by path:
    what ``sha256sum`` prints for each file, hashed once more."""
    lines = "".join(f"{files[name]['sha256']}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()
