"""LeRobot's previous dataset format (v2.1): recognise it, say how to convert it, and convert it.

The pipeline reads LeRobotDataset v3.0 only. LeRobot 0.4.2 ships a v2.1 -> v3.0 converter,
``python -m lerobot.datasets.v30.convert_dataset_v21_to_v30``, but as a command it is unfit here:

* it converts *in place*: the original is moved to ``<root>_old`` and the result takes its name
  (a DVC-tracked directory changes under DVC), and an existing ``<root>_v30`` is deleted;
* ``--root`` is the *parent* of the dataset (it reads ``<root>/<repo_id>``); given the dataset
  folder itself, as its docstring says, it finds nothing and downloads from the hub;
* ``--push-to-hub`` defaults to true (deletes files and tags on the hub);
* at a data-file rollover (> 100 MB of parquet) the first episode of the new file keeps the
  previous file's index in ``meta/episodes`` (huggingface/lerobot#2401, fixed after 0.4.2).

``vla convert SRC --out DST`` therefore calls the converter's own functions (info, tasks, data,
videos, episodes metadata) with ``SRC`` as the input and a fresh directory as the output, fixes the
data file indices, loads the result back with LeRobot, and only then names it ``DST``. ``SRC`` is
only read. Nothing touches the network.

This module imports only the standard library at import time (the validator imports it).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import uuid
import warnings
from pathlib import Path

from vla_pipeline.data.tables import SUPPORTED_CODEBASE
from vla_pipeline.errors import VlaError

V21 = "v2.1"
LEGACY_FILES = ("meta/episodes.jsonl", "meta/tasks.jsonl", "meta/episodes_stats.jsonl")
V21_INFO_KEYS = ("fps", "features", "total_episodes", "total_frames", "total_chunks", "total_videos", "video_path")


class ConversionError(VlaError):
    """A dataset cannot be converted as asked (wrong format, incomplete, or the output exists)."""


# ----------------------------------------------------------------------------- detection and hint
def codebase_version(root: Path) -> str | None:
    """``codebase_version`` from ``root/meta/info.json``; None when the file is missing or unreadable."""
    try:
        info = json.loads((Path(root) / "meta" / "info.json").read_text())
    except (OSError, ValueError):
        return None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    return str(version) if version is not None else None


def detect_v21(root: Path) -> bool:
    """True when ``root`` is a LeRobot dataset in the previous format: info.json says v2.x."""
    version = codebase_version(root)
    return version is not None and version.startswith("v2.")


def default_output(root: Path) -> Path:
    """Where the hint suggests writing the converted copy: ``<root>_v30`` beside ``root``."""
    root = Path(root) if Path(root).name else Path(root).resolve()
    return root.with_name(f"{root.name}_v30")


def conversion_command(root: Path, out: Path | None = None) -> str:
    """The exact command that converts ``root`` offline into a new directory."""
    out = default_output(root) if out is None else Path(out)
    return f"vla convert {shlex.quote(str(root))} --out {shlex.quote(str(out))}"


def format_conversion_hint(root: Path) -> str:
    """One message for a dataset that is not v3.0: what was found, the conversion command, what next."""
    root = Path(root)
    version = codebase_version(root)
    out = default_output(root)
    found = f"{root / 'meta' / 'info.json'}: codebase_version {version!r}"
    then = (f"then point dataset.root (params.yaml) at {out} and track it with `dvc add {shlex.quote(str(out))}`; "
            f"{root} is left as it is")
    if version == V21:
        return (f"{found} is LeRobot's previous dataset format; the pipeline reads {SUPPORTED_CODEBASE} only. Convert it offline "
                f"into a new directory: `{conversion_command(root)}`; {then}")
    if version is not None and version.startswith("v2."):
        return (f"{found} is an older LeRobot dataset format; the pipeline reads {SUPPORTED_CODEBASE} only, and `vla convert` "
                f"reads {V21} (it needs meta/episodes_stats.jsonl). Convert it to {V21} first with LeRobot "
                f"0.3.x (python -m lerobot.datasets.v21.convert_dataset_v20_to_v21), then run "
                f"`{conversion_command(root)}`; {then}")
    if version == SUPPORTED_CODEBASE:
        return f"{found}: LeRobot {SUPPORTED_CODEBASE}, the format the pipeline reads; no conversion needed"
    if not (root / "meta" / "info.json").is_file():
        return (f"{root}: no meta/info.json, not the root of a LeRobot dataset (the folder with meta/, data/, "
                f"videos/); point dataset.root at the folder that holds meta/info.json")
    return (f"{found}; the pipeline reads LeRobot {SUPPORTED_CODEBASE} datasets only and `vla convert` converts {V21} only; "
            f"re-export the dataset with LeRobot 0.4.2")


# ----------------------------------------------------------------------------- conversion
def _say(message: str) -> None:
    print(f"vla convert: {message}", file=sys.stderr, flush=True)


def _check_source(src: Path) -> dict:
    """Refuse, with one clear message, anything LeRobot's converter would fail on half-way."""
    if not src.is_dir():
        raise ConversionError(f"{src}: no such directory; pass the root of a LeRobot {V21} dataset "
                              f"(the folder with meta/, data/, videos/)")
    info_path = src / "meta" / "info.json"
    if not info_path.is_file():
        raise ConversionError(f"{src} is not a LeRobot dataset: {info_path} not found; pass the dataset's root "
                              f"(the folder with meta/, data/, videos/)")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise ConversionError(f"{info_path} is not valid JSON ({e}); restore it from the dataset's origin") from None
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version == SUPPORTED_CODEBASE:
        raise ConversionError(f"{src} is already a LeRobot {SUPPORTED_CODEBASE} dataset (meta/info.json); nothing to convert: "
                              f"point dataset.root at it as it is")
    if version != V21:
        raise ConversionError(format_conversion_hint(src))
    missing = [k for k in V21_INFO_KEYS if k not in info]
    missing += [f for f in LEGACY_FILES if not (src / f).is_file()]
    if missing:
        raise ConversionError(f"{src}: incomplete {V21} dataset, missing {', '.join(missing)}; re-download or "
                              f"re-export it with its meta/ files")

    num_episodes = int(info["total_episodes"])
    expected = [f"episode_{i:06d}" for i in range(num_episodes)]
    episodes = [json.loads(line) for line in (src / LEGACY_FILES[0]).read_text().splitlines() if line.strip()]
    indices = sorted(int(e["episode_index"]) for e in episodes)
    if indices != list(range(num_episodes)):
        raise ConversionError(
            f"{src / LEGACY_FILES[0]}: episode indices must be 0..{num_episodes - 1} (total_episodes "
            f"{num_episodes}), found {len(indices)} from {indices[:1]} to {indices[-1:]}; LeRobot's converter "
            f"numbers episodes by file order, so a dataset with gaps would be mislabelled")
    layouts = {"data": sorted(src.glob("data/*/*.parquet"))}
    layouts.update({f"videos of {k}": sorted(src.glob(f"videos/*/{k}/*.mp4"))
                    for k, f in info["features"].items() if f.get("dtype") == "video"})
    for what, paths in layouts.items():
        stems = [p.stem for p in paths]
        if stems != expected:
            extra, lacking = sorted(set(stems) - set(expected)), sorted(set(expected) - set(stems))
            raise ConversionError(
                f"{src}: {len(paths)} {what} files for {num_episodes} episodes (missing {lacking[:5]}, unexpected "
                f"{extra[:5]}); a {V21} dataset has one file per episode named episode_NNNNNN, as in "
                f"{info.get('data_path')}; complete the dataset first")
    return info


def _check_output(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        raise ConversionError(f"{dst} already exists; vla convert writes a new directory only: pass another "
                              f"--out, or remove {dst} yourself if it is a stale conversion")
    if dst.resolve().is_relative_to(src.resolve()):
        raise ConversionError(f"--out {dst} is inside the source {src}; the source must stay unchanged: "
                              f"write beside it, e.g. --out {default_output(src)}")


def _fix_data_file_indices(new_root: Path, episodes_metadata: list[dict]) -> None:
    """Point each episode at the data file that holds its rows (LeRobot 0.4.2 is stale at a rollover)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    where: dict[int, tuple[int, int]] = {}
    for path in sorted((new_root / "data").glob("chunk-*/file-*.parquet")):
        chunk, file = int(re.search(r"\d+", path.parent.name)[0]), int(re.search(r"\d+", path.stem)[0])
        column = pq.read_table(path, columns=["episode_index"])["episode_index"]
        where.update({int(ep): (chunk, file) for ep in pc.unique(column).to_pylist()})
    for meta in episodes_metadata:
        if meta["episode_index"] not in where:
            raise ConversionError(f"converted data files under {new_root / 'data'} hold no rows of episode "
                                  f"{meta['episode_index']}; the source's data parquet files may be incomplete")
        meta["data/chunk_index"], meta["data/file_index"] = where[meta["episode_index"]]


def _verify(root: Path, info: dict, src: Path) -> None:
    """Load the converted dataset with LeRobot and read the first and last frame of every episode."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from tqdm import tqdm

    repo_id = f"local/{root.name}"
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    lines = (src / LEGACY_FILES[0]).read_text().splitlines()
    lengths = {int(e["episode_index"]): int(e["length"]) for e in map(json.loads, filter(str.strip, lines))}
    got = dict(zip(meta.episodes["episode_index"], meta.episodes["length"], strict=True))
    if (meta.total_episodes, meta.total_frames, got) != (info["total_episodes"], info["total_frames"], lengths):
        raise ConversionError(f"the converted dataset has {meta.total_episodes} episodes and {meta.total_frames} "
                              f"frames, the source {info['total_episodes']} and {info['total_frames']}")
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    if len(dataset) != info["total_frames"]:
        raise ConversionError(f"the converted dataset loads {len(dataset)} frames, the source has "
                              f"{info['total_frames']}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The video decoding and encoding capabilities of torchvision")
        for ep in tqdm(range(meta.total_episodes), desc="verify (first and last frame per episode)", unit="ep"):
            start, end = meta.episodes[ep]["dataset_from_index"], meta.episodes[ep]["dataset_to_index"]
            for i in (start, end - 1):
                if int(dataset[i]["episode_index"]) != ep:
                    raise ConversionError(f"the converted dataset's frame {i} belongs to episode "
                                          f"{int(dataset[i]['episode_index'])}, expected {ep}")


def convert_v21_to_v30(src: Path, dst: Path, *, data_file_size_in_mb: float | None = None,
                       video_file_size_in_mb: float | None = None, verify: bool = True) -> Path:
    """Convert the v2.1 dataset at ``src`` into a new v3.0 dataset at ``dst`` (which must not exist).

    Uses LeRobot 0.4.2's converter functions, offline; ``src`` is only read. The output is built in
    a hidden directory beside ``dst``, loaded back with LeRobot (``verify``) and then renamed to
    ``dst``, so ``dst`` exists only as a complete, loadable dataset.
    """
    src, dst = Path(src), Path(dst)
    info = _check_source(src)
    _check_output(src, dst)

    from lerobot.datasets.utils import DEFAULT_DATA_FILE_SIZE_IN_MB, DEFAULT_VIDEO_FILE_SIZE_IN_MB
    from lerobot.datasets.v30 import convert_dataset_v21_to_v30 as lerobot_convert

    data_mb = DEFAULT_DATA_FILE_SIZE_IN_MB if data_file_size_in_mb is None else data_file_size_in_mb
    video_mb = DEFAULT_VIDEO_FILE_SIZE_IN_MB if video_file_size_in_mb is None else video_file_size_in_mb
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = dst.parent / f".{dst.name}.converting-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    _say(f"{src} ({V21}, {info['total_episodes']} episodes, {info['total_frames']} frames) -> {dst} ({SUPPORTED_CODEBASE}); "
         f"working in {work}")
    try:
        _say("1/5 info and tasks")
        lerobot_convert.convert_info(src, work, data_mb, video_mb)
        lerobot_convert.convert_tasks(src, work)
        _say("2/5 data files")
        episodes_metadata = lerobot_convert.convert_data(src, work, data_mb)
        _fix_data_file_indices(work, episodes_metadata)
        _say("3/5 videos (stream copy, no re-encoding)")
        videos_metadata = lerobot_convert.convert_videos(src, work, video_mb)
        _say("4/5 episodes metadata and stats")
        lerobot_convert.convert_episodes_metadata(src, work, episodes_metadata, videos_metadata)
        if verify:
            _say("5/5 loading the result with LeRobot")
            _verify(work, info, src)
        work.rename(dst)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, (VlaError, KeyboardInterrupt)):
            raise
        if isinstance(e, Exception):
            raise ConversionError(f"converting {src} failed: {type(e).__name__}: {e}; {src} is unchanged and "
                                  f"nothing was written to {dst}") from e
        raise
    _say(f"done: {dst}")
    return dst
