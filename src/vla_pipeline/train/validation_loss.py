"""The validation loss that picks the best checkpoint: LeRobot's own Pi0.5 training loss on a fixed
subset of the validation episodes, with the flow-matching noise and times drawn from a fixed seed.
The same weights and processors give the same number in any process (the global RNG is untouched)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from lerobot.utils.constants import ACTION


def make_val_subset(dataset, max_samples: int) -> torch.utils.data.Dataset:
    """At most ``max_samples`` frames, evenly spread over the validation episodes (every frame if fewer)."""
    n = len(dataset)
    if n <= max_samples:
        return dataset
    picks = np.unique(np.linspace(0, n - 1, max_samples).round().astype(int)).tolist()
    return torch.utils.data.Subset(dataset, picks)


def compute_validation_loss(policy, preprocessor, dataset, batch_size: int, seed: int, autocast=None) -> float:
    """Mean per-sample loss of ``policy`` over ``dataset`` in eval mode, noise seeded by ``seed``."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    devices = [device] if device.type == "cuda" else []
    total, count = 0.0, 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for batch in loader:
            batch = preprocessor(batch)
            with autocast() if autocast is not None else contextlib.nullcontext():
                loss, _ = policy.forward(batch)
            size = batch[ACTION].shape[0]
            total += float(loss) * size
            count += size
    policy.train(was_training)
    return total / count
