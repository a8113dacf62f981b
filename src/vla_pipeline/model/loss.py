"""The training loss of LeRobot's Pi0.5, built for speed without touching the model.

:class:`Pi05Loss` is ``PI05Policy.forward``'s loss (mean flow-matching loss over the robot's action
dims) without its two host synchronisations (``loss.item()`` and ``loss_per_dim.cpu()``, taken
between forward and backward), optionally with ``PI05Pytorch.forward`` under ``torch.compile``
(LeRobot's ``compile_model`` compiles only ``sample_actions``). The model is LeRobot's, called
through its own ``_preprocess_images``, ``prepare_action`` and ``model.forward``; the loss is
bit-identical to LeRobot's (``tests/model/test_step.py``).
"""

from __future__ import annotations

import torch
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from torch import nn


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
