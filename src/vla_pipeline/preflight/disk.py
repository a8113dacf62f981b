"""Bytes the run will write, per place, counting every copy of a checkpoint: the store's retained
checkpoints, the best and last published into ``train.out_dir`` (the train stage's DVC output), DVC's
cache of that output, and the frame cache.

A checkpoint's bytes come from the builder's counts (``model.setup.compute_checkpoint_bytes``: what
``Trainer.save_model`` and ``save_state`` write for this setup). A published copy costs nothing where
``store.link_or_copy_tree`` can hard-link it (the store and ``out_dir`` on one filesystem), else a full
copy. DVC's cache costs nothing where its link type links (``hardlink``, ``symlink``) on the
filesystem of the output, else a copy; ``reflink`` (DVC's default, ``reflink,copy``) counts as a copy:
ext4 has none, and detecting support would mean trying it."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.data.tables import camera_keys, load_info
from vla_pipeline.model.setup import ParamCounts, compute_checkpoint_bytes
from vla_pipeline.preflight.resources import same_filesystem
from vla_pipeline.train.config import TrainConfig

DVC_LINK_TYPES = ("hardlink", "symlink")  # cache types that never copy a file's bytes
DVC_DEFAULT_TYPES = ("reflink", "copy")  # DVC's default when .dvc/config sets no [cache] type
GIB = 2**30


@dataclass(frozen=True)
class DvcCache:
    directory: Path  # where DVC keeps its cache
    types: tuple[str, ...]  # [cache] type, in the order DVC tries them

    @property
    def links(self) -> bool:
        return any(t in DVC_LINK_TYPES for t in self.types)


def read_dvc_cache(repo_root: Path) -> DvcCache | None:
    """The ``[cache]`` ``dir`` and ``type`` of ``repo_root/.dvc/config`` (``config.local`` overrides it,
    as in DVC); None outside a DVC repository. An unreadable config counts as DVC's defaults."""
    dvc = Path(repo_root) / ".dvc"
    if not dvc.is_dir():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read([dvc / "config", dvc / "config.local"])
    except configparser.Error:
        parser = configparser.ConfigParser(interpolation=None)
    cache = parser["cache"] if parser.has_section("cache") else {}
    unquoted = lambda key, default: cache.get(key, default).strip().strip("'\"")  # noqa: E731 (DVC quotes values)
    types = tuple(t.strip() for t in unquoted("type", ",".join(DVC_DEFAULT_TYPES)).split(",") if t.strip())
    directory = Path(unquoted("dir", "cache")).expanduser()
    return DvcCache(directory if directory.is_absolute() else dvc / directory, types)


def compute_retained(cfg: TrainConfig) -> int:
    """Checkpoints the run's directory holds at once: keep_last (every save when 0) + best + last + one
    being written."""
    return (cfg.keep_last if cfg.keep_last > 0 else max(cfg.steps // max(cfg.save_every, 1), 1)) + 3


def disk_needs(cfg: TrainConfig, counts: ParamCounts, repo_root: Path) -> dict[str, tuple[Path, int, str]]:
    """Bytes the run writes, per place: what -> (where, bytes, how they were counted). ``counts``: the
    policy ``make_policy`` builds for this run; ``repo_root``: the DVC repository the stage runs in."""
    per = compute_checkpoint_bytes(counts, cfg.policy_setup())
    retained = compute_retained(cfg)
    in_store = cfg.store is not None and cfg.runs_in_store
    runs = cfg.store / "runs" if in_store else cfg.out_dir
    each = f"{per / GIB:.2f} GiB per checkpoint"
    needs = {"checkpoints": (runs, per * retained, f"{retained} checkpoints (keep_last + best + last + one being "
                                                   f"written), {each}")}
    published = 2 if in_store else retained - 1  # out_dir: best and last; without a store, the run's own
    if in_store:
        linked = same_filesystem(runs, cfg.out_dir)
        needs["published checkpoints"] = (cfg.out_dir, 0 if linked else 2 * per,
                                          "best and last hard-linked from the store: no extra bytes" if linked else
                                          f"best and last copied from the store (another filesystem), {each}")
    dvc = read_dvc_cache(repo_root)
    if dvc is not None:
        linked = dvc.links and same_filesystem(dvc.directory, cfg.out_dir)
        needs["dvc cache"] = (dvc.directory, 0 if linked else published * per,
                              f"[cache] type {','.join(dvc.types)} links on one filesystem: no extra bytes" if linked
                              else f"{published} checkpoints copied into the cache ([cache] type {','.join(dvc.types)}"
                              f"{'' if dvc.links else ' makes copies'}), {each}")
    has_info = (Path(cfg.dataset_root) / "meta" / "info.json").is_file()  # else inputs/dataset fails
    if cfg.frame_cache_dir is not None and cfg.store is not None and has_info:
        from vla_pipeline.model.config import compute_image_resolution

        info = load_info(cfg.dataset_root)
        h, w = compute_image_resolution(cfg.policy)
        frames = int(info.get("total_frames", 0)) * len(camera_keys(info))
        needs["frame_cache"] = (cfg.store / "frame_cache", frames * 3 * h * w, f"{frames} uint8 frames at {h}x{w}")
    return needs
