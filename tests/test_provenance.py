"""provenance: the one "same data?" comparison every stage makes before it trusts a derived file,
and the hashes it compares."""

from __future__ import annotations

import numpy as np

from vla_pipeline.provenance import (
    compute_contract_hash,
    compute_dataset_fingerprint,
    compute_split_hash,
    find_data_mismatch,
    sha256_file,
)

from tabular import write_arm_contract, write_tabular


def make_data(tmp_path):
    root = write_tabular(tmp_path / "ds", [np.zeros((3, 4)), np.ones((2, 4))])
    contract = write_arm_contract(tmp_path / "arm.yaml")
    split = {"train": [0], "val": [1]}
    recorded = {"dataset_fingerprint": compute_dataset_fingerprint(root), "contract_hash": compute_contract_hash(contract),
                "split_hash": compute_split_hash(split)}
    return root, contract, split, recorded


def test_the_same_data_matches_and_each_change_is_named_first_split_then_dataset_then_contract(tmp_path) -> None:
    root, contract, split, recorded = make_data(tmp_path)
    assert find_data_mismatch(recorded, root, contract_path=contract, split=split) is None
    contract.write_text(contract.read_text() + "\n")
    assert find_data_mismatch(recorded, root, contract_path=contract, split=split) == "contract"
    (root / "meta" / "info.json").write_text((root / "meta" / "info.json").read_text() + " ")
    assert find_data_mismatch(recorded, root, contract_path=contract, split=split) == "dataset"
    assert find_data_mismatch(recorded, root, contract_path=contract, split={"train": [1], "val": [0]}) == "split"


def test_only_what_is_recorded_and_given_is_compared(tmp_path) -> None:
    root, contract, split, recorded = make_data(tmp_path)
    other = {"train": [1], "val": [0]}
    assert find_data_mismatch({"contract_hash": recorded["contract_hash"]}, root, split=other) is None
    assert find_data_mismatch(recorded, root) is None  # no split, no contract given
    # a known fingerprint spares hashing the dataset again (here: a root that does not exist)
    assert find_data_mismatch(recorded, tmp_path / "nowhere", fingerprint=recorded["dataset_fingerprint"]) is None
    assert find_data_mismatch(recorded, fingerprint="0" * 64) == "dataset"


def test_hashes_by_hand(tmp_path) -> None:
    import hashlib
    import json

    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * (1 << 24) + b"tail")  # more than one 16 MiB block
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    split = {"val": [2], "train": [0, 1]}
    assert compute_split_hash(split) == hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
    assert compute_split_hash(split) == compute_split_hash({"train": [0, 1], "val": [2]})


def test_the_dataset_fingerprint_is_hashed_once_per_process_until_a_file_changes(tmp_path, monkeypatch) -> None:
    """train, norms and evaluate ask for it several times: above FINGERPRINT_MEMO_BYTES the files are read
    once; a changed file (size, mtime, ctime or inode) is read again."""
    import vla_pipeline.provenance as provenance

    root, *_ = make_data(tmp_path)
    monkeypatch.setattr(provenance, "FINGERPRINT_MEMO_BYTES", 0)
    monkeypatch.setattr(provenance, "_FINGERPRINTS", {})  # make_data hashed it already
    reads = []
    real = provenance.sha256_file
    monkeypatch.setattr(provenance, "sha256_file", lambda path: reads.append(path) or real(path))
    first = compute_dataset_fingerprint(root)
    n_files = len(reads)
    assert n_files > 2 and compute_dataset_fingerprint(root) == first and len(reads) == n_files
    meta = root / "meta" / "info.json"
    meta.write_text(meta.read_text() + " ")
    changed = compute_dataset_fingerprint(root)
    assert changed != first and len(reads) == 2 * n_files
    monkeypatch.setattr(provenance, "FINGERPRINT_MEMO_BYTES", 1 << 40)  # small datasets: hashed each time
    assert compute_dataset_fingerprint(root) == changed and len(reads) == 3 * n_files
