"""Preflight's disk accounting: every copy the run writes (the store's checkpoints, the published best
and last in train.out_dir, DVC's cache of it, the frame cache), each checkpoint as the builder counts
it, and a copy only where a link is impossible (another filesystem, or a DVC cache type that copies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_pipeline.model.setup import compute_checkpoint_bytes
from vla_pipeline.preflight import resources
from vla_pipeline.preflight.disk import compute_retained, disk_needs, read_dvc_cache
from vla_pipeline.preflight.run import count_parameters
from vla_pipeline.train.config import make_peft

from conftest import make_train_config

OTHER_FS = Path("/dev/shm")  # tmpfs: another filesystem than the tests' tmp directory


def dvc_repo(root: Path, cache_type: str | None) -> Path:
    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    config = "[core]\n    autostage = true\n" + (f"[cache]\n    type = {cache_type}\n" if cache_type else "")
    (root / ".dvc" / "config").write_text(config)
    return root


def test_the_dvc_cache_type_is_read_from_the_repos_config(tmp_path) -> None:
    assert read_dvc_cache(tmp_path) is None  # not a DVC repository: no cache row
    assert read_dvc_cache(dvc_repo(tmp_path, None)).types == ("reflink", "copy")  # DVC's default: copies on ext4
    assert not read_dvc_cache(tmp_path).links
    cache = read_dvc_cache(dvc_repo(tmp_path, "hardlink"))
    assert cache.links and cache.directory == tmp_path / ".dvc" / "cache"
    (tmp_path / ".dvc" / "config.local").write_text("[cache]\n    type = reflink, copy\n    dir = /elsewhere\n")
    local = read_dvc_cache(tmp_path)
    assert local.types == ("reflink", "copy") and local.directory == Path("/elsewhere")


@pytest.fixture()
def run(params, tmp_path):
    """A tiny LoRA + EMA run with its checkpoints in a store beside train.out_dir (one filesystem)."""
    cfg = make_train_config(params, tmp_path / "data", tmp_path / "repo", store=tmp_path / "store",
                            runs_in_store=True, peft=make_peft({"preset": "openpi"}), ema_decay=0.9, keep_last=2)
    counts = count_parameters(cfg)
    return cfg, counts, compute_checkpoint_bytes(counts, cfg.policy_setup())


def test_links_cost_nothing_and_copies_are_counted(run, tmp_path) -> None:
    cfg, counts, per = run
    assert compute_retained(cfg) == 2 + 3  # keep_last + best + last + one being written
    copies = disk_needs(cfg, counts, dvc_repo(tmp_path / "repo", "copy"))
    assert copies["checkpoints"][:2] == (cfg.store / "runs", 5 * per)
    assert copies["published checkpoints"][:2] == (cfg.out_dir, 0)  # hard links from the store, one filesystem
    assert copies["dvc cache"][:2] == (tmp_path / "repo" / ".dvc" / "cache", 2 * per)  # best and last, copied
    assert "copied into the cache" in copies["dvc cache"][2]
    links = disk_needs(cfg, counts, dvc_repo(tmp_path / "repo", "hardlink"))
    assert links["dvc cache"][1] == 0 and "no extra bytes" in links["dvc cache"][2]
    checks = {c.name: c for c in resources.check_disk(links)}
    assert set(checks) == {"checkpoints", "published checkpoints", "dvc cache"}
    assert "hard-linked from the store" in checks["published checkpoints"].value


@pytest.mark.skipif(not OTHER_FS.is_dir() or resources.same_filesystem(OTHER_FS, Path("/tmp")),
                    reason="needs a second filesystem (/dev/shm)")
def test_a_store_on_another_filesystem_costs_a_published_copy(run, tmp_path) -> None:
    from dataclasses import replace

    cfg, counts, per = run
    cfg = replace(cfg, store=OTHER_FS / "vla-test-store-never-written")
    needs = disk_needs(cfg, counts, dvc_repo(tmp_path / "repo", "hardlink"))
    assert needs["published checkpoints"][1] == 2 * per and "another filesystem" in needs["published checkpoints"][2]
    assert needs["dvc cache"][1] == 0  # the cache links to the published files on the repo's filesystem
    assert needs["checkpoints"][0] == OTHER_FS / "vla-test-store-never-written" / "runs"


def test_without_a_store_the_run_directory_is_the_output_and_dvc_caches_its_checkpoints(run, tmp_path) -> None:
    from dataclasses import replace

    cfg, counts, per = replace(run[0], runs_in_store=False), run[1], run[2]
    needs = disk_needs(cfg, counts, dvc_repo(tmp_path / "repo", "copy"))
    assert "published checkpoints" not in needs and needs["checkpoints"][0] == cfg.out_dir
    assert needs["dvc cache"][1] == 4 * per  # what out_dir holds when the stage ends: keep_last + best + last

