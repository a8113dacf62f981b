"""An exponential moving average of the trainable weights (``train.ema.decay``), as openpi trains
with by default: after every optimizer step ``ema = decay * ema + (1 - decay) * weight``, starting
from the weights the run starts with. One fused ``lerp`` per step on the weights' device (no host
sync). The EMA weights are what the validation loss, the best-checkpoint choice and the saved
``pretrained_model`` use; the raw weights and the EMA live in ``training_state/`` so a resumed run
continues bit-identically."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from vla_pipeline.checkpoint.layout import EMA_FILE
from vla_pipeline.checkpoint.resume import load_trainable_tensors, save_trainable_tensors


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.decay = decay
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @classmethod
    def make(cls, model: torch.nn.Module, decay: float | None) -> EMA | None:
        return None if decay is None else cls(model, decay)

    @torch.no_grad()
    def update(self) -> None:
        """``ema += (1 - decay) * (weight - ema)``: the same as ``decay * ema + (1 - decay) * weight``."""
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self):
        """The EMA weights in the model for the duration (validation, saving); the raw ones after."""
        raw = [p.detach().clone() for p in self.params]
        torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_([p.data for p in self.params], raw)

    def save(self, step_dir: Path) -> None:
        """The EMA into ``training_state/`` (``pretrained_model/`` holds it applied; the raw weights are
        saved beside it by ``checkpoint.resume.save_raw_weights``)."""
        save_trainable_tensors(step_dir, EMA_FILE, dict(zip(self.names, self.shadow, strict=True)),
                               metadata={"decay": repr(self.decay)})

    @torch.no_grad()
    def load(self, step_dir: Path) -> None:
        """The EMA where ``save`` left it."""
        shadow = load_trainable_tensors(step_dir, EMA_FILE, self.names)
        for name, ema in zip(self.names, self.shadow, strict=True):
            ema.copy_(shadow[name])
