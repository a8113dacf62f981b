"""DVC stage `evaluate`: held-out action metrics of the last checkpoint, beside a baseline."""

import json
from pathlib import Path

from vla_pipeline.checkpoint import find_last
from vla_pipeline.evaluate import EvaluateConfig, evaluate

from _params import run


def main(params: dict) -> None:
    checkpoint = find_last(Path(params["train"]["out_dir"]))
    print(json.dumps(evaluate(EvaluateConfig.from_params(params, checkpoint)), indent=2))


if __name__ == "__main__":
    run(main)
