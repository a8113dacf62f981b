"""Read params.yaml for the stage scripts (the library never reads it itself)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_params(path: Path = ROOT / "params.yaml") -> dict:
    return yaml.safe_load(Path(path).read_text())


def run(main) -> None:
    """Run a stage; known input errors end with their message, never a traceback."""
    from vla_pipeline.errors import USER_ERRORS

    try:
        main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
