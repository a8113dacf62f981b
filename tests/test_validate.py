"""Validation passes a good dataset with a report and fails a broken one with actionable errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from vla_pipeline.validate import ValidateConfig, ValidationError, validate_dataset

from conftest import CONTRACT


def _copy(demo_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(demo_dataset, root)
    return root


def _edit_parquet(root, edit) -> None:
    path = sorted((root / "data").glob("**/*.parquet"))[0]
    df = pd.read_parquet(path)
    edit(df)
    df.to_parquet(path)


def test_good_dataset_passes_with_report(demo_dataset, tmp_path) -> None:
    report = validate_dataset(ValidateConfig(demo_dataset, CONTRACT, tmp_path / "r.json"))
    assert report.ok and report.summary["n_episodes"] == 6
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


def test_nan_action_is_an_error_naming_the_episode(demo_dataset, tmp_path) -> None:
    root = _copy(demo_dataset, tmp_path)

    def poison(df):
        a = np.stack(df["action"].to_numpy()).copy()
        a[df.index[df["episode_index"] == 2][3], 1] = np.nan
        df["action"] = list(a.astype(np.float32))

    _edit_parquet(root, poison)
    with pytest.raises(ValidationError, match=r"action: 1 NaN/Inf values in episodes \[2\]"):
        validate_dataset(ValidateConfig(root, CONTRACT, tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is False


def test_bad_timestamps_name_episode_and_frame(demo_dataset, tmp_path) -> None:
    root = _copy(demo_dataset, tmp_path)

    def shift(df):
        rows = df.index[df["episode_index"] == 1]
        df.loc[rows[5]:rows[-1], "timestamp"] += 0.02

    _edit_parquet(root, shift)
    with pytest.raises(ValidationError, match=r"episode 1: timestamp spacing .* at frame 5"):
        validate_dataset(ValidateConfig(root, CONTRACT, tmp_path / "r.json"))


def test_missing_key_lists_existing_keys(demo_dataset, tmp_path) -> None:
    contract = tmp_path / "c.yaml"
    contract.write_text(CONTRACT.read_text().replace("action: action", "action: actions"))
    with pytest.raises(ValidationError, match=r"action key 'actions' missing; dataset has \[.*'action'"):
        validate_dataset(ValidateConfig(demo_dataset, contract, tmp_path / "r.json"))
