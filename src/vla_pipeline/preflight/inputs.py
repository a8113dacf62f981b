"""What the run reads: the dataset root, the pretrained weights and the tokenizer, local or in the
Hugging Face cache (or reachable when ``HF_HUB_OFFLINE`` allows), with the weights' size and sha256."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vla_pipeline.data.tables import camera_keys, format_no_camera, load_info
from vla_pipeline.preflight.report import Check
from vla_pipeline.provenance import sha256_file

HUB = ("huggingface.co", 443)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def check_dataset(root: Path) -> list[Check]:
    """The dataset is there, and has a camera stream (the one message for a dataset without one)."""
    if not (Path(root) / "meta" / "info.json").is_file():
        return [Check("inputs", "dataset", "fail", f"{root}: no meta/info.json",
                      "check dataset.root (`dvc pull` or `dvc checkout` it in a fresh clone)")]
    try:
        cameras = camera_keys(load_info(root))
    except (OSError, ValueError) as e:
        return [Check("inputs", "dataset", "fail", f"{root}/meta/info.json cannot be read ({type(e).__name__}: {e})",
                      "run `vla validate` on it: it names what is wrong")]
    if not cameras:
        return [Check("inputs", "dataset", "fail", format_no_camera(root))]
    return [Check("inputs", "dataset", "pass", f"{root}: present, cameras {cameras}")]


def _hub_source(kind: str, repo_id: str, filenames: tuple[str, ...], fix: str) -> Check:
    for filename in filenames:
        path = cached_hub_file(repo_id, filename)
        if path is not None:
            return Check("inputs", kind, "pass", f"{repo_id}: in the local cache ({path})")
    if offline():
        return Check("inputs", kind, "fail", f"{repo_id}: not in the local cache, HF_HUB_OFFLINE is set", fix)
    if not reachable(HUB):
        return Check("inputs", kind, "fail", f"{repo_id}: not in the local cache and {HUB[0]} is unreachable", fix)
    return Check("inputs", kind, "warn", f"{repo_id}: not cached; will be downloaded (HF_TOKEN "
                 f"{'set' if os.environ.get('HF_TOKEN') else 'not set'})",
                 "download it ahead (`huggingface-cli download " + repo_id + "`) so the run does not wait on the hub")


def check_pretrained(source: str | None) -> list[Check]:
    if not source:
        return [Check("inputs", "pretrained", "pass", "none: random init (policy.pretrained is null)")]
    path = Path(source).expanduser()
    if path.exists():
        files = [path] if path.is_file() else [p for p in (path / "model.safetensors",
                                                           path / "pretrained_model" / "model.safetensors") if p.is_file()]
        if not files:
            return [Check("inputs", "pretrained", "fail", f"{path}: no model.safetensors",
                          "point policy.pretrained at a checkpoint's pretrained_model dir or its model.safetensors")]
        f = files[0]
        return [Check("inputs", "pretrained", "pass",
                      f"{f}: {f.stat().st_size / 2**20:.1f} MiB, sha256 {sha256_file(f)[:16]}...")]
    return [_hub_source("pretrained", source, ("model.safetensors",),
                        f"`huggingface-cli download {source}` where the hub is reachable, then HF_HUB_OFFLINE=1")]


def check_tokenizer(name: str) -> list[Check]:
    if name == "local":
        return [Check("inputs", "tokenizer", "pass", "local: the project's offline tokenizer (tiny model)")]
    path = Path(name).expanduser()
    if path.exists():
        ok = any((path / f).is_file() for f in TOKENIZER_FILES)
        return [Check("inputs", "tokenizer", "pass" if ok else "fail",
                      f"{path}: {'tokenizer files present' if ok else 'none of ' + ', '.join(TOKENIZER_FILES)}",
                      "" if ok else "point policy.tokenizer at a saved tokenizer directory or a hub id")]
    return [_hub_source("tokenizer", name, TOKENIZER_FILES,
                        f"`huggingface-cli download {name}` (the PaliGemma tokenizer needs the license accepted "
                        f"and HF_TOKEN), then HF_HUB_OFFLINE=1")]
