"""Generated LeRobot datasets spanning what real writers do, and the user's whole path through each.

A :class:`Variant` picks one value per axis: format version (v3.0, or v2.1 from its owner's own
recorder, converted by ``vla convert``), camera declaration (channel-last or channel-first), storage
(video or image), codec (av1, h264, mpeg4/mp4v), one video file per episode or chunked files,
portrait or landscape frames, wall-clock timestamps, stray files, missing ``index``/``task_index``
columns, task strings in a bare column, absent stats, a bimanual vector whose arm is not at the
first indices, integer servo ticks. :func:`draw_variants` draws them from a seed: the first ones
switch each quirk on alone (so any sample covers every axis), the rest combine them at random.

:func:`run_variant` walks the user's path (``vla convert`` for v2.1, ``vla contract init``, the
``validate`` stage with its dry run, then norms, frame_cache, train for 2 steps and evaluate, each
as DVC runs it) and returns what happened. The invariant (``tests/e2e/test_variants.py``): either
validation (or conversion) refuses naming the variant's real cause, or every stage runs and the dry
run held the decode and frame-cache paths to the source frames.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path

from realdata import (
    BIMANUAL_NAMES,
    CODECS,
    Recording,
    alter_declare_channel_first,
    alter_drop_columns,
    alter_drop_stats,
    alter_reencode_videos,
    alter_stray_files,
    alter_tasks_in_index_column,
    alter_wall_clock_timestamps,
    write_recording,
)

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
LENGTHS = (13, 11, 14, 12)


@dataclass(frozen=True)
class Variant:
    version: str = "v3.0"  # v3.0 | v2.1 (converted with vla convert)
    channel_first: bool = False  # cameras declared [3, H, W] with names [channel, height, width]
    storage: str = "video"  # video | image
    codec: str = "av1"  # av1 | h264 | mpeg4 (OpenCV's mp4v)
    per_episode_files: bool = False  # one video file per episode (v3.0 packs them by default)
    portrait: bool = False  # frames taller than wide
    wall_clock: bool = False
    stray_files: bool = False
    no_index_columns: bool = False  # no `index` and `task_index` columns in the data files
    bare_tasks: bool = False  # tasks.parquet keeps its strings in a bare __index_level_0__ column (v3.0)
    no_stats: bool = False  # no stats files
    bimanual: bool = False  # 34-dim vectors; the contract takes the right arm, not at the first indices
    ticks: bool = False  # raw servo encoder ticks (int32, 0..4095)
    seed: int = 0

    @property
    def name(self) -> str:
        on = [f.name if f.type == "bool" else f"{f.name}={getattr(self, f.name)}" for f in fields(self)
              if f.name != "seed" and getattr(self, f.name) != f.default]
        return "-".join(on) or "plain"

    def expected_refusal(self) -> str | None:
        """What validation must name when the run cannot work on this variant; None: it must work."""
        if self.version == "v3.0" and self.no_index_columns:
            return "lacks columns ['index'"
        return None


AXES = {"version": ["v3.0", "v2.1"], "channel_first": [False, True], "storage": ["video", "image"],
        "codec": ["av1", "h264", "mpeg4"], "per_episode_files": [False, True], "portrait": [False, True],
        "wall_clock": [False, True], "stray_files": [False, True], "no_index_columns": [False, True],
        "bare_tasks": [False, True], "no_stats": [False, True], "bimanual": [False, True], "ticks": [False, True]}


def _fit(v: Variant) -> Variant:
    """Drop combinations no writer makes: a v2.1 set from our recorder stores videos; its tasks are jsonl."""
    if v.version == "v2.1":
        v = replace(v, storage="video", bare_tasks=False, per_episode_files=False)
    if v.storage == "image":
        v = replace(v, codec="av1", per_episode_files=False)
    return v


def draw_variants(n: int, seed: int) -> list[Variant]:
    """``n`` variants: the plain one, each quirk alone, then random combinations drawn from ``seed``."""
    alone = [Variant()] + [_fit(replace(Variant(), **{axis: value})) for axis, values in AXES.items()
                           for value in values[1:]]
    rng = random.Random(seed)
    drawn = []
    while len(alone) + len(drawn) < n:
        drawn.append(_fit(Variant(**{axis: rng.choice(values) for axis, values in AXES.items()},
                                  seed=rng.randrange(1 << 16))))
    return (alone + drawn)[:n]


def recording_of(v: Variant) -> Recording:
    names = BIMANUAL_NAMES if v.bimanual else Recording().names
    height, width = (40, 32) if v.portrait else (24, 32)  # SVT-AV1 (LeRobot's writer) fails below 32 wide
    return Recording(names=names, lengths=LENGTHS, height=height, width=width, use_videos=v.storage == "video",
                     ticks=v.ticks, one_video_file_per_episode=v.per_episode_files, seed=v.seed,
                     robot_type="bi_so101_follower" if v.bimanual else "so101_follower")


def write_variant(root: Path, v: Variant) -> Path:
    """The dataset as its writer leaves it (for v2.1: the v2.1 directory, before conversion)."""
    rec = recording_of(v)
    if v.version == "v2.1":
        from v21 import write_v21_recording

        return write_v21_recording(root, rec=rec, chw=v.channel_first, codec=CODECS[v.codec], drop_stats=v.no_stats,
                                   stray_files=v.stray_files, wall_clock=v.wall_clock,
                                   drop_index_columns=v.no_index_columns, black=())
    write_recording(root, rec)
    if v.storage == "video" and v.codec != "av1":
        alter_reencode_videos(root, v.codec)
    if v.channel_first:
        alter_declare_channel_first(root)
    if v.wall_clock:
        alter_wall_clock_timestamps(root, jitter=(0.8 / rec.fps, 1.3 / rec.fps), seed=v.seed)
    if v.no_index_columns:
        alter_drop_columns(root)
    if v.bare_tasks:
        alter_tasks_in_index_column(root)
    if v.no_stats:
        alter_drop_stats(root)
    if v.stray_files:
        alter_stray_files(root)
    return root


@dataclass
class Outcome:
    refused: str | None  # the message of the refusal (conversion or validation), None when the run went through
    report: dict | None  # the validation report
    stages: tuple[str, ...] = ()  # the stages that ran to the end


def run_variant(v: Variant, work: Path, *, cache: bool, monkeypatch) -> Outcome:
    """convert (v2.1) -> contract init -> validate (with its dry run) -> norms, frame_cache, train, evaluate."""
    root = write_variant(work / ("recorded" if v.version == "v2.1" else "ds"), v)
    return run_user_path(root, work, v2_1=v.version == "v2.1", joints="right.*" if v.bimanual else None, cache=cache,
                         monkeypatch=monkeypatch)


def run_user_path(root: Path, work: Path, *, v2_1: bool, joints: str | None, cache: bool, monkeypatch,
                  exclude: tuple[int, ...] = ()) -> Outcome:
    """What a user does with a recording at ``root``: ``vla convert`` (a v2.1 one), ``vla contract init``
    (``--joints``), then the stages as DVC runs them, excluding ``exclude``."""
    from pipeline import STAGES, load_stage, make_params
    from vla_pipeline.cli import main
    from vla_pipeline.errors import VlaError

    if v2_1:
        converted = work / "ds"
        if main(["convert", str(root), "--out", str(converted)]) != 0:
            return Outcome("vla convert refused", None)
        root = converted
    contract = work / "contract.yaml"
    if main(["contract", "init", str(root), "--out", str(contract), *(["--joints", joints] if joints else [])]) != 0:
        return Outcome("vla contract init refused", None)
    params = make_params(root, work / "run", cache, list(exclude), contract=contract)
    params["evaluate"]["videos"] = False
    done = []
    try:
        for name in STAGES[:-1]:
            load_stage(name).main(params)
            done.append(name)
        monkeypatch.setattr("sys.argv", ["stages/evaluate.py", "best"])
        load_stage("evaluate").main(params)
        done.append("evaluate")
    except VlaError as e:
        return Outcome(str(e), _report(params), tuple(done))
    return Outcome(None, _report(params), tuple(done))


def _report(params: dict) -> dict | None:
    path = Path(params["validate"]["report"])
    return json.loads(path.read_text()) if path.is_file() else None
