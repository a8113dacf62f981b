"""`vla trim`: a copy with the suggested idle heads and tails cut, written by LeRobot's writer; the
source is only read."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from vla_pipeline.data.trim import parse_trims, trim_dataset
from vla_pipeline.errors import ConfigError
from vla_pipeline.provenance import compute_dataset_fingerprint
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

from conftest import CONTRACT, vla


def _episode(ds: LeRobotDataset, e: int) -> range:
    return range(int(ds.meta.episodes["dataset_from_index"][e]), int(ds.meta.episodes["dataset_to_index"][e]))


def test_trim_keeps_the_named_frames_and_never_writes_the_source(demo_dataset, tmp_path) -> None:
    before = compute_dataset_fingerprint(demo_dataset)
    out = trim_dataset(demo_dataset, tmp_path / "trimmed", {1: (3, 12), 4: (0, 9)}, progress=lambda _: None)
    assert compute_dataset_fingerprint(demo_dataset) == before
    src = LeRobotDataset("demo", root=demo_dataset, video_backend="pyav")
    new = LeRobotDataset("demo", root=out, video_backend="pyav")
    assert new.meta.total_episodes == src.meta.total_episodes
    for e in range(src.meta.total_episodes):
        first, last = {1: (3, 12), 4: (0, 9)}.get(e, (0, len(_episode(src, e)) - 1))
        kept = [src.hf_dataset[i] for i in _episode(src, e)][first:last + 1]
        got = [new.hf_dataset[i] for i in _episode(new, e)]
        assert len(got) == len(kept), f"episode {e}"
        np.testing.assert_array_equal(np.stack([g["action"] for g in got]), np.stack([k["action"] for k in kept]))
        assert [int(g["frame_index"]) for g in got] == list(range(len(kept)))
    a, b = src[_episode(src, 1)[3]], new[_episode(new, 1)[0]]
    assert a["task"] == b["task"]
    for key in src.meta.camera_keys:  # decoded, encoded again: close, not bit-equal
        assert float((a[key] - b[key]).abs().mean()) < 0.03


def test_trim_refuses_to_write_over_or_inside_the_source(demo_dataset, tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        trim_dataset(demo_dataset, tmp_path / "full", {0: (0, 5)})
    with pytest.raises(ConfigError, match="inside the source"):
        trim_dataset(demo_dataset, demo_dataset / "trimmed", {0: (0, 5)})
    with pytest.raises(ConfigError, match=r"suggested_trims\[3\]"):
        parse_trims({"3": [9, 2]})


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_vla_trim_reads_the_reports_suggestions(demo_dataset, tmp_path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(demo_dataset, copy)
    report = tmp_path / "report.json"
    validate_dataset(ValidateConfig(copy, CONTRACT, report))
    done = vla("trim", str(copy), "--report", str(report), "--out", str(tmp_path / "none"))
    assert done.returncode == 0 and "suggests no trims" in done.stdout, done.stderr
    doc = json.loads(report.read_text())
    doc["suggested_trims"] = {"2": [1, 8]}
    report.write_text(json.dumps(doc))
    done = vla("trim", str(copy), "--report", str(report), "--contract", str(CONTRACT), "--out", str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr
    assert LeRobotDataset("t", root=tmp_path / "t", video_backend="pyav").meta.episodes["length"][2] == 8
