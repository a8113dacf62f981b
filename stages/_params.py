"""Shared by the stage scripts: read params.yaml (the library never reads it) and run a stage
so that a user error ends with its message and exit code 1, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from vla_pipeline.errors import run_entry_point
from vla_pipeline.params.load import load_params
from vla_pipeline.quiet import quiet_third_party

ROOT = Path(__file__).resolve().parent.parent


def run(main: Callable[[dict], None]) -> None:
    quiet_third_party()
    sys.exit(run_entry_point(lambda: main(load_params(ROOT / "params.yaml"))))
