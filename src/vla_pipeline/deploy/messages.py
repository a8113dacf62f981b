"""Reading what a robot client sends, without trusting it.

LeRobot 0.4.2's async inference sends pickles over gRPC (``RemotePolicyConfig`` once, then one
``TimedObservation`` per observation) and its policy server reads them with ``pickle.loads``: any
process that reaches the port can run code on the GPU host. Here a message is unpickled with an
allow-list, and what it hands out cannot be turned against the server:

* only what LeRobot's protocol puts in these messages can be named (its message classes, numpy arrays
  and scalars, torch tensors, an OrderedDict); anything else is refused by name before it is called;
* each name resolves to an object made for this one message that refuses pickle's BUILD opcode
  (``__setstate__``, which sets attributes on whatever it is given) or checks its state: LeRobot's
  classes and torch's functions cannot be changed for later messages;
* ``numpy.dtype`` gives a holder of a plain numeric dtype (bool, int, uint, float, complex) that the
  message cannot reach: numpy's ``dtype.__setstate__`` takes fields at any offset, and a scalar of
  such a dtype reads far past its bytes (a segfault). Arrays are rebuilt only as numpy pickles them,
  from exactly the bytes their shape declares; ``numpy.ndarray`` (a raw buffer) cannot be called;
* a tensor's storage (``torch.save`` bytes) is parsed here, never ``torch.load``-ed (which allocates
  the size the bytes declare); a tensor view lies inside it, with no zero or negative strides;
* :class:`MessageLimits` bounds, before anything runs, a message's size, opcodes, values (a shared one
  counted at each use), nesting and array bytes; over a limit, :class:`OverLimitError`. Refusals are
  short (under 200 characters) and never echo the payload: the server logs them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import io
import math
import pickle  # nosec: every name a message uses goes through MessageUnpickler.find_class
import pickletools
import re

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
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class MessageLimits:
    """What one client message may cost the server, fixed before it is read."""

    #: the pickle as received: four 1080p RGB camera frames (6.2 MB each) and the state fit
    max_message_bytes: int = 64 * MIB
    #: pickle opcodes: real messages have about 200; 10_000 ints that collide in a dict take 0.1 s
    max_opcodes: int = 10_000
    #: values in the message (items, arrays, tensors), a shared one counted at each use
    max_nodes: int = 20_000
    #: nesting of containers (a policy config's feature names are 5 deep)
    max_depth: int = 20
    #: bytes of every numpy array, tensor storage and tensor view the message builds, together
    max_array_bytes: int = 128 * MIB


DEFAULT_LIMITS = MessageLimits()


class RefusedMessageError(VlaError):
    """A client message names something outside the allow-list, or is not the expected message."""


class OverLimitError(RefusedMessageError):
    """A client message is over one of its :class:`MessageLimits`."""


def _clip(text: str, limit: int = 190) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bools(is_bool: bool, data) -> None:  # numpy's and torch's bools are the bytes 0 and 1, nothing else
    if is_bool and bytes(data).translate(None, b"\x00\x01"):
        raise RefusedMessageError("the message gives a bool array, scalar or tensor other bytes than 0 and 1; refused")


def _ints(values, what: str, bound: int = 2**48) -> tuple[int, ...]:
    if type(values) is not tuple or not all(type(v) is int and 0 <= v < bound for v in values):
        raise RefusedMessageError(f"the message gives {what} that are not small non-negative integers; refused")
    return values


def scan_opcodes(stream, max_opcodes: int, limit: str = "MessageLimits.max_opcodes") -> None:
    """Walk a pickle's opcodes up to its STOP without running them: at most ``max_opcodes``, and memo
    indices in order (``LONG_BINPUT 2**31`` alone makes the unpickler allocate 16 GiB of memo)."""
    for count, (op, arg, _) in enumerate(pickletools.genops(stream), start=1):
        if count > max_opcodes:
            raise OverLimitError(f"the message has over {max_opcodes} pickle opcodes ({limit}); refused")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= count:
            raise RefusedMessageError("the message stores a value at a memo index out of order; refused")


@dataclasses.dataclass
class _Budget:  # the bytes a message's arrays and tensors have taken so far
    limit: int
    used: int = 0

    def take(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise OverLimitError(f"the message's arrays and tensors take over {self.limit} bytes "
                                 f"(MessageLimits.max_array_bytes); refused")


class _Sealed:  # an object a message can hold but not BUILD
    __slots__ = ()
    what = "function"

    def __setstate__(self, state):
        raise RefusedMessageError(f"the message sets the state of a {self.what}; refused")


@dataclasses.dataclass(frozen=True)
class _Call(_Sealed):  # what a name that may be called resolves to
    fn: object

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


_PLAIN_CODE = re.compile(r"[biufc][0-9]{1,2}")


class _Dtype:
    """What ``numpy.dtype(code, align, copy)`` gives a message: holds a plain numeric dtype the message
    cannot reach. BUILD may set its byte order only (numpy's state with no subarray, names or fields)."""

    __slots__ = ("dtype",)

    def __init__(self, code, align=False, copy=False):
        if type(code) is not str or not _PLAIN_CODE.fullmatch(code) or np.dtype(code).str[1:] != code:
            raise RefusedMessageError("the message asks for a numpy dtype other than bool, int, float, complex; refused")
        self.dtype = np.dtype(code)

    def __setstate__(self, state):
        if not (type(state) is tuple and len(state) == 8 and type(state[0]) is int and state[0] == 3
                and type(state[1]) is str and state[1] in ("<", ">", "|", "=")
                and all(s is None for s in state[2:5])):
            raise RefusedMessageError("the message gives a numpy dtype fields, a subarray or an unknown state; refused")
        self.dtype = self.dtype.newbyteorder(state[1])


class _Array:
    """What numpy's ``_reconstruct`` gives a message: an empty array until BUILD gives it a shape,
    dtype and exactly the bytes they need."""

    __slots__ = ("array", "budget")

    def __init__(self, budget: _Budget):
        self.array, self.budget = np.empty((0,), np.int8), budget

    def __setstate__(self, state):
        if not (type(state) is tuple and len(state) == 5 and type(state[0]) is int and state[0] == 1
                and type(state[2]) is _Dtype and type(state[3]) is bool):
            raise RefusedMessageError("the message gives a numpy array a state numpy does not write; refused")
        _, shape, code, fortran, raw = state
        shape, dtype = _ints(shape, "an array shape"), code.dtype
        if type(raw) is not bytes:  # a list: an object array's items
            raise RefusedMessageError("the message gives a numpy array data that is not bytes; refused")
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise RefusedMessageError(f"the message declares a {_clip(str(shape), 40)} {dtype} array with "
                                      f"{len(raw)} bytes of data; refused")
        self.budget.take(len(raw))
        _bools(dtype.kind == "b", raw)
        array = np.ndarray.__new__(np.ndarray, (0,), dtype)
        array.__setstate__((1, shape, dtype, fortran, raw))
        self.array = array


@dataclasses.dataclass(frozen=True)
class _Held(_Sealed):  # a tensor or its storage: BUILD is refused (Tensor.__setstate__ calls set_)
    what = "tensor or storage"
    value: object
    numel: int = 0
    itemsize: int = 0


_STORAGE_DTYPES = {f"{n}Storage": getattr(torch, d) for n, d in (
    ("Double", "float64"), ("Float", "float32"), ("Half", "float16"), ("BFloat16", "bfloat16"), ("Long", "int64"),
    ("Int", "int32"), ("Short", "int16"), ("Char", "int8"), ("Byte", "uint8"), ("Bool", "bool"),
    ("ComplexFloat", "complex64"), ("ComplexDouble", "complex128"))}


class _StorageHeader(pickle.Unpickler):
    """The small pickles ``torch.save`` writes before a storage's bytes: names only storage types."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise RefusedMessageError(f"a tensor storage names {_clip(module + '.' + name, 60)!r}; refused")

    def persistent_load(self, pid):
        return pid


def _header_pickle(data: bytes, f: io.BytesIO):
    start = f.tell()
    scan_opcodes(f, 64, "in a tensor storage's header")
    return _StorageHeader(io.BytesIO(data[start:f.tell()])).load()


def _load_storage(budget: _Budget, data) -> _Held:
    """``torch.storage._load_from_bytes``: one storage as ``torch.save`` writes it (legacy format: magic
    number, protocol, system info, the storage's persistent id, its key, then numel and the bytes)."""
    if type(data) is not bytes:
        raise RefusedMessageError("the message gives a tensor storage that is not bytes; refused")
    f = io.BytesIO(data)
    magic, protocol, info, pid, keys = (_header_pickle(data, f) for _ in range(5))
    if magic != 0x1950A86A20F9469CFC6C or protocol != 1001 or type(info) is not dict:
        raise ValueError("a tensor storage is not in torch.save's format")
    if info.get("little_endian") is not True:
        raise RefusedMessageError("the message sends a big-endian tensor storage; refused")
    if not (type(pid) is tuple and len(pid) == 6 and pid[0] == "storage" and type(pid[1]) is torch.dtype
            and pid[5] is None and type(keys) is list and keys == [pid[2]]):
        raise ValueError("a tensor storage is not one storage as torch.save writes it")
    dtype, (numel,) = pid[1], _ints((pid[4],), "a storage size")
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = numel * itemsize
    raw = memoryview(data)[f.tell():]
    if len(raw) != 8 + nbytes or int.from_bytes(raw[:8], "little") != numel:
        raise RefusedMessageError(f"the message declares a tensor storage of {nbytes} bytes with "
                                  f"{max(len(raw) - 8, 0)} bytes of data; refused")
    budget.take(nbytes)
    _bools(dtype == torch.bool, raw[8:])
    untyped = torch.frombuffer(bytearray(raw[8:]), dtype=torch.uint8).untyped_storage() if nbytes else \
        torch.UntypedStorage(0)
    return _Held(torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True), numel, itemsize)


def _rebuild_tensor(budget: _Budget, storage, offset, size, stride, *flags) -> _Held:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``: a view
    that lies inside its storage, no zero or negative stride, no more elements than the storage holds
    (overlapping views would multiply it), no backward hooks or metadata."""
    if type(storage) is not _Held or type(storage.value) is not torch.storage.TypedStorage or len(flags) != 2 \
            or type(flags[0]) is not bool:
        raise RefusedMessageError("the message rebuilds a tensor other than as torch pickles one; refused")
    if type(flags[1]) is not collections.OrderedDict or flags[1]:
        raise RefusedMessageError("the message gives a tensor backward hooks; refused")
    (offset,), size = _ints((offset,), "a tensor offset"), _ints(size, "a tensor size")
    stride = _ints(stride, "tensor strides")
    if len(size) != len(stride) or any(s == 0 and n > 1 for n, s in zip(size, stride, strict=True)):
        raise RefusedMessageError("the message declares a tensor with zero strides or mismatched ones; refused")
    numel = math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1 if numel else offset
    if end > storage.numel or numel > storage.numel:
        raise RefusedMessageError(f"the message declares a tensor view of {numel} elements ending at {end} "
                                  f"on a storage of {storage.numel}; refused")
    budget.take(numel * storage.itemsize)
    return _Held(torch._utils._rebuild_tensor_v2(storage.value, offset, size, stride, flags[0],
                                                 collections.OrderedDict()))


def _reconstruct(budget: _Budget, array_type, subtype, shape, dtype) -> _Array:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: the array's shape and data come with BUILD."""
    if subtype is not array_type or shape != (0,) or type(shape) is not tuple or type(shape[0]) is not int:
        raise RefusedMessageError("the message rebuilds an array other than as numpy pickles one; refused")
    return _Array(budget)


def _scalar(dtype, data=None, *rest):
    if type(dtype) is not _Dtype or type(data) is not bytes or rest or len(data) != dtype.dtype.itemsize:
        raise RefusedMessageError("the message builds a numpy scalar numpy does not pickle; refused")
    _bools(dtype.dtype.kind == "b", data)
    return importlib.import_module(NUMPY_CORE[np.lib.NumpyVersion(np.__version__) < "2.0.0"]).scalar(dtype.dtype, data)


def _ordered_dict(*args, **kwargs) -> collections.OrderedDict:
    if args or kwargs:  # pickle gives the items with SETITEMS; from arguments, a shared dict is copied each time
        raise RefusedMessageError("the message calls OrderedDict with arguments; refused")
    return collections.OrderedDict()


def _refuse_ndarray(*args, **kwargs):
    raise RefusedMessageError("the message calls numpy.ndarray directly (a raw buffer); refused")


def _message_class(base: type) -> type:
    """A throwaway subclass of a LeRobot message class: BUILD sets its own fields only, never the class's."""
    names = frozenset(f.name for f in dataclasses.fields(base))
    unset = object()

    def __setstate__(self, state=unset):  # noqa: N807
        if state is unset:  # BUILD on the class: getattr(cls, "__setstate__")(state)
            raise RefusedMessageError(f"the message sets attributes on LeRobot's class {base.__name__}; refused")
        if type(self) is not cls or type(state) is not dict or not names.issuperset(state):
            raise RefusedMessageError(f"the message sets other than a {base.__name__}'s fields; refused")
        self.__dict__.update(state)

    cls = type(base.__name__, (base,), {"__module__": HELPERS, "__setstate__": __setstate__})
    return cls


def _fresh_table(budget: _Budget) -> dict[tuple[str, str], object]:
    """The objects a message's names resolve to, new for every message."""
    helpers = importlib.import_module(HELPERS)
    table: dict[tuple[str, str], object] = {(HELPERS, n): _message_class(getattr(helpers, n)) for n in MESSAGE_CLASSES}
    array_type = _Call(_refuse_ndarray)
    for module in NUMPY_CORE:
        table[(module, "_reconstruct")] = _Call(functools.partial(_reconstruct, budget, array_type))
        table[(module, "scalar")] = _Call(_scalar)
    table |= {("numpy", "ndarray"): array_type, ("numpy", "dtype"): _Call(_Dtype),
              ("torch._utils", "_rebuild_tensor_v2"): _Call(functools.partial(_rebuild_tensor, budget)),
              ("torch.storage", "_load_from_bytes"): _Call(functools.partial(_load_storage, budget)),
              ("collections", "OrderedDict"): _Call(_ordered_dict)}
    return table


class MessageUnpickler(pickle.Unpickler):
    def __init__(self, file, limits: MessageLimits = DEFAULT_LIMITS):
        super().__init__(file)
        self.table = _fresh_table(_Budget(limits.max_array_bytes))

    def find_class(self, module: str, name: str):
        if (module, name) in self.table:
            return self.table[(module, name)]
        raise RefusedMessageError(f"the message names {_clip(module + '.' + name, 60)!r}, which LeRobot's "
                                  f"async-inference protocol never sends; refused (docs/deploy.md: Security)")


class _Cleaner:
    """After loading: the message's values again, as plain containers, arrays, tensors and numeric
    scalars; every use of a value counts (a list of four references to the list before, 16 deep, is
    4**16 values to whatever walks it next)."""

    def __init__(self, limits: MessageLimits):
        self.limits, self.nodes = limits, 0

    def __call__(self, value, depth: int = 1):
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise OverLimitError(f"the message holds over {self.limits.max_nodes} values (MessageLimits.max_nodes); refused")
        if depth > self.limits.max_depth:
            raise OverLimitError(f"the message nests over {self.limits.max_depth} levels (MessageLimits.max_depth); refused")
        kind = type(value)
        if value is None or kind in (bool, int, float, str, bytes):
            return value
        if kind is _Array or (kind is _Held and type(value.value) is torch.Tensor):
            return value.array if kind is _Array else value.value
        if kind is dict or kind is collections.OrderedDict:  # str keys: int keys can collide (quadratic)
            if not all(type(k) is str for k in value):
                raise RefusedMessageError("the message has a dict key that is not a str; refused")
            return kind((k, self(v, depth + 1)) for k, v in value.items())
        if kind is list or kind is tuple:
            return kind(self(v, depth + 1) for v in value)
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return value
        raise RefusedMessageError(f"the message holds a {_clip(kind.__name__, 40)}, which LeRobot's never do; refused")


def _describe(e: Exception) -> str:
    try:  # str() of what the message put in the error can itself fail
        return _clip(f"{type(e).__name__}: {e}", 100)
    except Exception:  # noqa: BLE001
        return type(e).__name__


def _load(data: bytes, expected: type, limits: MessageLimits):
    scan_opcodes(data, limits.max_opcodes)
    message = MessageUnpickler(io.BytesIO(data), limits).load()
    if not isinstance(message, expected):
        raise RefusedMessageError(f"expected a {expected.__name__}, got a {_clip(type(message).__name__, 40)}")
    # LeRobot's own class again (the throwaway subclass compares unequal to it), field by field
    fields = [f.name for f in dataclasses.fields(expected)]
    missing = [f for f in fields if not hasattr(message, f)]
    if missing:
        raise RefusedMessageError(f"the {expected.__name__} has no {missing}; refused")
    clean = _Cleaner(limits)
    return expected(**{f: clean(getattr(message, f)) for f in fields})


def load_message(data: bytes, expected: type, limits: MessageLimits = DEFAULT_LIMITS):
    """Unpickle a client message with the allow-list within ``limits``; it must be an instance of
    ``expected``. Raises :class:`OverLimitError` over a limit, :class:`RefusedMessageError` otherwise."""
    if len(data) > limits.max_message_bytes:
        raise OverLimitError(f"the message is over {limits.max_message_bytes} bytes (MessageLimits.max_message_bytes); refused")
    try:
        return _load(data, expected, limits)
    except RefusedMessageError as e:
        if len(str(e)) <= 190:
            raise
        raise type(e)(_clip(str(e))) from None
    except Exception as e:  # noqa: BLE001  (a truncated or corrupt pickle from the network)
        raise RefusedMessageError(f"the message is not a readable {expected.__name__} ({_describe(e)})") from e
