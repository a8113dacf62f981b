"""DVC stage `evaluate@best` / `evaluate@last`: one checkpoint of the train run, by the offline
evaluation protocol, into `<evaluate.out_dir>/<best|last>`.

`evaluate@last` runs after `evaluate@best` (dvc.yaml makes its outputs a dependency) and, when both
name the same checkpoint (the best is the last step, common on short runs), copies its results
instead of evaluating it again; `protocol.json` then says `reused_from`. Anything else that differs
(checkpoint manifest, evaluation settings, code, data, missing outputs) means a normal evaluation."""

import sys
from pathlib import Path

from vla_pipeline.checkpoint.layout import BEST_FILE, LAST_FILE, find_last
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.eval.run import evaluate, format_summary

from _params import run

POINTERS = {"best": BEST_FILE, "last": LAST_FILE}
REUSES = {"last": "best"}  # evaluate@last may reuse evaluate@best's outputs (dvc.yaml orders it after)


def main(params: dict) -> str:
    which = sys.argv[1] if len(sys.argv) > 1 else "last"
    if which not in POINTERS:
        raise SystemExit(f"usage: stages/evaluate.py [best|last], not {which!r}")
    checkpoint = find_last(Path(params["train"]["out_dir"]), POINTERS[which])
    out_root = Path(params["evaluate"]["out_dir"])
    reuse_from = out_root / REUSES[which] if which in REUSES else None
    cfg = EvaluateConfig.from_params(params, checkpoint, out_root / which)
    return format_summary(evaluate(cfg, reuse_from=reuse_from), cfg.checkpoint, cfg.out_dir, cfg.videos)


if __name__ == "__main__":
    run(main)
