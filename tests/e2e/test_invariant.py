"""The promise, as a matrix: if `validate` passes for a params file, then norms, frame_cache, train and
evaluate (the stage and `vla evaluate`) run on it, with the frame cache on and off, whether or not
the excluded episodes' video files and the video files of a camera the contract does not use exist.
Each stage runs as DVC runs it (the stage script's `main(params)`), in this process.

When every video file of the contract's cameras is absent, validate refuses (one dataset-level
error), so nothing downstream is promised; tests/e2e/test_realdata.py covers the other refusals (a
contract with no camera, exclusions that leave too little)."""

from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from pipeline import load_stage, make_params, run_stages
from vla_pipeline.cli import main as vla
from vla_pipeline.data.tables import load_rows_by_index
from vla_pipeline.errors import ValidationError

from conftest import REPO
from realdata import Recording, alter_remove_videos, write_recording

pytestmark = pytest.mark.slow  # end-to-end: every stage on each generated dataset (make test runs it)

FRONT, WRIST, TOP = "observation.images.front", "observation.images.wrist", "observation.images.top"
EXCLUDED = 1  # the episode whose front video is absent in the matrix's "excluded episode absent" cases


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """5 episodes, three cameras (the contract maps front and wrist, not top), a video file per episode."""
    return write_recording(tmp_path_factory.mktemp("invariant") / "three_cameras", Recording(
        cameras=(FRONT, WRIST, TOP), lengths=(14, 12, 15, 13, 12), one_video_file_per_episode=True))


MATRIX = list(product([True, False], [True, False], [True, False]))


@pytest.mark.parametrize("cache, excluded_absent, unused_absent", MATRIX,
                         ids=[f"cache_{c}-excluded_absent_{e}-unused_absent_{u}" for c, e, u in MATRIX])
def test_a_dataset_that_passes_validation_trains_and_evaluates(recording, tmp_path, monkeypatch, capsys,
                                                               cache, excluded_absent, unused_absent) -> None:
    root = tmp_path / "ds"
    shutil.copytree(recording, root)
    exclude = [EXCLUDED] if excluded_absent else []
    if excluded_absent:
        alter_remove_videos(root, FRONT, [EXCLUDED])
    if unused_absent:
        alter_remove_videos(root, TOP, list(range(5)))
    params = make_params(root, tmp_path / "work", cache, exclude)
    run_stages(params, monkeypatch)

    work = tmp_path / "work"
    report = json.loads((work / "validation" / "report.json").read_text())
    assert report["ok"] and report["excluded_episodes"] == exclude
    split = json.loads((work / "norms" / "split.json").read_text())
    assert EXCLUDED not in split["train"] + split["val"] if excluded_absent else True
    metrics = json.loads((work / "eval" / "best" / "metrics.json").read_text())
    assert metrics["n_episodes"] == len(split["val"])
    episode_of = load_rows_by_index(root, {})["episode_index"]  # every frame of every held-out episode runs once
    assert metrics["n_executed_steps"] == int(np.isin(episode_of, split["val"]).sum())

    # `vla evaluate` outside DVC, as README shows it: on the videos, and on the frame cache when it is on
    out = tmp_path / "vla_eval"
    args = ["evaluate", str(work / "train"), "--dataset", str(root), "--out", str(out), "--no-videos",
            "--wandb", "disabled"] + (["--frame-cache", str(work / "frame_cache")] if cache else [])
    capsys.readouterr()
    assert vla(args) == 0, capsys.readouterr().err
    again = json.loads((out / "metrics.json").read_text())
    assert again["n_executed_steps"] == metrics["n_executed_steps"]
    assert again["action_mse"] == pytest.approx(metrics["action_mse"], rel=1e-4 if cache else 1e-9)


def test_every_used_camera_absent_is_refused_by_validate(recording, tmp_path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(recording, root)
    for key in (FRONT, WRIST):
        alter_remove_videos(root, key, list(range(5)))
    params = make_params(root, tmp_path / "work", True, [])
    with pytest.raises(ValidationError, match="5 of 5 episodes fail this check: a fault of the whole dataset"):
        load_stage("validate").main(params)


def test_a_local_dataset_never_asks_the_hub(recording, tmp_path, monkeypatch) -> None:
    """An absent file of an episode the run uses is our error naming it, never LeRobot's hub fallback
    (which fails offline with advice to unset HF_HUB_OFFLINE)."""
    import lerobot.datasets.lerobot_dataset as lerobot_dataset

    from vla_pipeline.data.contract import load_contract
    from vla_pipeline.data.lerobot import make_dataset
    from vla_pipeline.errors import TrainInputError

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    for name in ("get_safe_version", "snapshot_download"):
        monkeypatch.setattr(lerobot_dataset, name, no_hub, raising=False)
    monkeypatch.setattr(lerobot_dataset.LeRobotDatasetMetadata, "pull_from_repo", no_hub)
    root = tmp_path / "ds"
    shutil.copytree(recording, root)
    missing = alter_remove_videos(root, WRIST, [3])[0]
    contract = load_contract(REPO / "contracts" / "so101_arm.yaml")
    assert len(make_dataset(root, contract, [0, 1, 2, 4], 4)) == 14 + 12 + 15 + 12  # episode 3 is not opened
    with pytest.raises(TrainInputError, match=f"episode 3: video file {missing} .* does not exist") as e:
        make_dataset(root, contract, [2, 3], 4)
    assert "HF_HUB_OFFLINE" not in str(e.value)
    (root / "meta" / "tasks.parquet").unlink()
    with pytest.raises(TrainInputError, match=r"not a complete LeRobotDataset v3.0 root: \['meta/tasks.parquet'\]"):
        make_dataset(root, contract, [0, 1], 4)


def test_frame_cache_names_a_missing_file_of_a_used_episode(recording, tmp_path) -> None:
    from vla_pipeline.data.frame_cache import FrameCacheConfig, save_frame_cache
    from vla_pipeline.errors import TrainInputError

    root = tmp_path / "ds"
    shutil.copytree(recording, root)
    missing = alter_remove_videos(root, WRIST, [4])[0]
    cfg = FrameCacheConfig(root, REPO / "contracts" / "so101_arm.yaml", tmp_path / "fc", resolution=(24, 32),
                           num_workers=0)
    with pytest.raises(TrainInputError, match=f"episode 4: video file {missing} .* does not exist"):
        save_frame_cache(cfg)
    assert not (tmp_path / "fc").exists()  # nothing half-built is left as if it were a cache
