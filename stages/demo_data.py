"""DVC stage: write the embedded LeKiwi demo dataset from the ``demo`` section of params.yaml.

Run from the repository root: ``python stages/demo_data.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never needs the Hugging Face hub

from vla_pipeline.demo import DemoConfig, make_demo_dataset  # noqa: E402

PARAMS_PATH = Path("params.yaml")
INT_KEYS = ("num_episodes", "min_length", "max_length", "image_height", "image_width", "fps", "seed")


def main() -> None:
    """Build ``DemoConfig`` from params.yaml's ``demo`` section and write the dataset."""
    params = yaml.safe_load(PARAMS_PATH.read_text())["demo"]
    cfg = DemoConfig(
        root=Path(params["root"]),
        repo_id=str(params["repo_id"]),
        **{key: int(params[key]) for key in INT_KEYS},
    )
    root = make_demo_dataset(cfg)
    print(f"demo dataset written to {root}")


if __name__ == "__main__":
    main()
