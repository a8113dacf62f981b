"""Reading what a robot client sends, without trusting it.

LeRobot 0.4.2's async inference sends pickles over gRPC (``RemotePolicyConfig`` once, then one
``TimedObservation`` per observation) and its policy server reads them with ``pickle.loads``: any
process that reaches the port can run code on the GPU host. Here a message is unpickled with an
allow-list: only the classes LeRobot's protocol puts in these messages (its two message classes,
numpy arrays and scalars, torch tensors, an OrderedDict) can be named; anything else is refused with
its name, before it is called. A tensor's storage arrives as ``torch.save`` bytes, which torch reads
back with an unrestricted unpickler; it is read with ``weights_only=True`` instead.
"""

from __future__ import annotations

import io
import pickle  # nosec: every class a message names goes through MessageUnpickler.find_class

import torch

from vla_pipeline.errors import VlaError

HELPERS = "lerobot.async_inference.helpers"

#: (module, name) a message may name; numpy 2 moved numpy.core to numpy._core, a client may run either
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    (HELPERS, "RemotePolicyConfig"), (HELPERS, "TimedObservation"), (HELPERS, "TimedAction"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"),
})
TENSOR_BYTES = ("torch.storage", "_load_from_bytes")


class RefusedMessageError(VlaError):
    """A client message names a class outside the allow-list, or is not the expected message."""


def _load_tensor_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


class MessageUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == TENSOR_BYTES:
            return _load_tensor_bytes
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise RefusedMessageError(f"the message names {module}.{name}, which LeRobot's async-inference protocol never "
                                  f"sends; refused (docs/deploy.md: Security lists what a message may name)")


def load_message(data: bytes, expected: type):
    """Unpickle a client message with the allow-list; it must be an instance of ``expected``."""
    try:
        message = MessageUnpickler(io.BytesIO(data)).load()
    except RefusedMessageError:
        raise
    except Exception as e:  # noqa: BLE001  (a truncated or corrupt pickle from the network)
        raise RefusedMessageError(f"the message is not a readable {expected.__name__} ({type(e).__name__}: {e})") from e
    if not isinstance(message, expected):
        raise RefusedMessageError(f"expected a {expected.__name__}, got a {type(message).__name__}")
    return message
