"""`vla convert` on v2.1 recordings made by their owners' own recorders (issue 27): the real pattern
converts in one go with every problem announced with its cause, the result loads with LeRobot and
holds the source's rows and frames, each quirk alone converts or is refused with its cause, and the
source tree is byte-identical afterwards in every case."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from v21 import BLACK_CAMERA, STRAY_DATA_FILES, decode_all_frames, write_v21_recording
from vla_pipeline.cli import main

from conftest import vla
from realdata import TASKS

PLAIN = dict(chw=False, codec="libsvtav1", drop_stats=False, stray_files=False, wall_clock=False,
             drop_index_columns=False, black=())  # LeRobot v2.1's own output: no quirk
QUIRKS = {  # name: (the writer's keywords on top of PLAIN, what the conversion says about it)
    "plain": ({}, None),
    "chw": ({"chw": True}, None),
    "mp4v": ({"codec": "mpeg4"}, None),
    "black_camera": ({"black": (BLACK_CAMERA,)}, None),
    "no_stats": ({"drop_stats": True}, "meta/episodes_stats.jsonl is missing: each episode's statistics are computed"),
    "stray_files": ({"stray_files": True}, "are not part of the dataset and are left out"),
    "wall_clock": ({"wall_clock": True}, "(up to 0.0"),
    "no_index_columns": ({"drop_index_columns": True}, "have no 'task_index' column; it is added"),
    "undeclared_index_columns": ({"drop_index_columns": True, "declare_index_columns": False},
                                 "meta/info.json does not declare 'task_index'; the converted info.json does"),
    "no_tasks_jsonl": ({"drop_tasks": True}, "meta/tasks.jsonl is missing: rebuilt from the data's task_index values and the tasks of the episodes"),
    "no_episodes_jsonl": ({"drop_episodes": True}, "meta/episodes.jsonl is missing: rebuilt from the data files"),
    "task_column": ({"task_column": True}, "a 'task' column of task strings: read for the tasks, then left out"),
    "task_column_only": ({"task_column": True, "drop_index_columns": True, "drop_tasks": True, "drop_episodes": True},
                         "meta/tasks.jsonl is missing: rebuilt"),
}
REFUSED = {  # name: (keywords, the cause the error must give)
    "no_episodes_jsonl_no_task_index": ({"drop_episodes": True, "drop_index_columns": True},
                                        r"the tasks of episodes \[0, 1, 2\] cannot be told: meta/episodes.jsonl is "
                                        r"missing, and their data files have no 'task' column"),
    "no_task_information_at_all": ({"drop_episodes": True, "drop_tasks": True, "drop_index_columns": True},
                                   r"meta/tasks.jsonl is missing and cannot be rebuilt from the data: episodes "
                                   r"\[0, 1, 2\] have no task strings anywhere"),
}


def tree_state(root: Path) -> dict[str, str]:
    """Every file's sha256 and every directory, by relative path: what must not change in a source."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def convert(src: Path, out: Path) -> tuple[int, str]:
    """``vla convert src --out out`` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["convert", str(src), "--out", str(out)])
    return code, err.getvalue()


def source_rows(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(root.glob("data/*/episode_*.parquet"))], ignore_index=True)


def converted_rows(root: Path) -> pd.DataFrame:
    frames = pd.concat([pd.read_parquet(p) for p in sorted((root / "data").glob("chunk-*/file-*.parquet"))])
    return frames.sort_values("index").reset_index(drop=True)


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vla convert: warning: ")]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The real pattern (every quirk at once), converted by the command in its own process (all of its
    stderr, LeRobot's and the datasets library's logging included); (source, output, stderr, states)."""
    src = write_v21_recording(tmp_path_factory.mktemp("own_recorder") / "bimanual")
    before = tree_state(src)
    result = vla("convert", str(src), "--out", str(src.parent / "bimanual_v30"))
    assert result.returncode == 0, result.stderr
    return src, src.parent / "bimanual_v30", result.stderr, before, tree_state(src)


def test_the_real_pattern_converts_in_one_go_with_every_problem_named(recording):
    src, out, err, before, after = recording
    assert after == before and len(before) > 20  # the source is only read, stray files and empty dirs included
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name, out.name]  # nothing hidden left behind
    said = "\n".join(warnings_of(err))
    for stray in (*STRAY_DATA_FILES, "data/chunk-001/", "videos/chunk-000/observation.images.wrist/._episode_000000.mp4"):
        assert stray in said, stray
    assert "meta/episodes_stats.jsonl is missing" in said
    assert "have no 'index' column; it is added" in said and "have no 'task_index' column; it is added" in said
    assert re.search(r"timestamps are not frame_index/fps in 3 of 3 episodes .* a wall clock\); kept as they are", said)
    assert len(warnings_of(err)) == 5 and "Traceback" not in err and "Error" not in err
    assert "re-download" not in err and "complete the dataset first" not in err


def test_the_converted_recording_holds_the_source_rows(recording):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src, out, _, _, _ = recording
    dataset = LeRobotDataset("local/bimanual", root=out, video_backend="pyav")  # LeRobot loads it
    old, new = source_rows(src), converted_rows(out)
    assert len(dataset) == len(new) == len(old) == 14 + 11 + 16
    for key in ("action", "observation.state"):
        assert np.array_equal(np.stack(new[key]), np.stack(old[key])), key
        assert np.stack(new[key]).shape == (len(old), 34)
    for key in ("timestamp", "frame_index", "episode_index"):  # the wall-clock timestamps are kept
        assert np.array_equal(new[key].to_numpy(), old[key].to_numpy()), key
    assert new["index"].tolist() == list(range(len(old)))
    tasks = pd.read_parquet(out / "meta" / "tasks.parquet")
    task_of = {int(i): t for t, i in zip(tasks.index, tasks["task_index"], strict=True)}
    assert [task_of[i] for i in new["task_index"]] == [TASKS[e % 2] for e in old["episode_index"]]
    info = json.loads((out / "meta" / "info.json").read_text())
    camera = info["features"]["observation.images.front"]
    assert (camera["shape"], camera["names"]) == ([3, 24, 32], ["channel", "height", "width"])
    assert camera["info"]["video.codec"] == "mpeg4" and info["total_frames"] == len(old)


def test_the_converted_recording_gives_the_source_frames(recording):
    """Frames read through the pipeline's reader (frame i at i/fps: the timestamps are a wall clock) are
    the source's mp4 frames, the all-black episode black."""
    from vla_pipeline.data.lerobot import RunDataset

    src, out, _, _, _ = recording
    cameras = ["observation.images.front", "observation.images.wrist"]
    dataset = RunDataset(out, [0, 1, 2], cameras, video_backend="pyav")
    starts = np.cumsum([0, 14, 11])
    for ep, length in enumerate((14, 11, 16)):
        for key in cameras:
            frames = decode_all_frames(next(src.glob(f"videos/*/{key}/episode_{ep:06d}.mp4")))
            assert len(frames) == length
            for i in (0, length // 2, length - 1):
                got = (dataset[int(starts[ep]) + i][key].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
                assert np.array_equal(got, frames[i]), (ep, key, i)
                assert (got.max() < 20) == ((key, ep) == BLACK_CAMERA), (ep, key)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """name -> (source, output, exit code, stderr, source unchanged): each variant written and converted once."""
    done: dict[str, tuple] = {}

    def make(name: str, keywords: dict) -> tuple:
        if name not in done:
            src = write_v21_recording(tmp_path_factory.mktemp(name) / name, **{**PLAIN, **keywords})
            before = tree_state(src)
            code, err = convert(src, src.parent / f"{name}_v30")
            done[name] = (src, src.parent / f"{name}_v30", code, err, tree_state(src) == before)
        return done[name]

    return make


@pytest.mark.parametrize("name", sorted(QUIRKS))
def test_each_quirk_alone_converts(name, variants):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    keywords, said = QUIRKS[name]
    src, out, code, err, unchanged = variants(name, keywords)
    assert code == 0 and unchanged, err
    assert (said in err) if said else not warnings_of(err), err
    dataset = LeRobotDataset(f"local/{name}", root=out, video_backend="pyav")
    first = dataset[0]  # frame 0 is at 0 s whatever the clock, so LeRobot's own lookup reads it
    assert tuple(first["observation.images.front"].shape) == (3, 24, 32) and first["action"].shape == (34,)
    old, new = source_rows(src), converted_rows(out)
    assert np.array_equal(np.stack(new["action"]), np.stack(old["action"]))
    assert new["index"].tolist() == list(range(len(old))) and set(new.columns) == set(dataset.hf_dataset.column_names)
    tasks = pd.read_parquet(out / "meta" / "tasks.parquet")
    task_of = {int(i): t for t, i in zip(tasks.index, tasks["task_index"], strict=True)}
    assert [task_of[i] for i in new["task_index"]] == [TASKS[e % 2] for e in old["episode_index"]]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_cannot_be_rebuilt_is_refused_with_its_cause(name, variants):
    keywords, cause = REFUSED[name]
    src, out, code, err, unchanged = variants(name, keywords)
    assert code == 1 and unchanged and not out.exists() and "Traceback" not in err
    assert re.search(cause, err), err
    assert sorted(p.name for p in src.parent.iterdir()) == [src.name]


def _deep(value):
    """A parquet cell of nested arrays (images' (3, 1, 1) statistics) as one numeric array."""
    return np.array([_deep(v) for v in value]) if isinstance(value, np.ndarray) and value.dtype == object else value


def test_computed_stats_are_lerobots(variants):
    """Statistics computed for a recording without meta/episodes_stats.jsonl are what LeRobot's writer
    computed for it: vectors to float precision; cameras' mean, std and count within the error of two
    lossy encodings (their min and max are single pixels, which the codec moves most)."""
    _, plain, *_ = variants("plain", QUIRKS["plain"][0])
    _, computed, *_ = variants("no_stats", QUIRKS["no_stats"][0])
    written, ours = (pd.read_parquet(next((root / "meta" / "episodes").glob("*/*.parquet"))) for root in (plain, computed))
    columns = [c for c in written.columns if c.startswith("stats/")]
    assert len(columns) == 9 * 5 and set(columns) <= set(ours.columns)  # 9 features x min/max/mean/std/count
    for column in columns:
        if "images" in column and column.rsplit("/", 1)[1] in ("min", "max"):
            continue
        a, b = (np.array([_deep(v) for v in table[column]], dtype=float) for table in (written, ours))
        close = dict(atol=0.03) if "images" in column else dict(rtol=1e-6, atol=1e-7)
        assert np.allclose(a, b, **close), (column, np.abs(a - b).max())


def test_every_problem_is_reported_at_once(tmp_path):
    """Three problems the conversion cannot fix and one it can: one error names the three, each with
    its cause; the warning is printed too; nothing is written and the source is unchanged."""
    src = write_v21_recording(tmp_path / "broken", **{**PLAIN, "drop_stats": True})
    next(src.glob("videos/*/observation.images.wrist/episode_000002.mp4")).unlink()
    lines = (src / "meta" / "episodes.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    (src / "meta" / "episodes.jsonl").write_text("\n".join([lines[0], json.dumps({**row, "length": 99}), lines[2]]))
    (tmp_path / "out").mkdir()
    before = tree_state(src)
    code, err = convert(src, tmp_path / "out")
    assert code == 1 and tree_state(src) == before and list((tmp_path / "out").iterdir()) == []
    assert "cannot be converted; 3 problems, each with its cause:" in err, err
    assert re.search(r"1\. .*no observation.images.wrist video file for episode 2 of 3", err)
    assert re.search(r"2\. episode 1: meta/episodes.jsonl says 99 frames, its data file .* has 11 rows", err)
    assert re.search(r"3\. .*out already exists", err)
    assert "warning: meta/episodes_stats.jsonl is missing" in err and "Traceback" not in err


def test_damaged_meta_lines_are_named(variants, tmp_path):
    """A broken line in a meta file is named with its line number and what to do, next to the other problems."""
    import shutil

    plain, *_ = variants("plain", QUIRKS["plain"][0])
    src = shutil.copytree(plain, tmp_path / "damaged")
    stats = (src / "meta" / "episodes_stats.jsonl").read_text().splitlines()
    (src / "meta" / "episodes_stats.jsonl").write_text("\n".join([stats[0], stats[1][:40], stats[2]]) + "\n")
    (src / "meta" / "tasks.jsonl").write_text('{"task_index": 0, "task": "pick up the cube"}\n{"task_index": 1}\n')
    before = tree_state(src)
    code, err = convert(src, tmp_path / "out")
    assert code == 1 and tree_state(src) == before and not (tmp_path / "out").exists()
    assert re.search(r"1\. .*meta/tasks.jsonl, line 2: no task of type str; repair the line, or remove the file", err)
    assert re.search(r"2\. .*meta/episodes_stats.jsonl, line 2: not valid JSON \(.*\); repair the line, or remove", err)
    assert "2 problems" in err and "Traceback" not in err
