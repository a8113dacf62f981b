"""``vla convert SRC --out DST``: a LeRobot v2.1 dataset into a new v3.0 directory, with LeRobot 0.4.2's
own converter functions, the source only read (why not LeRobot's command: ``convert.py``).

1. read the whole source (``convert_source.read_source``) and report every problem at once: the ones
   the conversion fixes as warnings, the ones it cannot as one :class:`ConversionError` listing each
   with its cause;
2. write the view LeRobot's converter reads (``convert_stage.write_view``: links to the source's
   episode files, columns and meta files added, statistics computed) in a hidden directory;
3. run LeRobot's steps (info, tasks, data, videos, episodes metadata) from the view into a second
   hidden directory, fix the data file indices at a file rollover, load the result back with
   LeRobot and read the first and last frame of every episode the way the pipeline reads frames;
4. only then name it ``DST``. Both hidden directories are removed whatever happens.
"""

from __future__ import annotations

import re
import shutil
import uuid
import warnings
from pathlib import Path

from vla_pipeline.data.convert import V21, ConversionError, default_output, say, warn
from vla_pipeline.data.convert_source import Source, read_source
from vla_pipeline.data.convert_stage import write_view
from vla_pipeline.data.tables import SUPPORTED_CODEBASE
from vla_pipeline.errors import VlaError


def _output_problems(src: Path, dst: Path) -> list[str]:
    if dst.exists() or dst.is_symlink():
        return [f"{dst} already exists; vla convert writes a new directory only: pass another --out, or remove "
                f"{dst} yourself if it is a stale conversion"]
    if dst.resolve().is_relative_to(src.resolve()):
        return [f"--out {dst} is inside the source {src}; the source must stay unchanged: write beside it, e.g. "
                f"--out {default_output(src)}"]
    return []


def _refusal(src: Path, dst: Path, errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    listed = "".join(f"\n  {i}. {e}" for i, e in enumerate(errors, 1))
    return f"{src} cannot be converted; {len(errors)} problems, each with its cause:{listed}\n{src} is unchanged and " \
           f"nothing was written to {dst}"


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


def _verify(root: Path, source: Source) -> None:
    """Load the converted dataset with LeRobot and read the first and last frame of every episode through
    the pipeline's reader (``RunDataset``: frame i of an episode at i/fps, whatever the timestamps say)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from tqdm import tqdm

    from vla_pipeline.data.lerobot import RunDataset

    meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
    lengths = {e.index: e.rows for e in source.episodes}
    got = dict(zip(meta.episodes["episode_index"], meta.episodes["length"], strict=True))
    if (meta.total_episodes, meta.total_frames, got) != (len(lengths), source.total_frames, lengths):
        raise ConversionError(f"the converted dataset has {meta.total_episodes} episodes and {meta.total_frames} "
                              f"frames, the source {len(lengths)} and {source.total_frames}")
    dataset = RunDataset(root, sorted(lengths), source.video_keys, video_backend="pyav")
    if len(dataset) != source.total_frames:
        raise ConversionError(f"the converted dataset loads {len(dataset)} frames, the source has {source.total_frames}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The video decoding and encoding capabilities of torchvision")
        for ep in tqdm(range(meta.total_episodes), desc="verify (first and last frame per episode)", unit="ep"):
            start, end = meta.episodes[ep]["dataset_from_index"], meta.episodes[ep]["dataset_to_index"]
            for i in (start, end - 1):
                item = dataset[i]
                if int(item["episode_index"]) != ep or int(item["frame_index"]) != i - start:
                    raise ConversionError(f"the converted dataset's frame {i} is frame {int(item['frame_index'])} of "
                                          f"episode {int(item['episode_index'])}, expected frame {i - start} of {ep}")


def _convert(view: Path, work: Path, source: Source, sizes: tuple[float, float], verify: bool) -> None:
    from lerobot.datasets.v30 import convert_dataset_v21_to_v30 as lerobot_convert

    data_mb, video_mb = sizes
    say("1/5 info and tasks")
    lerobot_convert.convert_info(view, work, data_mb, video_mb)
    lerobot_convert.convert_tasks(view, work)
    say("2/5 data files")
    episodes_metadata = lerobot_convert.convert_data(view, work, data_mb)
    _fix_data_file_indices(work, episodes_metadata)
    say("3/5 videos (stream copy, no re-encoding)")
    videos_metadata = lerobot_convert.convert_videos(view, work, video_mb)
    say("4/5 episodes metadata and stats")
    lerobot_convert.convert_episodes_metadata(view, work, episodes_metadata, videos_metadata)
    if verify:
        say("5/5 loading the result with LeRobot")
        _verify(work, source)


def read_and_report(src: Path, dst: Path) -> Source:
    """The source, read whole; every warning printed; every problem that stops the conversion raised at once."""
    source = read_source(src)
    for warning in source.warnings:
        warn(warning)
    errors = source.errors + _output_problems(src, dst)
    if errors:
        raise ConversionError(_refusal(src, dst, errors))
    return source


def convert_v21_to_v30(src: Path, dst: Path, *, data_file_size_in_mb: float | None = None,
                       video_file_size_in_mb: float | None = None, verify: bool = True) -> Path:
    """Convert the v2.1 dataset at ``src`` into a new v3.0 dataset at ``dst`` (which must not exist).

    Uses LeRobot 0.4.2's converter functions, offline; ``src`` is only read. The output is built in
    a hidden directory beside ``dst``, loaded back with LeRobot (``verify``) and then renamed to
    ``dst``, so ``dst`` exists only as a complete, loadable dataset.
    """
    from lerobot.datasets.utils import DEFAULT_DATA_FILE_SIZE_IN_MB, DEFAULT_VIDEO_FILE_SIZE_IN_MB

    src, dst = Path(src), Path(dst)
    source = read_and_report(src, dst)
    sizes = (DEFAULT_DATA_FILE_SIZE_IN_MB if data_file_size_in_mb is None else data_file_size_in_mb,
             DEFAULT_VIDEO_FILE_SIZE_IN_MB if video_file_size_in_mb is None else video_file_size_in_mb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    view, work = dst.parent / f".{dst.name}.view-{tag}", dst.parent / f".{dst.name}.converting-{tag}"
    say(f"{src} ({V21}, {len(source.episodes)} episodes, {source.total_frames} frames) -> {dst} "
        f"({SUPPORTED_CODEBASE}); working in {work}")
    try:
        say("0/5 the source's episode files as LeRobot's converter reads them" +
            (" (computing the missing statistics)" if _computes(source) else ""))
        write_view(source, view)
        work.mkdir()
        _convert(view, work, source, sizes, verify)
        work.rename(dst)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, (VlaError, KeyboardInterrupt)):
            raise
        if isinstance(e, Exception):
            raise ConversionError(f"converting {src} failed: {type(e).__name__}: {e}; {src} is unchanged and "
                                  f"nothing was written to {dst}") from e
        raise
    finally:
        shutil.rmtree(view, ignore_errors=True)  # links and rewritten copies only: never the source's files
    say(f"done: {dst}")
    return dst


def _computes(source: Source) -> bool:
    return any(e.index not in source.stats for e in source.episodes)

