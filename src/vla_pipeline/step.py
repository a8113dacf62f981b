"""The training step's plumbing around LeRobot's Pi0.5, built for speed without touching the model.

* :class:`Pi05Loss`: ``PI05Policy.forward``'s loss (mean flow-matching loss over the robot's action
  dims) without its two host synchronisations (``loss.item()`` and ``loss_per_dim.cpu()``, taken
  between forward and backward), optionally with ``PI05Pytorch.forward`` under ``torch.compile``
  (LeRobot's ``compile_model`` compiles only ``sample_actions``). The model is LeRobot's, called
  through its own ``_preprocess_images``, ``prepare_action`` and ``model.forward``.
* :class:`BatchPreparer`: LeRobot's saved preprocessor run in two parts: everything up to its
  ``DeviceProcessorStep`` on the host (normalize, state tokens, tokenizer), then the prompt check and
  the trimming of trailing prompt padding on host tensors (no GPU synchronisation), then the one copy
  to the device (non-blocking from pinned memory).

Trimming drops prompt positions that are padding in every row of the batch (LeRobot pads every
prompt to ``tokenizer_max_length``; padded positions are masked out as keys, and queries at padded
positions feed nothing that the loss reads), rounded up to a multiple of :data:`TRIM_MULTIPLE` so
``torch.compile`` sees few shapes. The loss is equal up to float summation order
(``tests/test_step.py``).
"""

from __future__ import annotations

import math

import torch
from lerobot.processor import DeviceProcessorStep
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from torch import nn

from vla_pipeline.guards import check_prompt_fits

TRIM_MULTIPLE = 16


class Pi05Loss(nn.Module):
    """The scalar training loss of a ``PI05Policy`` for a preprocessed batch (what accelerate wraps)."""

    def __init__(self, policy, compile_forward: bool = False):
        super().__init__()
        self.policy = policy
        forward = policy.model.forward
        self._forward = torch.compile(forward) if compile_forward else forward

    def forward(self, batch: dict) -> torch.Tensor:
        policy = self.policy
        images, img_masks = policy._preprocess_images(batch)  # noqa: SLF001  (LeRobot's own preprocessing)
        losses = self._forward(images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK],
                               policy.prepare_action(batch))
        return losses[:, :, : policy.config.output_features[ACTION].shape[0]].mean()


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
