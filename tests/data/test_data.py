"""Samples carry the contract's arm-only vectors, selected by name, with exact chunk alignment."""

from __future__ import annotations

import numpy as np
import pytest
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline.data.contract import ContractError, load_contract
from vla_pipeline.data.demo import ARM_JOINTS, LEKIWI_NAMES
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.data.tables import feature_names, load_info
from vla_pipeline.provenance import compute_dataset_fingerprint

from conftest import CONTRACT
from tabular import column_array, load_frames


def test_arm_only_selection_by_name_and_chunk_alignment(demo_dataset) -> None:
    contract = load_contract(CONTRACT)
    frames = load_frames(demo_dataset)
    action9 = column_array(frames, "action")
    state9 = column_array(frames, "observation.state")
    episodes = [1, 4]
    ds = make_dataset(demo_dataset, contract, episodes, chunk_size=5)
    rows = frames[frames["episode_index"].isin(episodes)].reset_index()
    assert len(ds) == len(rows)
    arm = [LEKIWI_NAMES.index(j) for j in ARM_JOINTS]
    for i in (0, 3, len(ds) - 2):
        item = ds[i]
        g = int(rows.loc[i, "index"])
        ep_end = int(rows[rows["episode_index"] == rows.loc[i, "episode_index"]]["index"].max())
        assert item[ACTION].shape == (5, 6) and item[OBS_STATE].shape == (6,)
        np.testing.assert_allclose(item[OBS_STATE].numpy(), state9[g, arm], rtol=1e-6)
        # the chunk for frame t starts at frame t's action; steps past the episode end are padding
        for k in range(5):
            pad = g + k > ep_end
            assert bool(item[f"{ACTION}_is_pad"][k]) == pad
            np.testing.assert_allclose(item[ACTION][k].numpy(), action9[min(g + k, ep_end), arm], rtol=1e-6)
        assert item["observation.images.front"].shape == (3, 32, 40)


def test_missing_joint_names_what_exists(demo_dataset, tmp_path) -> None:
    text = CONTRACT.read_text().replace("arm_elbow_flex.pos", "elbow_flex.pos")
    (tmp_path / "c.yaml").write_text(text)
    contract = load_contract(tmp_path / "c.yaml")
    with pytest.raises(ContractError, match=r"elbow_flex\.pos.*arm_elbow_flex\.pos"):
        contract.select_indices(feature_names(load_info(demo_dataset), "action"), "action")


def test_fingerprint_changes_with_content(demo_dataset, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset, copy)
    assert compute_dataset_fingerprint(copy) == compute_dataset_fingerprint(demo_dataset)
    (copy / "meta" / "tasks.parquet").write_bytes(b"changed")
    assert compute_dataset_fingerprint(copy) != compute_dataset_fingerprint(demo_dataset)
