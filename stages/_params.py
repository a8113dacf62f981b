"""Shared by the stage scripts: read params.yaml (the library never reads it) and run a stage through the one
error boundary (``errors.run_entry_point``): an expected failure ends with its message and exit code 1,
never a traceback (``VLA_DEBUG=1`` shows it). What a stage returns is its result line, logged at INFO."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from vla_pipeline.cores import claim_core_share
from vla_pipeline.errors import run_entry_point
from vla_pipeline.logs import configure_logging
from vla_pipeline.params.load import load_params
from vla_pipeline.quiet import quiet_third_party

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("vla_pipeline.stages")


def run(main: Callable[[dict], str | None]) -> None:
    configure_logging()  # VLA_LOG=quiet|verbose: no flags under DVC
    quiet_third_party()
    sys.exit(run_entry_point(lambda: _run_stage(main)))


def _run_stage(main: Callable[[dict], str | None]) -> None:
    params = load_params(ROOT / "params.yaml")
    claim_core_share()  # this stage's share of the cores, beside other stages and runs (dvc queue --jobs N)
    result = main(params)
    if result:
        log.info(result)
