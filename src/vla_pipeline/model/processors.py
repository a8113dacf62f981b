"""LeRobot's own Pi0.5 pre/post processors, fed with the frozen statistics (never the dataset's
``meta/stats.json``) and the tokenizer the run names."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lerobot.policies.pi05 import processor_pi05
from lerobot.policies.pi05.configuration_pi05 import PI05Config


@contextlib.contextmanager
def _tokenizer_source(name: str):
    """Make LeRobot's Pi0.5 processor factory load its tokenizer from ``name``."""
    original = processor_pi05.TokenizerProcessorStep
    processor_pi05.TokenizerProcessorStep = lambda **kw: original(**{**kw, "tokenizer_name": name})
    try:
        yield
    finally:
        processor_pi05.TokenizerProcessorStep = original


def make_processors(config: PI05Config, stats: dict, tokenizer: str | Path):
    """LeRobot's own Pi0.5 pre/post processors with the frozen ``stats`` and the given tokenizer."""
    with _tokenizer_source(str(tokenizer)):
        return processor_pi05.make_pi05_pre_post_processors(config, dataset_stats=stats)
