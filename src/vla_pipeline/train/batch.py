"""A loader batch -> the model's input: LeRobot's saved preprocessor run in two parts.

:class:`BatchPreparer` runs everything up to its ``DeviceProcessorStep`` on the host (normalize,
state tokens, tokenizer), then the prompt check and the trimming of trailing prompt padding on host
tensors (no GPU synchronisation), then the one copy to the device (non-blocking from pinned memory).

Trimming drops prompt positions that are padding in every row of the batch (LeRobot pads every
prompt to ``tokenizer_max_length``; padded positions are masked out as keys, and queries at padded
positions feed nothing that the loss reads), rounded up to a multiple of :data:`TRIM_MULTIPLE` so
``torch.compile`` sees few shapes. The loss is equal up to float summation order
(``tests/model/test_step.py``).
"""

from __future__ import annotations

import math

import torch
from lerobot.processor import DeviceProcessorStep
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from vla_pipeline.train.guards import check_prompt_fits

TRIM_MULTIPLE = 16


def trim_prompt_padding(batch: dict, multiple: int = TRIM_MULTIPLE) -> dict:
    """The batch with trailing prompt positions that are padding in every row removed (right-padded
    prompts only; anything else is returned unchanged)."""
    mask = batch[OBS_LANGUAGE_ATTENTION_MASK]
    width = mask.shape[1]
    lengths = mask.sum(dim=1)
    if not torch.equal(mask.bool(), torch.arange(width, device=mask.device)[None, :] < lengths[:, None]):
        return batch
    keep = min(width, max(multiple, math.ceil(int(lengths.max()) / multiple) * multiple))
    return {**batch, OBS_LANGUAGE_TOKENS: batch[OBS_LANGUAGE_TOKENS][:, :keep], OBS_LANGUAGE_ATTENTION_MASK: mask[:, :keep]}


class BatchPreparer:
    """A raw loader batch -> the model's input on its device, as LeRobot's preprocessor makes it."""

    def __init__(self, preprocessor, trim: bool):
        steps = list(preprocessor.steps)
        at = max((i for i, s in enumerate(steps) if isinstance(s, DeviceProcessorStep)), default=len(steps))
        self.host, self.device = preprocessor[:at], preprocessor[at:]
        self.trim = trim

    def __call__(self, batch: dict) -> dict:
        batch = self.host(batch)
        check_prompt_fits(batch)  # host tensors: no device synchronisation
        if self.trim:
            batch = trim_prompt_padding(batch)
        return self.device(batch) if len(self.device) else batch
