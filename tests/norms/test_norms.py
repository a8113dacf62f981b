"""Frozen stats: exact, train-split only, deterministic, hash-linked, and what LeRobot normalizes with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_STATE

from vla_pipeline.data.demo import ARM_JOINTS, LEKIWI_NAMES
from vla_pipeline.norms import (
    NormsConfig,
    compute_feature_stats,
    compute_norm_stats,
    compute_split,
)

from conftest import CONTRACT
from tabular import column_array, load_frames


def test_split_is_deterministic_disjoint_and_complete() -> None:
    eps = list(range(10))
    a = compute_split(eps, 0.2, seed=3)
    assert a == compute_split(eps, 0.2, seed=3)
    assert a != compute_split(eps, 0.2, seed=4)
    assert sorted(a["train"] + a["val"]) == eps and a["val"] and a["train"]
    with pytest.raises(ValueError, match="at least 2 episodes"):
        compute_split([0], 0.2, 0)


def test_stats_are_exact_over_train_split_only(demo_dataset, tmp_path) -> None:
    doc, split = compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path, val_fraction=0.34))
    frames = load_frames(demo_dataset)
    train = frames[frames["episode_index"].isin(split["train"])]
    arm = [LEKIWI_NAMES.index(j) for j in ARM_JOINTS]
    actions = column_array(train, "action")[:, arm]
    stats = doc["features"][ACTION]
    np.testing.assert_allclose(stats["mean"], actions.mean(0))
    np.testing.assert_allclose(stats["q01"], np.quantile(actions, 0.01, axis=0))
    np.testing.assert_allclose(stats["q99"], np.quantile(actions, 0.99, axis=0))
    assert stats["count"][0] == len(train) < len(frames)
    assert set(doc["features"]) == {ACTION, OBS_STATE}
    assert len(doc["features"][OBS_STATE]["mean"]) == 6


def test_constant_joint_warns_by_name() -> None:
    values = np.stack([np.linspace(0, 1, 50), np.full(50, 7.0)], axis=1)
    with pytest.warns(UserWarning, match="joint 'gripper' is \\(near-\\)constant"):
        stats = compute_feature_stats(values, ["pan", "gripper"])
    assert stats["constant"] == [False, True]
    assert (stats["q01"][1], stats["q50"][1], stats["q99"][1], stats["std"][1]) == (6.0, 7.0, 8.0, 1.0)
    assert stats["q01"][0] == pytest.approx(np.quantile(values[:, 0], 0.01))
    # LeRobot's quantile normalizer then maps the constant joint to (x - 7), never x / ~0
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.processor import NormalizerProcessorStep

    from vla_pipeline.norms import make_processor_stats

    step = NormalizerProcessorStep(
        features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(2,))},
        norm_map={FeatureType.ACTION: NormalizationMode.QUANTILES},
        stats=make_processor_stats({"features": {ACTION: stats}}),
    )
    out = step._normalize_action(torch.tensor([[0.5, 7.25]]), inverse=False)
    assert out[0, 1].item() == pytest.approx(0.25)


def test_explicit_validation_episodes() -> None:
    assert compute_split([0, 1, 2, 3], 0.5, 0, val_episodes=[3]) == {"train": [0, 1, 2], "val": [3]}
    with pytest.raises(ValueError, match=r"\[9\] are not in the dataset"):
        compute_split([0, 1, 2], 0.5, 0, val_episodes=[9])


def test_comparison_with_meta_stats(demo_dataset, tmp_path) -> None:
    doc, split = compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path, val_fraction=0.34))
    cmp = doc["comparison_with_meta_stats"][ACTION]
    assert set(cmp) == set(ARM_JOINTS)
    frames = load_frames(demo_dataset)
    train = column_array(frames[frames["episode_index"].isin(split["train"])], "action")[:, :6]
    q01, q99 = np.quantile(train, 0.01, axis=0), np.quantile(train, 0.99, axis=0)
    outside = ((train < q01) | (train > q99)).mean(axis=0)
    for i, joint in enumerate(ARM_JOINTS):
        assert cmp[joint]["share_outside_q01_q99"] == pytest.approx(outside[i])
        assert "meta_q01_error_of_range" in cmp[joint]


def test_processor_uses_frozen_stats_not_meta_stats(demo_dataset, tmp_path) -> None:
    """Corrupting the dataset's own meta/stats.json changes nothing: it is never read."""
    import shutil

    doc, _ = compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset, copy)
    meta_stats = copy / "meta" / "stats.json"
    broken = json.loads(meta_stats.read_text())
    for feature in broken.values():
        for k in feature:
            feature[k] = np.full_like(np.asarray(feature[k], dtype=float), 1e6).tolist()
    meta_stats.write_text(json.dumps(broken))
    doc_copy, _ = compute_norm_stats(NormsConfig(copy, CONTRACT, tmp_path / "b"))
    assert doc_copy["features"] == doc["features"]


def test_excluded_episodes_are_left_out_and_report_is_required(demo_dataset, tmp_path) -> None:
    from vla_pipeline.errors import ValidationError
    from vla_pipeline.validate.config import ValidateConfig
    from vla_pipeline.validate.run import validate_dataset

    report = tmp_path / "report.json"
    with pytest.raises(ValidationError, match="not found"):
        compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path, report_path=report))
    validate_dataset(ValidateConfig(demo_dataset, CONTRACT, report, exclude_episodes=(1,)))
    doc, split = compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path, report_path=report,
                                                exclude_episodes=(1,), val_fraction=0.34))
    assert 1 not in split["train"] + split["val"]
    assert sorted(split["train"] + split["val"]) == [0, 2, 3, 4, 5]
    assert doc["exclude_episodes"] == [1]


def test_without_exclusions_of_its_own_norms_takes_the_reports(demo_dataset, tmp_path) -> None:
    """dataset.exclude_episodes is read by validate only: norms (exclude_episodes None, as the stage
    builds it) leaves out what the report recorded, and records it for train to check."""
    from vla_pipeline.validate.config import ValidateConfig
    from vla_pipeline.validate.run import validate_dataset

    report = tmp_path / "report.json"
    validate_dataset(ValidateConfig(demo_dataset, CONTRACT, report, exclude_episodes=(4,)))
    doc, split = compute_norm_stats(NormsConfig(demo_dataset, CONTRACT, tmp_path, report_path=report,
                                                exclude_episodes=None, val_fraction=0.34))
    assert sorted(split["train"] + split["val"]) == [0, 1, 2, 3, 5]
    assert doc["exclude_episodes"] == [4]
