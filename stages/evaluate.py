"""DVC stage `evaluate`: held-out action metrics of the last checkpoint, beside a baseline."""

import json
from pathlib import Path

from vla_pipeline.checkpoint import find_last
from vla_pipeline.evaluate import EvaluateConfig, evaluate

from _params import load_params, run


def main() -> None:
    p = load_params()
    e = p["evaluate"]
    cfg = EvaluateConfig(
        checkpoint=find_last(Path(p["train"]["out_dir"])),
        dataset_root=Path(p["base"]["dataset_root"]),
        norms_dir=Path(p["norms"]["out_dir"]),
        out_dir=Path(e["out_dir"]),
        stride=int(e["stride"]),
        batch_size=int(e["batch_size"]),
        noise_seed=int(e["noise_seed"]),
    )
    print(json.dumps(evaluate(cfg), indent=2))


if __name__ == "__main__":
    run(main)
