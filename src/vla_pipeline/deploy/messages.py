"""Reading what a robot client sends, without trusting it.

LeRobot 0.4.2's async inference sends pickles over gRPC (``RemotePolicyConfig`` once, then one
``TimedObservation`` per observation) and its policy server reads them with ``pickle.loads``: any
process that reaches the port can run code on the GPU host. Here a message is unpickled with an
allow-list, and what the allow-list hands out cannot be turned against the server:

* only what LeRobot's protocol puts in these messages can be named (its message classes, numpy arrays
  and scalars, torch tensors, an OrderedDict); anything else is refused by name before it is called;
* every name resolves to an object made for this one message (a throwaway subclass of each message
  class, a fresh wrapper function), so a pickle's BUILD opcode, which sets attributes on whatever it
  is given, cannot change LeRobot's classes or torch's functions for later messages;
* ``numpy.ndarray`` cannot be called directly (its constructor takes a raw buffer, which for an
  object dtype means pointers), arrays are only rebuilt as numpy pickles them, and no array, dtype
  or scalar of an object dtype is accepted;
* a tensor's storage arrives as ``torch.save`` bytes, which torch reads back with an unrestricted
  unpickler; it is read with ``weights_only=True`` instead.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import io
import pickle  # nosec: every name a message uses goes through MessageUnpickler.find_class

import numpy as np
import torch

from vla_pipeline.errors import VlaError

HELPERS = "lerobot.async_inference.helpers"
MESSAGE_CLASSES = ("RemotePolicyConfig", "TimedObservation", "TimedAction")
NUMPY_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy 2 and 1: a client may run either

#: every (module, name) a message may name, for the docs and the refusal message
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {(HELPERS, n) for n in MESSAGE_CLASSES}
    | {(m, n) for m in NUMPY_CORE for n in ("_reconstruct", "scalar")}
    | {("numpy", "ndarray"), ("numpy", "dtype"), ("torch._utils", "_rebuild_tensor_v2"),
       ("torch.storage", "_load_from_bytes"), ("collections", "OrderedDict")}
)


class RefusedMessageError(VlaError):
    """A client message names something outside the allow-list, or is not the expected message."""


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    return scalar


def _safe_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject:
        raise RefusedMessageError(f"the message holds a numpy array or scalar of dtype {dtype} (Python objects); refused")
    return dtype


def _fresh_table() -> dict[tuple[str, str], object]:
    """The objects a message's names resolve to, new for every message."""
    helpers = importlib.import_module(HELPERS)
    table: dict[tuple[str, str], object] = {
        (HELPERS, n): type(n, (getattr(helpers, n),), {"__module__": HELPERS}) for n in MESSAGE_CLASSES}

    class ArrayType:
        """What ``numpy.ndarray`` resolves to: only numpy's own rebuild may use it; calling it is refused."""

        def __init__(self, *args, **kwargs):
            raise RefusedMessageError("the message calls numpy.ndarray directly (a raw buffer); refused")

    def reconstruct(subtype, shape, dtype):
        if subtype is not ArrayType:
            raise RefusedMessageError(f"the message rebuilds an array as {subtype!r}; only numpy.ndarray is accepted")
        return np.ndarray.__new__(np.ndarray, shape, _safe_dtype(np.dtype(dtype)))

    def scalar(dtype, *args):
        return _numpy_scalar()(_safe_dtype(dtype), *args)

    def make_dtype(*args, **kwargs):
        return _safe_dtype(np.dtype(*args, **kwargs))

    def rebuild_tensor(*args, **kwargs):
        return torch._utils._rebuild_tensor_v2(*args, **kwargs)

    def load_tensor_bytes(data: bytes):
        return torch.load(io.BytesIO(data), weights_only=True)

    for module in NUMPY_CORE:
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    table |= {("numpy", "ndarray"): ArrayType, ("numpy", "dtype"): make_dtype,
              ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
              ("torch.storage", "_load_from_bytes"): load_tensor_bytes,
              ("collections", "OrderedDict"): collections.OrderedDict}
    return table


class MessageUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.table = _fresh_table()

    def find_class(self, module: str, name: str):
        if (module, name) in self.table:
            return self.table[(module, name)]
        raise RefusedMessageError(f"the message names {module + '.' + name!r}, which LeRobot's async-inference protocol "
                                  f"never sends; refused (docs/deploy.md: Security lists what a message may name)")


def _check_values(value, depth: int = 0) -> None:
    """After loading: no object-dtype array, dtype or scalar anywhere in the message (numpy's
    ``__setstate__`` can still set a dtype after the rebuild)."""
    if depth > 20:
        raise RefusedMessageError("the message is nested more than 20 levels deep; refused")
    if isinstance(value, (np.ndarray, np.generic)):
        _safe_dtype(value.dtype)
    elif isinstance(value, np.dtype):
        _safe_dtype(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_values(k, depth + 1)
            _check_values(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_values(v, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _check_values(getattr(value, f.name, None), depth + 1)


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
    _check_values(message)
    # LeRobot's own class again (the throwaway subclass compares unequal to it), field by field
    fields = [f.name for f in dataclasses.fields(expected)]
    missing = [f for f in fields if not hasattr(message, f)]
    if missing:
        raise RefusedMessageError(f"the {expected.__name__} has no {missing}; refused")
    return expected(**{f: getattr(message, f) for f in fields})
