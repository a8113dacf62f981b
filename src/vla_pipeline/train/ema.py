"""An exponential moving average of the trainable weights (``train.ema.decay``), as openpi trains
with by default: after every optimizer step ``ema = decay * ema + (1 - decay) * weight``, starting
from the weights the run starts with. One fused ``lerp`` per step on the weights' device (no host
sync). The EMA weights are what the validation loss, the best-checkpoint choice and the saved
``pretrained_model`` use; the raw weights and the EMA live in ``training_state/`` so a resumed run
continues bit-identically."""

from __future__ import annotations

import contextlib

import torch


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

    def state_dict(self) -> dict:
        """The decay and the EMA by parameter name (references, as torch's ``state_dict``); it goes into
        ``training_state/`` (``pretrained_model/`` holds it applied; the raw weights are saved beside it)."""
        return {"decay": self.decay, "shadow": dict(zip(self.names, self.shadow, strict=True))}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """The EMA where ``state_dict`` left it (the same parameter names)."""
        shadow = state["shadow"]
        if set(shadow) != set(self.names):
            raise ValueError(f"EMA of other parameters ({len(set(shadow) ^ set(self.names))} names differ)")
        for name, ema in zip(self.names, self.shadow, strict=True):
            ema.copy_(shadow[name])
