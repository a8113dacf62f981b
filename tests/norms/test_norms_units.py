"""The norms stage on datasets without videos (tests/tabular.py) and on hand-made arrays: the split's
rules, exact quantiles, the (near-)constant joint rule, the comparison with meta/stats.json, the
stats document and its files, all against hand computations. tests/norms/test_norms.py runs it on the
demo dataset."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.utils.constants import ACTION, OBS_STATE

import vla_pipeline
from vla_pipeline.errors import ConfigError, ContractError, ValidationError
from vla_pipeline.norms import (
    NormsConfig,
    compute_episode_draw,
    compute_feature_stats,
    compute_norm_stats,
    compute_sorted_quantiles,
    compute_split,
    compute_split_id,
    compute_stats_comparison,
    load_norm_stats,
    load_split,
    make_processor_stats,
    save_norm_stats,
)
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint, compute_split_hash

from tabular import write_arm_contract, write_tabular


def test_config_from_params_reads_and_casts_every_key() -> None:
    p = {"dataset": {"root": "data/x", "contract": "c.yaml", "exclude_episodes": [4, "5"]},
         "validate": {"report": "r.json"},
         "norms": {"out_dir": "out", "val_fraction": "0.25", "split_seed": "7", "val_episodes": [2]}}
    assert NormsConfig.from_params(p) == NormsConfig(
        dataset_root=Path("data/x"), contract_path=Path("c.yaml"), out_dir=Path("out"), report_path=Path("r.json"),
        exclude_episodes=None, val_fraction=0.25, seed=7, val_episodes=(2,))  # None: the report's exclusions
    p["norms"]["val_episodes"] = None
    assert NormsConfig.from_params(p).val_episodes == ()
    del p["norms"]["split_seed"]
    with pytest.raises(ConfigError, match="missing key 'norms.split_seed'"):
        NormsConfig.from_params(p)


def test_config_defaults() -> None:
    cfg = NormsConfig(Path("d"), Path("c"), Path("o"))
    assert (cfg.report_path, cfg.exclude_episodes, cfg.val_fraction, cfg.seed, cfg.val_episodes) == (
        None, (), 0.2, 0, ())


# ----------------------------------------------------------------------------- split
def test_each_episode_is_held_out_when_its_own_draw_is_below_the_fraction() -> None:
    split = compute_split([7, 3, 5, 1, 9, 12], 0.5, 11)
    assert split == compute_split([12, 9, 1, 3, 5, 7], 0.5, 11)  # the input order does not matter
    expected_val = [e for e in (1, 3, 5, 7, 9, 12) if compute_episode_draw(11, e) < 0.5]
    assert 0 < len(expected_val) < 6 and split == {"train": sorted({1, 3, 5, 7, 9, 12} - set(expected_val)),
                                                   "val": expected_val}
    assert all(type(e) is int for e in split["train"] + split["val"])  # JSON-ready
    digest = hashlib.sha256(b"vla-split:11:7").digest()
    assert compute_episode_draw(11, 7) == int.from_bytes(digest[:8], "big") / 2**64
    assert compute_episode_draw(11, 7) != compute_episode_draw(12, 7) != compute_episode_draw(11, 8)


def test_the_held_out_share_follows_the_fraction() -> None:
    for fraction in (0.1, 0.2, 0.5):
        share = len(compute_split(list(range(2000)), fraction, 3)["val"]) / 2000
        assert abs(share - fraction) < 0.03, (fraction, share)


def test_excluding_or_adding_episodes_never_moves_another_episode() -> None:
    """The issue's case: excluding one episode moved four others into or out of validation."""
    everything = compute_split(list(range(30)), 0.2, 0)
    side = {e: "val" if e in everything["val"] else "train" for e in range(30)}
    for excluded in ([4], [0, 1, 2], [5, 11, 29], list(range(0, 30, 3))):
        split = compute_split([e for e in range(30) if e not in excluded], 0.2, 0)
        assert {e: "val" if e in split["val"] else "train" for e in side if e not in excluded} == {
            e: s for e, s in side.items() if e not in excluded}, excluded
    grown = compute_split(list(range(40)), 0.2, 0)  # ten episodes recorded later
    assert [e for e in grown["val"] if e < 30] == everything["val"]


def test_both_sides_keep_one_episode_when_every_draw_falls_on_one_side() -> None:
    draws = {e: compute_episode_draw(0, e) for e in (0, 1)}
    low = min(draws, key=draws.get)
    assert compute_split([0, 1], 0.001, 0) == {"train": [1 - low], "val": [low]}  # all would train
    assert compute_split([0, 1], 0.999, 0) == {"train": [1 - low], "val": [low]}  # all would validate
    assert compute_split_id({"train": [1 - low], "val": [low]}) == int(
        compute_split_hash({"train": [1 - low], "val": [low]})[:6], 16)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction) -> None:
    with pytest.raises(ConfigError) as e:
        compute_split([0, 1, 2], fraction, 0)
    assert str(e.value) == f"norms.val_fraction must be in (0, 1), got {fraction}"


def test_explicit_validation_episodes_win() -> None:
    assert compute_split([0, 1, 2, 3], 0.9, 0, val_episodes=[3, 1, 3]) == {"train": [0, 2], "val": [1, 3]}
    with pytest.raises(ConfigError) as e:
        compute_split([0, 1, 2], 0.5, 0, val_episodes=[9, 1, 8])
    assert str(e.value) == "norms.val_episodes [8, 9] are not in the dataset (or are excluded)"
    with pytest.raises(ConfigError) as e:
        compute_split([0, 1], 0.5, 0, val_episodes=[0, 1])
    assert str(e.value) == "norms.val_episodes leaves no episode to train on"
    assert compute_split([0, 1], 0.5, 0, val_episodes=[]) == compute_split([0, 1], 0.5, 0)  # empty: the fraction


def test_a_split_needs_two_episodes() -> None:
    with pytest.raises(ConfigError) as e:
        compute_split([4], 0.5, 0)
    assert str(e.value) == "need at least 2 episodes to split into train and validation, got 1"
    with pytest.raises(ConfigError, match="got 0"):
        compute_split([], 0.5, 0, val_episodes=[1])


def test_split_hash_is_the_sha256_of_the_sorted_json() -> None:
    expected = hashlib.sha256(b'{"train": [0, 2], "val": [1]}').hexdigest()
    assert compute_split_hash({"val": [1], "train": [0, 2]}) == expected


# ----------------------------------------------------------------------------- stats
@pytest.mark.parametrize("n", [1, 2, 5, 101])
def test_sorted_quantiles_are_numpys_linear_quantiles(n) -> None:
    values = np.sort(np.random.default_rng(n).normal(size=(n, 3)), axis=0)
    for q in (0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert compute_sorted_quantiles(values, q) == pytest.approx(np.quantile(values, q, axis=0), rel=1e-12,
                                                                    abs=1e-15)


def test_feature_stats_by_hand() -> None:
    values = np.array([[0.0, 8.0], [10.0, 2.0], [20.0, 6.0], [30.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no joint is constant
        stats = compute_feature_stats(values, ["a", "b"])
    assert stats == {
        "count": [4, 4], "mean": [15.0, 5.0], "std": pytest.approx([np.sqrt(125.0), np.sqrt(5.0)]),
        "min": [0.0, 2.0], "max": [30.0, 8.0],
        # linear quantiles of 4 sorted values: position q * 3
        "q01": pytest.approx([0.3, 2.06]), "q10": pytest.approx([3.0, 2.6]), "q50": [15.0, 5.0],
        "q90": pytest.approx([27.0, 7.4]), "q99": pytest.approx([29.7, 7.94]), "constant": [False, False]}
    assert all(type(x) is float for k, v in stats.items() if k not in ("count", "constant") for x in v)
    assert all(type(x) is int for x in stats["count"]) and all(type(x) is bool for x in stats["constant"])
    json.dumps(stats)


def test_near_constant_joints_are_centred_in_their_own_units_and_named() -> None:
    n = 200
    values = np.stack([
        np.linspace(0.0, 1.0, n),                              # moves
        np.full(n, 7.0) + np.linspace(0.0, 5e-7, n),           # std below 1e-6
        np.r_[np.full(n - 1, 3.0), 50.0],                      # one outlier: std large, q99 - q01 = 0
        np.linspace(0.0, 2e-6, n),                             # std ~5.8e-7 < 1e-6
        np.linspace(0.0, 4e-6, n),                             # std ~1.2e-6, q99 - q01 ~3.9e-6: not constant
    ], axis=1)
    with pytest.warns(UserWarning) as record:
        stats = compute_feature_stats(values, ["pan", "grip", "flag", "tiny", "small"])
    assert stats["constant"] == [False, True, True, True, False]
    assert [str(w.message) for w in record] == [
        f"joint 'grip' is (near-)constant in the train split (std={values[:, 1].std():.3g}); it is normalized as "
        f"(x - {np.median(values[:, 1]):.4g}) in its own units",
        f"joint 'flag' is (near-)constant in the train split (std={values[:, 2].std():.3g}); it is normalized as "
        f"(x - 3) in its own units",
        f"joint 'tiny' is (near-)constant in the train split (std={values[:, 3].std():.3g}); it is normalized as "
        f"(x - {np.median(values[:, 3]):.4g}) in its own units"]
    for j in (1, 2, 3):
        assert stats["q01"][j] == pytest.approx(stats["q50"][j] - 1.0) and stats["std"][j] == 1.0
        assert stats["q99"][j] == pytest.approx(stats["q50"][j] + 1.0)
    assert stats["max"][2] == 50.0 and stats["std"][4] == pytest.approx(values[:, 4].std())
    assert stats["q01"][0] == pytest.approx(np.quantile(values[:, 0], 0.01))


def test_no_train_frames_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        compute_feature_stats(np.zeros((0, 2)), ["a", "b"])
    assert str(e.value) == "no train frames to compute statistics from"


def test_comparison_with_the_datasets_own_stats_by_hand() -> None:
    train = np.array([[0.0, 5.0], [10.0, 5.0], [20.0, 5.0], [30.0, 5.0]])
    # a: 0 on q01 is inside, 30 above q99 is outside; b: 5 on q99 is inside
    exact = {"q01": [0.0, 4.0], "q99": [29.7, 5.0], "min": [0.0, 5.0], "max": [30.0, 5.0]}
    meta = {"q01": [99.0, -9.7, 4.5], "q99": [[99.0, 30.0, 6.0]]}  # dataset order: (other, a, b); any shape
    result = compute_stats_comparison(exact, meta, train, ["a", "b"], dims=[1, 2])
    assert result == {
        "a": {"share_outside_q01_q99": 0.25, "meta_q01": -9.7, "meta_q01_error_of_range": pytest.approx(9.7 / 30),
              "meta_q99": 30.0, "meta_q99_error_of_range": pytest.approx(0.3 / 30)},
        # b never moves: its range is floored at 1e-12 rather than divided by zero
        "b": {"share_outside_q01_q99": 0.0, "meta_q01": 4.5, "meta_q01_error_of_range": pytest.approx(0.5e12),
              "meta_q99": 6.0, "meta_q99_error_of_range": pytest.approx(1e12)}}
    assert compute_stats_comparison(exact, None, train, ["a", "b"], [1, 2]) == {
        "a": {"share_outside_q01_q99": 0.25}, "b": {"share_outside_q01_q99": 0.0}}
    only_q99 = compute_stats_comparison(exact, {"q99": [0.0, 30.0, 6.0]}, train, ["a", "b"], [1, 2])
    assert set(only_q99["a"]) == {"share_outside_q01_q99", "meta_q99", "meta_q99_error_of_range"}


def test_processor_stats_are_the_keys_lerobot_reads_as_float32_tensors() -> None:
    doc = {"features": {ACTION: {"mean": [1.0, 2.0], "std": [0.5, 0.5], "min": [0, 1], "max": [2, 3],
                                 "q01": [0.1, 1.1], "q10": [0.2, 1.2], "q50": [1, 2], "q90": [1.8, 2.8],
                                 "q99": [1.9, 2.9], "count": [4, 4], "constant": [False, False]}}}
    stats = make_processor_stats(doc)
    assert list(stats) == [ACTION]
    assert list(stats[ACTION]) == ["mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99"]
    assert all(t.dtype == torch.float32 for t in stats[ACTION].values())
    assert torch.equal(stats[ACTION]["q90"], torch.tensor([1.8, 2.8]))


# ----------------------------------------------------------------------------- the stats document and its files
def _dataset(tmp_path: Path, meta_stats: dict | None = None) -> tuple[Path, Path]:
    """Episodes 0..3 of 2 frames; dataset order (x.vel, elbow, wrist, gripper); the state is the action + 100.
    Episode 3 is wild (1000s): only its exclusion keeps the stats sane."""
    def episode(grip: list[float], elbow: list[float]) -> np.ndarray:
        return np.array([[-1.0, e, 0.5, g] for g, e in zip(grip, elbow, strict=True)])

    actions = [episode([0, 10], [2, 4]), episode([50, 60], [9, 9]), episode([20, 30], [6, 8]),
               episode([1000, 1000], [1000, 1000])]
    root = write_tabular(tmp_path / "ds", actions, [a + 100 for a in actions], meta_stats=meta_stats)
    return root, write_arm_contract(tmp_path / "c.yaml")


def test_stats_document_by_hand(tmp_path) -> None:
    meta = {"action": {"q01": [0.0, 1.0, 0.0, -10.0], "q99": [0.0, 8.0, 0.0, 29.7]}}
    root, contract = _dataset(tmp_path, meta)
    cfg = NormsConfig(root, contract, tmp_path / "out", exclude_episodes=(9, 3), val_episodes=(1,))
    doc, split = compute_norm_stats(cfg)
    assert split == {"train": [0, 2], "val": [1]}
    action, state = doc["features"][ACTION], doc["features"][OBS_STATE]
    assert action["mean"] == [15.0, 5.0] and action["count"] == [4, 4]  # contract order: gripper, elbow
    assert action["q01"] == pytest.approx([0.3, 2.06]) and action["max"] == [30.0, 8.0]
    assert state["mean"] == [115.0, 105.0] and list(doc["features"]) == [ACTION, OBS_STATE]
    assert doc["joints"] == ["gripper", "elbow"] and doc["n_train_frames"] == 4
    assert doc["exclude_episodes"] == [3, 9] and doc["code_version"] == vla_pipeline.__version__
    assert doc["split_hash"] == compute_split_hash(split)
    assert doc["contract_hash"] == compute_contract_hash(contract)
    assert doc["dataset_fingerprint"] == compute_dataset_fingerprint(root)
    grip = doc["comparison_with_meta_stats"][ACTION]["gripper"]
    assert grip == {"share_outside_q01_q99": 0.5, "meta_q01": -10.0,
                    "meta_q01_error_of_range": pytest.approx(10.3 / 30), "meta_q99": 29.7,
                    "meta_q99_error_of_range": pytest.approx(0.0, abs=1e-12)}
    assert doc["comparison_with_meta_stats"][ACTION]["elbow"]["meta_q01"] == 1.0
    assert doc["comparison_with_meta_stats"][OBS_STATE] == {"gripper": {"share_outside_q01_q99": 0.5},
                                                           "elbow": {"share_outside_q01_q99": 0.5}}


def test_the_split_comes_from_the_fraction_and_seed(tmp_path) -> None:
    root, contract = _dataset(tmp_path)
    _, split = compute_norm_stats(NormsConfig(root, contract, tmp_path, exclude_episodes=(3,), val_fraction=0.34,
                                              seed=5))
    assert split == compute_split([0, 1, 2], 0.34, 5)


def test_the_validation_report_must_match(tmp_path) -> None:
    root, contract = _dataset(tmp_path)
    report = tmp_path / "report.json"
    cfg = NormsConfig(root, contract, tmp_path / "out", report_path=report, exclude_episodes=(3,))
    with pytest.raises(ValidationError, match="not found"):
        compute_norm_stats(cfg)
    report.write_text(json.dumps({"ok": True, "dataset_fingerprint": compute_dataset_fingerprint(root),
                                  "contract_hash": compute_contract_hash(contract), "excluded_episodes": []}))
    with pytest.raises(ValidationError, match=r"made with dataset.exclude_episodes \[\], not \[3\]"):
        compute_norm_stats(cfg)
    report.write_text(json.dumps({"ok": True, "dataset_fingerprint": compute_dataset_fingerprint(root),
                                  "contract_hash": compute_contract_hash(contract), "excluded_episodes": [3]}))
    assert compute_norm_stats(cfg)[0]["n_train_frames"] > 0
    other = write_arm_contract(tmp_path / "other.yaml", max_action_jump=5)
    with pytest.raises(ValidationError, match="made against another contract"):
        compute_norm_stats(NormsConfig(root, other, tmp_path / "out", report_path=report, exclude_episodes=(3,)))


def test_a_contract_joint_the_dataset_lacks_is_named(tmp_path) -> None:
    root, _ = _dataset(tmp_path)
    contract = write_arm_contract(tmp_path / "c2.yaml", joints=("elbow", "shoulder"))
    with pytest.raises(ContractError, match=r"joint 'shoulder' is not among the dataset's names for 'action'"):
        compute_norm_stats(NormsConfig(root, contract, tmp_path, exclude_episodes=(3,)))


def test_a_joint_constant_in_the_train_split_is_named(tmp_path) -> None:
    actions = [np.array([[0.0, 1.0, 0.0, float(g)] for g in grip]) for grip in ([0, 1], [2, 3], [4, 5])]
    root = write_tabular(tmp_path / "ds", actions)
    with pytest.warns(UserWarning, match="joint 'elbow' is \\(near-\\)constant"):
        compute_norm_stats(NormsConfig(root, write_arm_contract(tmp_path / "c.yaml"), tmp_path, val_episodes=(2,)))


def test_saved_stats_and_split_load_back(tmp_path) -> None:
    root, contract = _dataset(tmp_path)
    out = tmp_path / "a" / "norms"
    cfg = NormsConfig(root, contract, out, exclude_episodes=(3,), val_episodes=(2,))
    assert save_norm_stats(cfg) == out / "stats.json"
    assert save_norm_stats(cfg) == out / "stats.json"  # the stage runs again into its existing output
    doc, split = compute_norm_stats(cfg)
    saved = json.loads((out / "split.json").read_text())
    assert saved == {"train": [0, 1], "val": [2], "hash": compute_split_hash(split), "id": compute_split_id(split)}
    for name in ("split.json", "stats.json"):  # readable
        text = (out / name).read_text()
        assert text == json.dumps(json.loads(text), indent=2)
    assert load_split(out) == {"train": [0, 1], "val": [2]}
    assert load_norm_stats(str(out)) == (json.loads(json.dumps(doc)), {"train": [0, 1], "val": [2]})


def test_missing_norms_outputs_say_which_stage_to_run(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        load_norm_stats(tmp_path)
    assert str(e.value) == f"frozen stats {tmp_path / 'stats.json'} not found; run `dvc repro norms` first"
    (tmp_path / "stats.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as e:
        load_norm_stats(tmp_path)
    assert str(e.value) == f"episode split {tmp_path / 'split.json'} not found; run `dvc repro norms` first"
    with pytest.raises(FileNotFoundError, match="episode split"):
        load_split(str(tmp_path))
