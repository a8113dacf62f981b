"""Seconds of one whole preflight of the run params.yaml describes (the target: under 60 s on the
2-core CPU machine with the tiny model).

    python benchmarks/preflight_time.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from vla_pipeline.params.load import load_params
from vla_pipeline.preflight.run import PreflightConfig, run_preflight

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(REPO / "params.yaml", [f"preflight.report={Path(tmp) / 'report.json'}"])
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = run_preflight(PreflightConfig.from_params(params))
            seconds.append(time.perf_counter() - t0)
    print(f"preflight: {len(report.checks)} checks, ok={report.ok}; seconds per run: "
          f"{', '.join(f'{s:.1f}' for s in seconds)} (median {statistics.median(seconds):.1f})")


if __name__ == "__main__":
    main()
