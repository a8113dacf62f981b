"""The core share: processes that run torch side by side split the cores instead of each taking them all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from vla_pipeline import cores


@pytest.fixture
def share(tmp_path, monkeypatch):
    """A fresh registry and process state; torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setenv(cores.REGISTRY_ENV, str(tmp_path / "registry"))
    monkeypatch.delenv(cores.OVERRIDE_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores, "REBALANCE_EVERY_S", 0.0)
    monkeypatch.setattr(cores, "available_cores", lambda: 4)
    cores.release_core_share()
    cores._State.share = None
    yield tmp_path / "registry"
    cores.release_core_share()
    cores._State.share = None
    torch.set_num_threads(before)


def _peer(registry) -> subprocess.Popen:
    """Another process that claims its share and stays until killed."""
    code = ("import sys, time; from vla_pipeline import cores; cores.available_cores = lambda: 4; "
            "cores.claim_core_share(); print('claimed', flush=True); time.sleep(120)")
    env = {**os.environ, cores.REGISTRY_ENV: str(registry), "OMP_NUM_THREADS": ""}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "claimed"
    return proc


def test_compute_share_splits_evenly_and_never_below_one() -> None:
    assert [cores.compute_share(4, n) for n in (0, 1, 2, 3, 4, 8)] == [4, 4, 2, 1, 1, 1]


def test_a_running_process_gives_up_cores_when_a_peer_arrives_and_takes_them_back(share) -> None:
    assert cores.claim_core_share().threads == 4 and torch.get_num_threads() == 4
    peer = _peer(share)
    try:
        assert cores.rebalance() == cores.CoreShare(2, 2, "share") and torch.get_num_threads() == 2
        second = _peer(share)
        try:
            assert cores.rebalance().threads == 1
        finally:
            second.kill()
            second.wait(timeout=30)
        assert cores.rebalance().threads == 2  # a killed peer's entry is stale, not a peer
    finally:
        peer.kill()
        peer.wait(timeout=30)
    assert cores.rebalance().threads == 4 and torch.get_num_threads() == 4
    assert [p.name for p in share.iterdir()] == [f"{os.getpid()}.pid"]  # the stale entries were removed


def test_an_explicit_thread_count_wins_but_still_counts_as_a_peer(share, monkeypatch) -> None:
    monkeypatch.setenv(cores.OVERRIDE_ENV, "3")
    assert cores.claim_core_share() == cores.CoreShare(3, 1, cores.OVERRIDE_ENV)
    monkeypatch.delenv(cores.OVERRIDE_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    peer = _peer(share)  # started without an override: it sees this process as a peer
    try:
        assert cores.rebalance() == cores.CoreShare(1, 2, "OMP_NUM_THREADS")
    finally:
        peer.kill()
        peer.wait(timeout=30)


def test_rebalance_is_a_no_op_without_a_claim(share) -> None:
    assert cores.rebalance() is None
