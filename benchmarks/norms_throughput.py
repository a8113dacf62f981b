"""Time of the frozen-statistics computation (count, mean, std, min, max, exact q01/q10/q50/q90/q99)
for N frames x D dims, as the norms stage computes them.

    python benchmarks/norms_throughput.py [--frames 1000000] [--dims 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vla_pipeline.norms import compute_feature_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    values = np.random.default_rng(0).normal(size=(args.frames, args.dims)) * 40.0
    names = [f"joint_{i}" for i in range(args.dims)]
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stats = compute_feature_stats(values, names)
        times.append(time.perf_counter() - t0)
    check = np.quantile(values[:, 0], 0.99)
    assert abs(stats["q99"][0] - check) < 1e-9, "quantile differs from numpy"
    print(f"{args.frames:,} frames x {args.dims} dims: best {min(times):.2f}s of {args.repeats} "
          f"({args.frames / min(times):,.0f} frames/s); q99[0] equals numpy's")


if __name__ == "__main__":
    main()
