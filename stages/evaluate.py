"""DVC stage `evaluate@best` / `evaluate@last`: one checkpoint of the train run, by the offline
evaluation protocol, into `<evaluate.out_dir>/<best|last>`."""

import json
import sys
from pathlib import Path

from vla_pipeline.checkpoint import BEST_FILE, LAST_FILE, find_last
from vla_pipeline.evaluate import EvaluateConfig, evaluate

from _params import run

POINTERS = {"best": BEST_FILE, "last": LAST_FILE}


def main(params: dict) -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "last"
    if which not in POINTERS:
        raise SystemExit(f"usage: stages/evaluate.py [best|last], not {which!r}")
    checkpoint = find_last(Path(params["train"]["out_dir"]), POINTERS[which])
    out_dir = Path(params["evaluate"]["out_dir"]) / which
    metrics = evaluate(EvaluateConfig.from_params(params, checkpoint, out_dir))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    run(main)
