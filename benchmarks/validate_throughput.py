"""Validation throughput on a large tabular LeRobotDataset v3.0 (no video files).

Builds a synthetic N-frame dataset (LeKiwi-shaped 9-dim action/state, written with pyarrow in
LeRobot's v3.0 layout) in a temp dir, then times `validate_dataset` on it and reports frames/s.
info.json declares the contract's two cameras (Pi0.5 needs one, so a camera-less contract is
refused) but no video file exists: the `videos` check fails with one error and `camera_streams`
has nothing to open, so the time is that of every tabular check.

    python benchmarks/validate_throughput.py [--frames 1000000] [--episode-length 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vla_pipeline.data.demo import LEKIWI_NAMES
from vla_pipeline.errors import ValidationError
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.report import format_report
from vla_pipeline.validate.run import validate_dataset

REPO = Path(__file__).resolve().parents[1]
FPS = 30


def vector_column(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])


def write_dataset(root: Path, n_frames: int, episode_length: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_eps = n_frames // episode_length
    n = n_eps * episode_length
    episode = np.repeat(np.arange(n_eps), episode_length)
    frame = np.tile(np.arange(episode_length), n_eps)
    phase = rng.uniform(0, 2 * np.pi, size=(n_eps, 9)).repeat(episode_length, axis=0)
    walk = 50 + 25 * np.sin(frame[:, None] / 40.0 + phase)  # smooth, inside every joint range
    lead = 50 + 25 * np.sin((frame[:, None] + 3) / 40.0 + phase)  # the action leads the state by 3 frames
    table = pa.table({
        "observation.state": vector_column(walk.astype(np.float32)),
        "action": vector_column((lead + rng.normal(0, 0.1, size=walk.shape)).astype(np.float32)),
        "timestamp": pa.array((frame / FPS).astype(np.float32)),
        "frame_index": pa.array(frame), "episode_index": pa.array(episode),
        "index": pa.array(np.arange(n)), "task_index": pa.array(episode % 4),
    })
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    starts = np.arange(n_eps) * episode_length
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table({
        "episode_index": np.arange(n_eps), "length": np.full(n_eps, episode_length),
        "dataset_from_index": starts, "dataset_to_index": starts + episode_length,
    }), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pd.DataFrame({"task_index": range(4)}, index=[f"task {i}" for i in range(4)]).to_parquet(root / "meta" / "tasks.parquet")
    vec = {"dtype": "float32", "shape": [9], "names": list(LEKIWI_NAMES)}
    info = {"codebase_version": "v3.0", "fps": FPS, "total_frames": n, "total_episodes": n_eps,
            "features": {"observation.state": vec, "action": vec,
                         **{k: {"dtype": "int64", "shape": [1], "names": None}
                            for k in ("frame_index", "episode_index", "index", "task_index")},
                         "timestamp": {"dtype": "float32", "shape": [1], "names": None},
                         **{f"observation.images.{c}": {"dtype": "video", "shape": [96, 128, 3],
                                                        "names": ["height", "width", "channels"]}
                            for c in ("front", "wrist")}}}
    (root / "meta" / "info.json").write_text(json.dumps(info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t0 = time.perf_counter()
        write_dataset(root, args.frames, args.episode_length)
        print(f"wrote {args.frames:,} frames in {time.perf_counter() - t0:.1f}s")
        cfg = ValidateConfig(root, REPO / "contracts" / "lekiwi_arm.yaml", Path(tmp) / "report.json")
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with contextlib.suppress(ValidationError):  # no video files: only the videos check fails
                validate_dataset(cfg)
            times.append(time.perf_counter() - t0)
        report = json.loads(cfg.report_path.read_text())
        print(format_report(report))
        failed = sorted({e["check"] for e in report["errors"]})
        assert failed == ["videos"], f"expected only the videos check to fail, got {failed}"
        best = min(times)
        n = report["summary"]["n_frames"]
        print(f"validated {n:,} frames: best {best:.2f}s of {args.repeats} -> {n / best:,.0f} frames/s")


if __name__ == "__main__":
    main()
