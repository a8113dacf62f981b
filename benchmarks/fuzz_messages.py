"""Fuzz the message decoder of `vla serve` (``vla_pipeline.deploy.messages.load_message``).

    python benchmarks/fuzz_messages.py [--minutes 10] [--seed 0] [--out fuzz.json] [--max-rss-mb 1024]

hypothesis generates three kinds of client message, in turn:

* ``programs``: pickle programs over the opcodes and the names the allow-list permits (GLOBAL and
  STACK_GLOBAL of every allowed name and a few refused ones, REDUCE, NEWOBJ, BUILD on anything, MARK,
  TUPLE*, LIST/APPEND(S), DICT/SETITEM(S), sets, MEMOIZE/PUT/GET, ints, floats, bytes, strings, and the
  numpy dtype/array and torch tensor calls with random arguments and states);
* ``mutations``: real LeRobot messages (a ``TimedObservation`` with numpy images and scalars, floats,
  a task and tensors, under numpy 2 and numpy 1 names; a ``RemotePolicyConfig``; a ``TimedAction``)
  with bytes flipped, set, inserted, deleted, repeated, truncated, spliced with another message;
* ``attacks``: the known ones with random parameters: numpy dtype states (fields, offsets,
  subarrays, sizes), array shapes and data lengths, scalars, tensor views (sizes, strides, offsets)
  and forged storages, BUILD on tensors, shared-reference and deep-nesting bombs, memo indices,
  colliding dict keys, opcode floods.

Each message goes to a worker process that runs ``load_message`` with the server's default limits,
then what LeRobot's server does with a message (``bool(obs.must_go)``, ``get_timestamp()``,
``get_timestep()``, ``get_observation()``, every array and tensor materialised, ``repr`` of the
message). A worker that dies (a segfault) or takes over ``--case-timeout`` s is a failure: its case
goes to ``<out>.crashes/`` and a new worker starts. The worker's peak RSS is tracked; over
``--max-rss-mb`` is a failure. Prints progress every 30 s; writes a JSON summary to ``--out``; exits
1 on any crash, hang or memory overrun.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import pickle
import platform
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation

from vla_pipeline.deploy.messages import ALLOWED

EXPECTED = ("TimedObservation", "RemotePolicyConfig", "TimedAction")


# ---------------------------------------------------------------- the cases: (generator, expected class index, bytes)

class Built:
    """Pickles as ``fn(*args)``, then BUILD with ``state`` when there is one."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


RECONSTRUCT = np.zeros(1).__reduce__()[0]
SCALAR = np.float32(0).__reduce__()[0]
REBUILD_TENSOR = torch._utils._rebuild_tensor_v2
LOAD_STORAGE = torch.storage._load_from_bytes
CODES = ("f8", "f4", "f2", "f16", "u1", "i8", "b1", "c8", "c16", "V8", "V0", "O", "S4", "U2", "M8", "m8", "i3", "")
INTERESTING = (0, 1, -1, 2, 3, 7, 8, 16, 255, 256, 2**15, 2**16, 2**30, 2**31 - 1, -(2**31), 2**32, 2**40, 2**62,
               2**63 - 1, 2**64, -(2**63))
STRINGS = CODES + ("<", ">", "|", "=", "a", "b", "storage", "cpu", "cuda:0", "timestamp", "timestep", "observation",
                   "must_go", "task", "action", "policy_type", "lerobot_features", "__class__", "__dict__",
                   "__setstate__", "__reduce__", "get_observation", "little_endian")


def storage_bytes(tensor: torch.Tensor) -> bytes:
    """What ``_load_from_bytes`` gets for a tensor's storage (``torch.save``, legacy format)."""
    return tensor.__reduce_ex__(4)[1][0].__reduce__()[1][0]


def observation_message(protocol: int, numpy1: bool = False) -> bytes:
    values = {"shoulder_pan.pos": np.float32(1.5), "gripper.pos": 12.0, "task": "pick the cube",
              "front": np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), "wrist": np.zeros((2, 3, 3), np.uint8),
              "state": torch.arange(6.0).reshape(2, 3).t(), "count": np.int64(3), "flag": np.bool_(True)}
    data = pickle.dumps(TimedObservation(1.25, 7, values, must_go=True), protocol=protocol)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if numpy1 else data


def seed_messages() -> list[tuple[int, bytes]]:
    features = {"observation.state": {"dtype": "float32", "shape": (6,), "names": ["a", "b", "c", "d", "e", "f"]},
                "observation.images.front": {"dtype": "image", "shape": (480, 640, 3),
                                             "names": ["height", "width", "channels"]}}
    spec = RemotePolicyConfig("pi05", "ckpt", features, 10, "cpu", {"a": "b"})
    return ([(0, observation_message(p)) for p in (3, 4, 5)] + [(0, observation_message(3, numpy1=True))]
            + [(1, pickle.dumps(spec, protocol=p)) for p in (3, 4)]
            + [(2, pickle.dumps(TimedAction(0.5, 3, torch.ones(2, 9)), protocol=4))])


SEEDS = seed_messages()
STORAGES = [storage_bytes(t) for t in (torch.arange(8.0), torch.zeros(3, dtype=torch.uint8), torch.ones(2, dtype=torch.bool),
                                       torch.arange(4, dtype=torch.int64), torch.ones(1, dtype=torch.bfloat16))]


def small_ints():
    return st.one_of(st.integers(-3, 64), st.sampled_from(INTERESTING))


@st.composite
def mutations(draw):
    """A real message with 1 to 8 byte-level mutations."""
    kind, seed_data = draw(st.sampled_from(SEEDS))
    data = bytearray(seed_data)
    for _ in range(draw(st.integers(1, 8))):
        how = draw(st.sampled_from(("flip", "set", "insert", "delete", "repeat", "truncate", "splice", "int")))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        n = draw(st.integers(1, 16))
        if how == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and data:
            data[i] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, *b"(t]}Rb.h\x94\x93\x81\x85N")))
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[i:i + n]
        elif how == "repeat":
            data[i:i] = data[i:i + n] * draw(st.integers(1, 4))
        elif how == "truncate":
            del data[i:]
        elif how == "splice":
            other = draw(st.sampled_from(SEEDS))[1]
            j = draw(st.integers(0, len(other) - 1))
            data[i:] = other[j:j + draw(st.integers(1, 400))]
        elif how == "int" and len(data) > i + 4:
            data[i:i + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING)) % 2**32)
    return "mutations", kind, bytes(data)


NAMES = sorted(ALLOWED) + [("builtins", "getattr"), ("numpy", "frombuffer"), ("torch", "FloatStorage")]
CALLS = [n for n in NAMES if n[1] != "ndarray"]
PROGRAM_KINDS = ("none", "bool", "int", "float", "str", "bytes", "list", "tuple", "dict", "set", "get", "call",
                 "newobj", "build", "global", "dtype", "array", "tensor", "storage", "raw", "pop", "dup")
LEAF_KINDS = ("none", "bool", "int", "float", "str", "bytes", "get", "global", "raw")
RAW_OPCODES = b"(.012NIJKLMFGSTUVXabcdeghijklmopqrstu}]\x80\x81\x82\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e" \
              b"\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98"


class Program:
    """Emits a pickle program one value at a time (each ``value`` pushes about one object)."""

    def __init__(self, draw, protocol: int):
        self.draw, self.out, self.memo, self.protocol = draw, bytearray(b"\x80" + bytes([protocol])), 0, protocol

    def text(self, s: str) -> None:
        raw = s.encode("utf-8", "surrogatepass")
        self.out += (b"\x8c" + bytes([len(raw)]) if len(raw) < 256 else b"X" + struct.pack("<I", len(raw))) + raw

    def integer(self, v: int) -> None:
        if -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            raw = pickle.encode_long(v)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def blob(self, b: bytes) -> None:
        self.out += (b"C" + bytes([len(b)]) if len(b) < 256 else b"B" + struct.pack("<I", len(b))) + b

    def name(self, module: str, name: str) -> None:
        if self.draw(st.booleans()):
            self.out += f"c{module}\n{name}\n".encode()
        else:
            self.text(module), self.text(name)
            self.out += b"\x93"

    def args(self, depth: int, n: int | None = None) -> None:
        self.out += b"("
        for _ in range(self.draw(st.integers(0, 4)) if n is None else n):
            self.value(depth + 1)
        self.out += b"t"

    def value(self, depth: int) -> None:
        kind = self.draw(st.sampled_from(PROGRAM_KINDS if depth < 4 else LEAF_KINDS))
        getattr(self, f"v_{kind}", None)(depth) if hasattr(self, f"v_{kind}") else self.simple(kind)
        if self.draw(st.integers(0, 3)) == 0:
            self.out += b"\x94"
            self.memo += 1

    def simple(self, kind: str) -> None:
        draw = self.draw
        if kind == "none":
            self.out += b"N"
        elif kind == "bool":
            self.out += draw(st.sampled_from((b"\x88", b"\x89")))
        elif kind == "int":
            self.integer(draw(small_ints()))
        elif kind == "float":
            self.out += b"G" + struct.pack(">d", draw(st.floats(allow_nan=True)))
        elif kind == "str":
            self.text(draw(st.one_of(st.sampled_from(STRINGS), st.text(max_size=12))))
        elif kind == "bytes":
            self.blob(draw(st.one_of(st.binary(max_size=40), st.sampled_from(STORAGES),
                                     st.integers(0, 64).map(bytes))))
        elif kind == "get":
            self.out += b"h" + bytes([draw(st.integers(0, max(self.memo, 1)))]) if self.memo < 256 else b"N"
        elif kind == "global":
            self.name(*draw(st.sampled_from(NAMES)))
        elif kind == "raw":
            self.out += bytes([draw(st.sampled_from(RAW_OPCODES))])

    def items(self, depth: int, brackets: tuple[bytes, bytes], most: int, per_item: int) -> None:
        """A container: its opening opcodes, up to ``most`` items of ``per_item`` values each, its closing one."""
        self.out += brackets[0]
        for _ in range(self.draw(st.integers(0, most))):
            for _ in range(per_item):
                self.value(depth + 1)
        self.out += brackets[1]

    def v_list(self, depth: int) -> None:
        self.items(depth, (b"](", b"e"), 4, 1)

    def v_tuple(self, depth: int) -> None:
        self.args(depth)

    def v_dict(self, depth: int) -> None:
        self.items(depth, (b"}(", b"u"), 3, 2)

    def v_set(self, depth: int) -> None:
        self.items(depth, (b"\x8f(", b"\x90"), 3, 1)

    def v_call(self, depth: int) -> None:
        self.name(*self.draw(st.sampled_from(CALLS)))
        self.args(depth)
        self.out += b"R"
        if self.draw(st.booleans()):
            self.value(depth + 1)
            self.out += b"b"

    def v_newobj(self, depth: int) -> None:
        self.name(*self.draw(st.sampled_from(NAMES)))
        self.args(depth)
        self.out += b"\x81"

    def v_build(self, depth: int) -> None:
        self.value(depth + 1)
        self.value(depth + 1)
        self.out += b"b"

    def v_pop(self, depth: int) -> None:
        self.value(depth + 1)
        self.out += self.draw(st.sampled_from((b"0", b"2")))

    v_dup = v_pop

    def v_dtype(self, depth: int) -> None:
        """numpy.dtype(code, False, True), then BUILD with numpy's 8-item state, each item drawn."""
        draw = self.draw
        self.name("numpy", "dtype")
        self.out += b"("
        self.text(draw(st.sampled_from(CODES)))
        self.out += b"\x89\x88tR("
        self.integer(draw(st.sampled_from((3, 3, 4, 2))))
        self.text(draw(st.sampled_from(("<", ">", "|", "=", "x"))))
        for _ in range(3):  # subarray, names, fields
            self.value(depth + 1) if draw(st.integers(0, 2)) == 0 else self.simple("none")
        for _ in range(3):  # elsize, alignment, flags
            self.integer(draw(small_ints()))
        self.out += b"tb"

    def v_array(self, depth: int) -> None:
        """numpy's _reconstruct(ndarray, shape, b'b'), then BUILD with (1, shape, dtype, fortran, data)."""
        draw = self.draw
        self.name(draw(st.sampled_from(("numpy._core.multiarray", "numpy.core.multiarray"))), "_reconstruct")
        self.out += b"("
        self.name("numpy", "ndarray")
        self.value(depth + 1) if draw(st.integers(0, 4)) == 0 else self.out.extend(b"K\x00\x85")
        self.blob(b"b")
        self.out += b"tR(K\x01("
        for _ in range(draw(st.integers(0, 3))):
            self.integer(draw(small_ints()))
        self.out += b"t"
        self.v_dtype(depth + 1)
        self.out += draw(st.sampled_from((b"\x89", b"\x88")))
        self.blob(bytes(draw(st.sampled_from((0, 1, 2, 4, 8, 12, 16, 24, 64)))))
        self.out += b"tb"

    def v_storage(self, depth: int) -> None:
        self.name("torch.storage", "_load_from_bytes")
        self.out += b"("
        self.blob(self.draw(st.sampled_from(STORAGES)))
        self.out += b"tR"

    def v_tensor(self, depth: int) -> None:
        draw = self.draw
        self.name("torch._utils", "_rebuild_tensor_v2")
        self.out += b"("
        self.v_storage(depth + 1) if draw(st.integers(0, 4)) else self.value(depth + 1)
        self.integer(draw(small_ints()))
        for _ in range(2):  # size, stride
            self.out += b"("
            for _ in range(draw(st.integers(0, 3))):
                self.integer(draw(small_ints()))
            self.out += b"t"
        self.out += b"\x89"
        self.name("collections", "OrderedDict")
        self.out += b")R"
        if draw(st.integers(0, 5)) == 0:
            self.value(depth + 1)
        self.out += b"tR"


@st.composite
def programs(draw):
    """A pickle program over the allowed opcodes and names; most of them a message class BUILT with
    drawn fields, the others any value."""
    kind = draw(st.integers(0, 2))
    program = Program(draw, draw(st.sampled_from((2, 3, 4, 5))))
    if draw(st.integers(0, 4)):
        program.name("lerobot.async_inference.helpers", EXPECTED[kind] if draw(st.integers(0, 5)) else "TimedData")
        program.out += b")\x81}("
        fields = {0: ("timestamp", "timestep", "observation", "must_go"), 1: ("policy_type", "lerobot_features"),
                  2: ("timestamp", "timestep", "action")}[kind]
        for field in fields:
            program.text(field if draw(st.integers(0, 9)) else draw(st.sampled_from(STRINGS)))
            program.value(1)
        program.out += b"ub"
    else:
        program.value(0)
    return "programs", kind, bytes(program.out + b".")


@st.composite
def dtype_attacks(draw):
    """numpy.dtype(code) with a state from numpy's own shape: fields at any offset, subarrays, sizes."""
    offset = draw(st.sampled_from((0, 4, 8, 16, 2**20, 2**24, 2**30, 2**31 - 8, -8, -(2**30))))
    fields = draw(st.sampled_from((None, "one", "two")))
    names = None if fields is None else ("a",) if fields == "one" else ("a", "b")
    field_map = None if fields is None else {n: (np.dtype(draw(st.sampled_from(("f8", "u1", "V4")))), offset + 8 * i)
                                             for i, n in enumerate(names)}
    subarray = draw(st.sampled_from((None, None, (np.dtype("f8"), (2,)), (np.dtype("u1"), (2**20, 2**20)))))
    state = (draw(st.sampled_from((3, 3, 4))), draw(st.sampled_from(("<", ">", "|", "="))), subarray, names, field_map,
             draw(small_ints()), draw(st.sampled_from((-1, 1, 8, 16))), draw(st.sampled_from((0, 1, 16, 63, 255))))
    if state[0] == 4:
        state += ({"x": 1},)
    return Built(np.dtype, (draw(st.sampled_from(CODES)), False, True), state if draw(st.integers(0, 5)) else None)


@st.composite
def array_attacks(draw):
    shape = tuple(draw(st.lists(small_ints(), max_size=4)))
    dtype = draw(dtype_attacks()) if draw(st.booleans()) else np.dtype(draw(st.sampled_from(("f8", "u1", "b1"))))
    nbytes = draw(st.sampled_from((0, 1, 8, 12, 16, 24, 48, 64, 255)))
    first = (0,) if draw(st.integers(0, 4)) else tuple(draw(st.lists(small_ints(), max_size=3)))
    return Built(RECONSTRUCT, (np.ndarray, first, b"b"),
                 (draw(st.sampled_from((1, 1, 0, 2))), shape, dtype, draw(st.booleans()), bytes(nbytes)))


def forged_storage(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(STORAGES)))
    how = draw(st.sampled_from(("numel", "data", "name", "location", "view", "keys", "none")))
    if how == "numel":
        data = data.replace(b"K\x08Ntq", b"J" + struct.pack("<i", draw(small_ints()) % 2**31) + b"Ntq", 1)
    elif how == "data":
        del data[-draw(st.integers(1, 8)):]
    elif how == "name":
        data = data.replace(b"Storage", draw(st.sampled_from((b"Storagf", b"Storage\nx", b"Storag"))), 1)
    elif how == "location":
        data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0", 1)
    elif how == "view":
        data = data.replace(b"Ntq", b"(K\x00K\x00K\x08tq", 1)
    elif how == "keys":
        data = data.replace(b"a.", b"h\x01a.", 1)
    return bytes(data)


@st.composite
def tensor_attacks(draw):
    storage = Built(LOAD_STORAGE, (forged_storage(draw) if draw(st.booleans()) else draw(st.sampled_from(STORAGES)),))
    size = tuple(draw(st.lists(small_ints(), max_size=3)))
    stride = tuple(draw(st.lists(small_ints(), min_size=len(size), max_size=len(size) + draw(st.integers(0, 1)))))
    hooks = collections.OrderedDict() if draw(st.integers(0, 5)) else collections.OrderedDict({1: 2})
    args = (storage, draw(small_ints()), size, stride, draw(st.booleans()), hooks)
    state = None
    if draw(st.integers(0, 4)) == 0:  # Tensor.__setstate__: 4 items call set_
        state = draw(st.sampled_from(((storage, 0, size, stride), (storage, 0, (2**20, 2**20), (0, 0)),
                                      (True, None, collections.OrderedDict()), (None, 1, 2, 3, 4))))
    return Built(REBUILD_TENSOR, args + (({"x": 1},) if draw(st.integers(0, 9)) == 0 else ()), state)


def shared_bomb(fanout: int, depth: int, kind: str):
    level: object = []
    for _ in range(depth):
        level = [level] * fanout if kind == "list" else {f"k{i}": level for i in range(fanout)} if kind == "dict" \
            else (level,) * fanout
    return level


@functools.cache
def colliding_keys(n: int) -> bytes:
    """A dict whose int keys all hash alike: building it is quadratic (n = 9000 stays under max_opcodes)."""
    return pickle.dumps(TimedObservation(0.0, 0, {"task": "x", "value": {(2**61 - 1) * i: 0 for i in range(n)}}))


def deep(depth: int):
    value: object = 1.0
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def attacks(draw):
    """A known attack with drawn parameters, in an observation (or as must_go), or a raw pickle."""
    what = draw(st.sampled_from(("dtype", "scalar", "array", "tensor", "shared", "deep", "memo", "flood", "keys",
                                 "binbytes")))
    if what == "memo":
        op = draw(st.sampled_from((b"q", b"r", b"p")))
        index = draw(st.sampled_from((0, 1, 255, 2**16, 2**24, 2**28, 2**31 - 1, 2**32 - 1)))
        arg = bytes([index % 256]) if op == b"q" else struct.pack("<I", index) if op == b"r" else b"%d\n" % index
        return "attacks", 0, b"\x80\x04N" + op + arg + b"0N."
    if what == "flood":
        return "attacks", 0, b"\x80\x04" + draw(st.sampled_from((b"N", b"]", b"}", b"N0", b")"))) * draw(
            st.sampled_from((10_000, 19_990, 25_000, 200_000))) + b"."
    if what == "keys":
        return "attacks", 0, colliding_keys(draw(st.sampled_from((100, 1000, 5000, 9000))))
    if what == "deep" and draw(st.booleans()):  # nested lists 10**5 deep, no pickler recursion needed
        depth = draw(st.sampled_from((1000, 100_000)))
        return "attacks", 0, b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."
    if what == "binbytes":
        return "attacks", 0, b"\x80\x04\x8e" + struct.pack("<Q", draw(st.sampled_from((2**31, 2**40, 2**63)))) + b"x."
    value = {
        "dtype": lambda: draw(dtype_attacks()),
        "scalar": lambda: Built(SCALAR, (draw(dtype_attacks()), bytes(draw(st.sampled_from((0, 1, 4, 8, 16)))))),
        "array": lambda: draw(array_attacks()),
        "tensor": lambda: draw(tensor_attacks()),
        "shared": lambda: shared_bomb(draw(st.integers(2, 8)), draw(st.integers(2, 26)),
                                      draw(st.sampled_from(("list", "dict", "tuple")))),
        "deep": lambda: deep(draw(st.sampled_from((5, 19, 20, 21, 100, 500)))),
    }[what]()
    where = draw(st.sampled_from(("observation", "must_go", "timestamp")))
    message = TimedObservation(0.0, 0, {"task": "x", "value": value} if where == "observation" else {"task": "x"},
                               must_go=value if where == "must_go" else True)
    if where == "timestamp":
        message.timestamp = value
    return "attacks", 0, pickle.dumps(message, protocol=draw(st.sampled_from((3, 4))))


GENERATORS = {"programs": programs(), "mutations": mutations(), "attacks": attacks()}


# ---------------------------------------------------------------- the worker (one process, many cases)

def touch(value) -> None:
    """Materialise a value the way LeRobot's server and its processors would."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous()
        float(value.float().sum()) if value.dtype.is_floating_point or value.dtype == torch.bool else int(value.sum())
        np.asarray(value.cpu().numpy() if value.dtype != torch.bfloat16 else value.float().numpy()).copy()
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.array(value, copy=True)
        array.tobytes()
        bool(array.any()) if array.size else None
        torch.from_numpy(np.ascontiguousarray(array)) if array.dtype.kind in "biuf" and array.ndim else None
    elif isinstance(value, dict):
        for k, v in value.items():
            touch(k)
            touch(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            touch(v)
    elif isinstance(value, (int, float)):
        float(value)


def use(message) -> None:
    """What LeRobot 0.4.2's policy server does with a message it received."""
    if hasattr(message, "must_go"):
        bool(message.must_go)
    if hasattr(message, "get_timestamp"):
        float(message.get_timestamp()), message.get_timestep()
    for name in ("observation", "action", "lerobot_features", "rename_map", "policy_type", "actions_per_chunk"):
        if hasattr(message, name):
            touch(getattr(message, name))
    repr(message)


def worker() -> None:
    """Read ``<kind byte><u32 length><pickle>`` from stdin, answer one JSON line per case."""
    import resource

    from lerobot.async_inference import helpers

    from vla_pipeline.deploy.messages import RefusedMessageError, load_message

    classes = [getattr(helpers, n) for n in EXPECTED]
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write(json.dumps({"baseline_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}) + "\n")
    stdout.flush()
    while header := stdin.read(5):
        kind, size = header[0], struct.unpack("<I", header[1:])[0]
        data = stdin.read(size)
        start = time.perf_counter()
        result = {}
        try:
            message = load_message(data, classes[kind % 3])
            result["status"] = "accepted"
            try:
                use(message)
            except Exception as e:  # noqa: BLE001  (an error is fine; a crash or a hang is not)
                result["use_error"] = type(e).__name__
        except RefusedMessageError as e:
            result |= {"status": "refused", "reason": f"{type(e).__name__}: {e}"}
        result |= {"ms": 1000 * (time.perf_counter() - start),
                   "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        stdout.write(json.dumps(result) + "\n")
        stdout.flush()


# ---------------------------------------------------------------- the parent

class Worker:
    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        ready = self.proc.stdout.readline()  # after its imports
        if not ready:
            raise SystemExit(f"the fuzz worker did not start: {self.proc.stderr.read().decode()[-2000:]}")
        self.baseline_rss_mb = json.loads(ready)["baseline_rss_mb"]

    def run(self, kind: int, data: bytes, timeout: float) -> dict | None:
        """The worker's answer, or None when it died or hung (then it is gone)."""
        try:
            self.proc.stdin.write(bytes([kind]) + struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
        except (BrokenPipeError, OSError):
            line = b""
        if line:
            return json.loads(line)
        self.proc.kill()
        self.proc.wait()
        return None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def reason_key(reason: str) -> str:
    """A refusal's message without its numbers and quoted names, to count refusals by reason."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", reason))[:110]


class Campaign:
    def __init__(self, args):
        self.args, self.worker = args, Worker()
        self.start = self.last_report = time.monotonic()
        self.cases = self.accepted = self.restarts = 0
        self.crashes: list[dict] = []
        self.refused: collections.Counter = collections.Counter()
        self.use_errors: collections.Counter = collections.Counter()
        self.by_generator: collections.Counter = collections.Counter()
        self.peak_rss_mb = self.slowest_ms = self.worker_ms = 0.0
        self.crash_dir = Path(str(args.out) + ".crashes") if args.out else Path("fuzz_messages.crashes")

    def time_left(self) -> bool:
        return time.monotonic() - self.start < 60 * self.args.minutes

    def run(self, generator: str, kind: int, data: bytes) -> None:  # noqa: C901
        result = self.worker.run(kind, data, self.args.case_timeout)
        self.cases += 1
        self.by_generator[generator] += 1
        if result is None:
            self.record_crash(generator, kind, data)
        else:
            self.peak_rss_mb = max(self.peak_rss_mb, result["rss_mb"])
            self.slowest_ms = max(self.slowest_ms, result["ms"])
            self.worker_ms += result["ms"]
            if result["status"] == "accepted":
                self.accepted += 1
                if "use_error" in result:
                    self.use_errors[result["use_error"]] += 1
            else:
                self.refused[reason_key(result["reason"])] += 1
            if result["rss_mb"] > self.args.max_rss_mb:
                self.record_crash(generator, kind, data, why=f"worker RSS {result['rss_mb']:.0f} MB")
        if time.monotonic() - self.last_report >= 30:
            self.last_report = time.monotonic()
            print(self.progress(), flush=True)

    def record_crash(self, generator: str, kind: int, data: bytes, why: str | None = None) -> None:
        code = self.worker.proc.poll()
        stderr = self.worker.proc.stderr.read().decode(errors="replace")[-600:] if code is not None else ""
        why = why or (f"worker died ({code})" if code is not None else f"no answer in {self.args.case_timeout} s")
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        path = self.crash_dir / f"case{len(self.crashes)}_{EXPECTED[kind % 3]}.pickle"
        path.write_bytes(data)
        self.crashes.append({"generator": generator, "why": why, "case": str(path), "stderr": stderr})
        print(f"CRASH ({generator}): {why}; case written to {path}", flush=True)
        if self.worker.proc.poll() is None:
            self.worker.proc.kill()
            self.worker.proc.wait()
        self.worker, self.restarts = Worker(), self.restarts + 1

    def progress(self) -> str:
        elapsed = time.monotonic() - self.start
        return (f"{elapsed:6.0f} s: {self.cases} cases ({self.cases / elapsed:.0f}/s), {self.accepted} accepted, "
                f"{len(self.crashes)} crashes, worker peak RSS {self.peak_rss_mb:.0f} MB, slowest {self.slowest_ms:.0f} ms")

    def summary(self, argv: list[str]) -> dict:
        import numpy as np
        import torch

        return {
            "command": "python benchmarks/fuzz_messages.py " + " ".join(argv),
            "seed": self.args.seed, "minutes": self.args.minutes,
            "duration_s": round(time.monotonic() - self.start, 1),
            "cases": self.cases, "by_generator": dict(self.by_generator),
            "crashes": len(self.crashes), "crash_cases": self.crashes, "worker_restarts": self.restarts,
            "accepted": self.accepted, "errors_using_accepted": dict(self.use_errors),
            "refused": sum(self.refused.values()), "refused_by_reason": dict(self.refused.most_common(40)),
            "peak_worker_rss_mb": round(self.peak_rss_mb, 1), "max_rss_mb": self.args.max_rss_mb,
            "worker_rss_after_imports_mb": round(self.worker.baseline_rss_mb, 1),
            "slowest_case_ms": round(self.slowest_ms, 1),
            "mean_case_ms": round(self.worker_ms / max(self.cases, 1), 2),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__, "torch": torch.__version__},
        }


def fuzz(campaign: Campaign) -> None:
    """hypothesis draws the cases, in batches of 200 per generator, until the time is up."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    @settings(max_examples=200, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(*GENERATORS.values()))
    def one(case):
        if campaign.time_left():
            campaign.run(*case)

    batch = 0
    while campaign.time_left():
        seed(campaign.args.seed * 1_000_003 + batch)(one)()
        batch += 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON summary")
    parser.add_argument("--max-rss-mb", type=float, default=1024.0, help="the worker's peak RSS bound")
    parser.add_argument("--case-timeout", type=float, default=20.0, help="seconds one case may take")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    campaign = Campaign(args)
    try:
        fuzz(campaign)
    finally:
        campaign.worker.close()
    summary = campaign.summary(argv)
    print(campaign.progress())
    print(json.dumps({k: v for k, v in summary.items() if k not in ("refused_by_reason", "crash_cases")}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if campaign.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
