"""LeRobot v2.1 datasets: recognised, refused with the exact offline command, and converted by
`vla convert` into a new v3.0 directory with the same frames, the source left byte-identical."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from v21 import decode_all_frames, write_v21_from_v30
from vla_pipeline.cli import main
from vla_pipeline.data.convert import ConversionError, detect_v21, format_conversion_hint
from vla_pipeline.data.convert_run import convert_v21_to_v30

from conftest import vla


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def data(root: Path) -> pd.DataFrame:
    frames = pd.concat([pd.read_parquet(f) for f in sorted((root / "data").glob("**/*.parquet"))])
    return frames.sort_values("index").reset_index(drop=True)


def episodes(root: Path) -> pd.DataFrame:
    files = sorted((root / "meta" / "episodes").glob("**/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]).sort_values("episode_index").reset_index(drop=True)


def video_keys(root: Path) -> list[str]:
    info = json.loads((root / "meta" / "info.json").read_text())
    return [k for k, f in info["features"].items() if f["dtype"] == "video"]


@pytest.fixture(scope="module")
def v21_dataset(demo_dataset, tmp_path_factory) -> Path:
    return write_v21_from_v30(demo_dataset, tmp_path_factory.mktemp("v21") / "lekiwi")


@pytest.fixture(scope="module")
def converted(v21_dataset):
    """Run the command the hint gives, exactly; returns (output dir, source hash before, after)."""
    hint = format_conversion_hint(v21_dataset)
    command = shlex.split(re.search(r"`(vla convert [^`]+)`", hint)[1])
    before = tree_hash(v21_dataset)
    assert main(command[1:]) == 0
    return Path(command[command.index("--out") + 1]), before, tree_hash(v21_dataset)


def test_v21_is_detected_and_the_hint_gives_the_command(v21_dataset, demo_dataset, tmp_path):
    from lerobot.datasets.backward_compatibility import BackwardCompatibilityError
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    with pytest.raises(BackwardCompatibilityError):  # LeRobot itself sees the fixture as v2.1
        LeRobotDatasetMetadata("local/lekiwi", root=v21_dataset)
    assert detect_v21(v21_dataset)
    assert not detect_v21(demo_dataset) and not detect_v21(tmp_path / "missing") and not detect_v21(tmp_path)
    hint = format_conversion_hint(v21_dataset)
    assert "codebase_version 'v2.1'" in hint and str(v21_dataset) in hint and "v3.0" in hint
    assert f"`vla convert {v21_dataset} --out {v21_dataset}_v30`" in hint
    assert f"dvc add {v21_dataset}_v30" in hint and "\n" not in hint
    assert "no conversion needed" in format_conversion_hint(demo_dataset)
    assert "no meta/info.json" in format_conversion_hint(tmp_path)

    v20 = tmp_path / "old ds"  # a v2.0 one is recognised too; its hint says what to do first, quoted paths
    (v20 / "meta").mkdir(parents=True)
    (v20 / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.0", "features": {}}))
    assert detect_v21(v20)
    assert "convert_dataset_v20_to_v21" in format_conversion_hint(v20)
    assert f"vla convert '{v20}' --out '{v20}_v30'" in format_conversion_hint(v20)


def test_convert_keeps_every_frame(converted, v21_dataset, demo_dataset):
    out, _, _ = converted
    info = json.loads((out / "meta" / "info.json").read_text())
    original_info = json.loads((demo_dataset / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert {k: info[k] for k in ("fps", "total_episodes", "total_frames", "total_tasks")} == \
           {k: original_info[k] for k in ("fps", "total_episodes", "total_frames", "total_tasks")}
    assert info["features"].keys() == original_info["features"].keys()

    new, old = data(out), data(demo_dataset)
    assert list(new.columns) == list(old.columns) and len(new) == len(old)
    for key in ("action", "observation.state"):
        assert np.array_equal(np.stack(new[key].to_numpy()), np.stack(old[key].to_numpy())), key
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert np.array_equal(new[key].to_numpy(), old[key].to_numpy()), key

    new_eps, old_eps = episodes(out), episodes(demo_dataset)
    for key in ("episode_index", "length", "dataset_from_index", "dataset_to_index"):
        assert new_eps[key].tolist() == old_eps[key].tolist(), key
    assert [list(t) for t in new_eps["tasks"]] == [list(t) for t in old_eps["tasks"]]
    assert pd.read_parquet(out / "meta" / "tasks.parquet").equals(pd.read_parquet(demo_dataset / "meta" / "tasks.parquet"))

    for key in video_keys(demo_dataset):  # videos are stream-copied: the v2.1 episodes' frames, in order
        (file,) = sorted((out / "videos" / key).glob("**/*.mp4"))
        frames = decode_all_frames(file)
        assert len(frames) == info["total_frames"]
        episode_files = sorted((v21_dataset / "videos").glob(f"*/{key}/*.mp4"))
        assert np.array_equal(np.stack(frames), np.concatenate([decode_all_frames(f) for f in episode_files]))
        starts = np.round(new_eps[f"videos/{key}/from_timestamp"].to_numpy() * info["fps"]).astype(int)
        assert starts.tolist() == new_eps["dataset_from_index"].tolist()


def test_convert_leaves_the_source_unchanged(converted, v21_dataset):
    out, before, after = converted
    assert after == before and len(before) > 10
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([v21_dataset.name, out.name])  # no partials


def test_converted_dataset_loads_with_lerobot(converted):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, _, _ = converted
    dataset = LeRobotDataset("local/converted", root=out, video_backend="pyav")
    last = dataset[len(dataset) - 1]
    assert int(last["episode_index"]) == dataset.meta.total_episodes - 1
    for key in video_keys(out):
        assert tuple(last[key].shape) == (3, 32, 40)


def test_data_file_indices_are_right_at_a_file_rollover(v21_dataset, tmp_path):
    """LeRobot 0.4.2 leaves the first episode of a new data file pointing at the previous file."""
    out = convert_v21_to_v30(v21_dataset, tmp_path / "small_files", data_file_size_in_mb=0.008,
                             video_file_size_in_mb=0.02)
    files = sorted((out / "data").glob("chunk-*/file-*.parquet"))
    assert len(files) > 1 and len(list((out / "videos").glob("*/*/file-*.mp4"))) > len(video_keys(out))
    holds = {tuple(int(n) for n in re.findall(r"\d+", f.relative_to(out).as_posix())):
             sorted(set(pd.read_parquet(f)["episode_index"])) for f in files}
    eps = episodes(out)
    points: dict[tuple[int, int], list[int]] = {}
    for ep, chunk, file in zip(eps["episode_index"], eps["data/chunk_index"], eps["data/file_index"], strict=True):
        points.setdefault((int(chunk), int(file)), []).append(int(ep))
    assert points == holds


def test_a_failed_conversion_leaves_nothing_behind(v21_dataset, tmp_path, monkeypatch):
    from lerobot.datasets.v30 import convert_dataset_v21_to_v30 as lerobot_convert

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(lerobot_convert, "convert_videos", broken)
    before = tree_hash(v21_dataset)
    with pytest.raises(ConversionError, match="disk full.*unchanged"):
        convert_v21_to_v30(v21_dataset, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [] and tree_hash(v21_dataset) == before


def _incomplete(v21: Path, tmp: Path) -> Path:
    copy = shutil.copytree(v21, tmp / "incomplete")
    next((copy / "videos").glob("*/*/episode_000002.mp4")).unlink()
    return copy


@pytest.mark.parametrize("case, expected", [
    ("exists", "already exists"),
    ("v30", "already a LeRobot v3.0 dataset"),
    ("not_a_dataset", "is not a LeRobot dataset"),
    ("missing", "no such directory"),
    ("inside", "is inside the source"),
    ("incomplete", r"no observation\.images\.\w+ video file for episode 2 of 6 \(total_episodes"),
])
def test_convert_refuses_cleanly(case, expected, v21_dataset, demo_dataset, tmp_path, capsys):
    src, out = v21_dataset, tmp_path / "out"
    if case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    src = {"v30": demo_dataset, "not_a_dataset": tmp_path / "empty", "missing": tmp_path / "nope",
           "incomplete": _incomplete(v21_dataset, tmp_path) if case == "incomplete" else None}.get(case, src)
    if case == "inside":
        out = v21_dataset / "v30"
    before = tree_hash(src) if src.is_dir() else None
    assert main(["convert", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(expected, err) and "Traceback" not in err
    assert (tree_hash(src) if src.is_dir() else None) == before
    assert (out / "keep.txt").read_text() == "mine" if case == "exists" else not out.exists()


def test_convert_error_in_a_real_process(demo_dataset, tmp_path):
    result = vla("convert", str(demo_dataset), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "already a LeRobot v3.0 dataset" in result.stderr and not (tmp_path / "out").exists()
