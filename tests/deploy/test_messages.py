"""The allow-list unpickler: LeRobot's own messages (numpy images and scalars, torch tensors) come
through unchanged; anything else is refused by name before it is called; what a message may cost
(crash, CPU, memory) is bounded before it runs (issue 28)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import signal
import struct
import sys
import time
import tracemalloc
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation

from vla_pipeline.deploy.messages import (
    DEFAULT_LIMITS,
    MessageLimits,
    OverLimitError,
    RefusedMessageError,
    load_message,
)

from procs import run_bounded

# the functions numpy and torch pickle with, whatever this numpy calls them (numpy._core or numpy.core)
RECONSTRUCT = np.zeros(1).__reduce__()[0]
SCALAR = np.float32(0).__reduce__()[0]
REBUILD_TENSOR = torch._utils._rebuild_tensor_v2
REPO = Path(__file__).resolve().parents[2]


def test_lerobot_messages_come_through_unchanged():
    observation = {"arm_gripper.pos": np.float32(12.5), "x.vel": 0.0, "task": "pick",
                   "front": np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3), "state": torch.arange(3.0)}
    message = load_message(pickle.dumps(TimedObservation(1.5, 3, observation, must_go=True)), TimedObservation)
    assert (message.timestamp, message.timestep, message.must_go) == (1.5, 3, True)
    got = message.get_observation()
    np.testing.assert_array_equal(got["front"], observation["front"])
    assert got["arm_gripper.pos"] == np.float32(12.5) and torch.equal(got["state"], torch.arange(3.0))
    spec = RemotePolicyConfig("pi05", "abc", {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]}}, 10)
    assert load_message(pickle.dumps(spec), RemotePolicyConfig) == spec
    action = load_message(pickle.dumps(TimedAction(0.0, 1, torch.ones(9))), TimedAction)
    assert torch.equal(action.get_action(), torch.ones(9))


class Payload:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("payload, named", [
    (Payload(os.system, "true"), "system"),
    (Payload(eval, "1"), "builtins.eval"),
    (Payload(getattr, object, "__subclasses__"), "builtins.getattr"),
])
def test_a_class_outside_the_allow_list_is_refused_by_name(payload, named):
    observation = TimedObservation(0.0, 0, {"task": payload})
    with pytest.raises(RefusedMessageError, match=named):
        load_message(pickle.dumps(observation), TimedObservation)


def test_a_tensor_storage_is_read_with_weights_only():
    """A tensor's storage travels as torch.save bytes; a planted object inside them is refused too."""
    class Planted:
        def __reduce__(self):
            return (os.system, ("true",))

    buffer = io.BytesIO()
    torch.save({"x": Planted()}, buffer)

    class StorageLike:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buffer.getvalue(),))

    with pytest.raises(RefusedMessageError, match="not a readable TimedObservation"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"task": StorageLike()})), TimedObservation)


def test_another_message_type_or_broken_bytes_are_refused():
    with pytest.raises(RefusedMessageError, match="expected a RemotePolicyConfig, got a TimedObservation"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {})), RemotePolicyConfig)
    with pytest.raises(RefusedMessageError, match="not a readable"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {}))[:-5], TimedObservation)


def test_an_array_of_forged_object_pointers_is_refused():
    """numpy.ndarray's constructor takes a raw buffer: with an object dtype, the bytes are pointers."""
    forged = Payload(np.ndarray, (1,), np.dtype("O"), b"A" * 8)
    with pytest.raises(RefusedMessageError, match="numpy dtype other than bool"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"arm_gripper.pos": forged})), TimedObservation)
    raw = Payload(np.ndarray, (1,), np.dtype("f8"), b"A" * 8)  # any direct call is refused
    with pytest.raises(RefusedMessageError, match="numpy.ndarray directly"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"arm_gripper.pos": raw})), TimedObservation)
    objects = np.array([1, "x"], dtype=object)  # rebuilt the way numpy pickles arrays, object dtype
    with pytest.raises(RefusedMessageError, match="numpy dtype other than bool"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"front": objects})), TimedObservation)


def test_a_refused_message_cannot_change_lerobots_classes_for_the_next_one():
    """pickle's BUILD sets attributes on whatever it is given, here LeRobot's message class itself."""
    from lerobot.async_inference import helpers

    original = helpers.TimedObservation.get_observation
    payload = (b"\x80\x04clerobot.async_inference.helpers\nTimedObservation\nN}\x8c\x0fget_observation"
               b"ccollections\nOrderedDict\ns\x86b.")
    with pytest.raises(RefusedMessageError, match="sets attributes on LeRobot's class TimedObservation"):
        load_message(payload, TimedObservation)
    assert helpers.TimedObservation.get_observation is original
    message = load_message(pickle.dumps(TimedObservation(0.0, 0, {"task": "pick"})), TimedObservation)
    assert type(message) is TimedObservation and message.get_observation() == {"task": "pick"}


class Built:
    """Pickles as ``fn(*args)`` followed by BUILD with ``state`` (pickle calls ``__setstate__(state)``)."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def observation(**values) -> bytes:
    return pickle.dumps(TimedObservation(0.0, 0, {"task": "pick", **values}))


def storage_of(tensor: torch.Tensor):
    """The storage object torch pickles a tensor with (``torch.save`` bytes through ``_load_from_bytes``)."""
    return tensor.__reduce_ex__(4)[1][0]


@contextlib.contextmanager
def alarm(seconds: float):
    """Interrupt a run-away load (on the old code the CPU bomb below walks 4**16 values)."""
    def stop(*_):
        raise TimeoutError(f"still loading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fields_past_the_end(code: str):
    """``numpy.dtype(code)``, then BUILD gives it a float64 field 1 GiB past its 8 bytes."""
    return Built(np.dtype, (code, False, True), (3, "|", None, ("a",), {"a": (np.dtype("f8"), 1 << 30)}, 8, 1, 16))


CHILD = """
import struct, sys
import numpy as np
from lerobot.async_inference.helpers import TimedObservation
from vla_pipeline.deploy.messages import RefusedMessageError, load_message
data = sys.stdin.buffer.read()
while data:
    n = struct.unpack("<I", data[:4])[0]
    payload, data = data[4:4 + n], data[4 + n:]
    try:
        obs = load_message(payload, TimedObservation)
    except RefusedMessageError as e:
        print("refused:", e, flush=True)
        continue
    print("accepted", flush=True)
    bool(obs.must_go)  # what LeRobot's server does with every observation
    print([repr(np.asarray(v)) for v in obs.get_observation().values()], flush=True)
"""


def test_a_numpy_dtype_with_a_field_past_its_bytes_is_refused_without_a_crash():
    """The BUILD opcode runs ``dtype.__setstate__``: a field at offset 1 GiB of an 8-byte scalar made
    LeRobot's ``bool(obs.must_go)`` segfault the server. Loaded in a child so a crash fails the test."""
    cases = [
        pickle.dumps(TimedObservation(0.0, 0, {}, must_go=Built(SCALAR, (fields_past_the_end("V8"), bytes(8))))),
        pickle.dumps(TimedObservation(0.0, 0, {}, must_go=Built(SCALAR, (fields_past_the_end("f8"), bytes(8))))),
        observation(front=Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (1,), fields_past_the_end("V8"), False, bytes(8)))),
        observation(front=Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (1,), fields_past_the_end("f8"), False, bytes(8)))),
    ]
    stdin = b"".join(struct.pack("<I", len(c)) + c for c in cases)
    child = run_bounded([sys.executable, "-c", CHILD], input=stdin, capture_output=True, timeout=300, cwd=REPO,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = child.stdout.decode()
    assert child.returncode == 0, f"the child died ({child.returncode}): {out} {child.stderr.decode()[-2000:]}"
    assert out.count("refused: ") == len(cases) and "accepted" not in out, out
    assert out.count("numpy dtype") == len(cases), out


def test_a_list_of_shared_references_is_refused_quickly():
    """306 bytes: ``level = [level] * 4`` sixteen times is 4**16 values to whatever walks it."""
    level: list = []
    for _ in range(16):
        level = [level] * 4
    data = observation(x=level)
    assert len(data) < 400
    start = time.perf_counter()
    with alarm(30), pytest.raises(OverLimitError, match="max_nodes"):
        load_message(data, TimedObservation)
    assert time.perf_counter() - start < 2


@contextlib.contextmanager
def allocations(limit_mb: float):
    """Python's and numpy's allocations (both traced by tracemalloc) peak under ``limit_mb``."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < limit_mb, f"{peak:.0f} MB allocated"


@pytest.mark.parametrize("array", [
    Built(RECONSTRUCT, (np.ndarray, (8000, 8000, 3), b"d")),  # 1.5 GB declared in 92 bytes, no data
    Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (8000, 8000, 3), np.dtype("f8"), False, b"")),
    Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2, 2), np.dtype("f8"), False, bytes(8))),
], ids=["reconstruct", "build-no-data", "build-short-data"])
def test_an_array_is_refused_unless_its_bytes_are_all_there_before_anything_is_allocated(array):
    data = observation(front=array)
    with allocations(16), pytest.raises(RefusedMessageError, match="array"):
        load_message(data, TimedObservation)


def test_the_bytes_of_a_messages_arrays_are_capped_even_when_shared():
    """One memoised 1 MiB bytes object behind 20 arrays: numpy copies it for each."""
    raw = bytes(2**20)
    arrays = [Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2**20,), np.dtype("u1"), False, raw)) for _ in range(20)]
    data = observation(frames=arrays)
    assert len(data) < 2**20 + 4096
    limits = MessageLimits(max_array_bytes=8 * 2**20)
    with allocations(24), pytest.raises(OverLimitError, match="max_array_bytes"):
        load_message(data, TimedObservation, limits)


@pytest.mark.parametrize("offset, size, stride", [
    (0, (8000, 8000, 3), (0, 0, 0)),  # one float read 192M times: 768 MB once materialised
    (0, (4, 4), (1, 1)),  # overlapping rows: 16 values from a storage of 8
    (1, (8,), (1,)),  # past the storage's end
    (0, (2,), (-1,)),
], ids=["zero-stride", "overlap", "past-end", "negative"])
def test_a_tensor_view_must_lie_inside_its_storage(offset, size, stride):
    tensor = Built(REBUILD_TENSOR, (storage_of(torch.arange(8.0)), offset, size, stride, False, OrderedDict()))
    with pytest.raises(RefusedMessageError, match="tensor"):
        load_message(observation(state=tensor), TimedObservation)


def test_build_on_a_tensor_cannot_set_its_view():
    """``Tensor.__setstate__`` with four items calls ``set_``: any size and stride on any storage."""
    storage = storage_of(torch.arange(8.0))
    tensor = Built(REBUILD_TENSOR, (storage, 0, (8,), (1,), False, OrderedDict()), (storage, 0, (8000, 8000, 3), (0, 0, 0)))
    with pytest.raises(RefusedMessageError, match="state of a tensor"):
        load_message(observation(state=tensor), TimedObservation)


def test_a_tensor_storage_declaring_more_than_it_carries_is_refused_before_allocation():
    """``torch.load`` allocates the size a storage's header declares before reading its bytes."""
    saved = io.BytesIO()
    torch.save(storage_of(torch.arange(3.0)), saved, _use_new_zipfile_serialization=False)
    assert saved.getvalue().count(b"K\x03Ntq") == 1
    forged = saved.getvalue().replace(b"K\x03Ntq", b"\x8a\x06" + (2**40).to_bytes(6, "little") + b"Ntq")
    storage = Built(torch.storage._load_from_bytes, (forged,))
    with pytest.raises(RefusedMessageError, match="declares a tensor storage") as refused:
        load_message(observation(state=Built(REBUILD_TENSOR, (storage, 0, (3,), (1,), False, OrderedDict()))),
                     TimedObservation)
    assert "allocate" not in str(refused.value)


def test_a_memo_index_out_of_order_is_refused_before_the_memo_grows():
    """``LONG_BINPUT 0x02ffffff``: 10 bytes that made the unpickler allocate a 800 MB memo."""
    with allocations(16), pytest.raises(RefusedMessageError, match="memo index"):
        load_message(b"\x80\x04Nr\xff\xff\xff\x02.", TimedObservation)


def test_every_limit_is_set_before_the_message_is_read():
    data = observation(x=[[1.0]], front=np.zeros((4, 5, 3), np.uint8), state=torch.ones(3))
    assert load_message(data, TimedObservation).observation["x"] == [[1.0]]
    for limits, named in [(MessageLimits(max_message_bytes=len(data) - 1), "max_message_bytes"),
                          (MessageLimits(max_opcodes=30), "max_opcodes"), (MessageLimits(max_nodes=8), "max_nodes"),
                          (MessageLimits(max_depth=3), "max_depth"), (MessageLimits(max_array_bytes=70), "max_array_bytes")]:
        with pytest.raises(OverLimitError, match=named):
            load_message(data, TimedObservation, limits)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_nodes = 10**9
    assert DEFAULT_LIMITS.max_message_bytes >= 4 * 1920 * 1080 * 3 and issubclass(OverLimitError, RefusedMessageError)


def long_global(module: str, name: str) -> bytes:
    return b"\x80\x04" + b"".join(b"X" + struct.pack("<I", len(s)) + s.encode() for s in (module, name)) + b"\x93."


@pytest.mark.parametrize("data", [
    long_global("A" * 10_000, "B"),
    long_global("numpy", "dtype")[:-1] + b"X" + struct.pack("<I", 10_000) + b"A" * 10_000 + b"\x85R.",
    observation(x={"A" * 10_000}),
    b"\x80\x04X" + struct.pack("<I", 10_000) + b"A" * 10_000 + b"\x94h\x07.",
], ids=["name", "dtype", "set", "memo"])
def test_refusals_are_short_and_never_echo_the_payload(data):
    """The server logs every refusal: at most a name's first 60 characters come back."""
    with pytest.raises(RefusedMessageError) as refused:
        load_message(data, TimedObservation)
    assert len(str(refused.value)) < 200 and "A" * 61 not in str(refused.value)


def test_numpy_1_names_and_every_array_and_tensor_layout_come_through_as_pickle_reads_them():
    observation_ = {"front": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "be": np.arange(3, dtype=">f4"),
                    "mask": np.array([True, False]), "empty": np.zeros((0, 3)), "c": np.complex64(1j),
                    "t": torch.arange(6.0).reshape(2, 3).t(), "zero_d": torch.tensor(3), "bf": torch.ones(2, dtype=torch.bfloat16),
                    "sliced": torch.arange(10)[2:8:2], "grad": torch.ones(2, requires_grad=True), "i": np.int64(-3)}
    data = pickle.dumps(TimedObservation(1.5, 7, observation_, must_go=True), protocol=3)  # no frames: names can change
    numpy1 = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert numpy1 != data
    for variant in (data, numpy1):
        got, want = load_message(variant, TimedObservation).get_observation(), pickle.loads(data).get_observation()
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert type(got[k]) is type(v), k
            if isinstance(v, torch.Tensor):
                assert got[k].dtype == v.dtype and got[k].stride() == v.stride() and torch.equal(got[k], v), k
                assert got[k].requires_grad == v.requires_grad
            else:
                assert np.asarray(got[k]).dtype.str == np.asarray(v).dtype.str and np.array_equal(got[k], v), k
                assert np.asarray(got[k]).flags.f_contiguous == np.asarray(v).flags.f_contiguous, k


def test_dict_keys_are_strings_and_colliding_int_keys_stay_cheap():
    """Ints that hash alike make building a dict quadratic; LeRobot's messages key dicts by str."""
    data = observation(x={(2**61 - 1) * i: 0 for i in range(4900)})
    start = time.perf_counter()
    with pytest.raises(RefusedMessageError, match="not a str"):
        load_message(data, TimedObservation)
    assert time.perf_counter() - start < 1


@pytest.mark.slow
def test_the_fuzzer_finds_no_crash_hang_or_memory_overrun(tmp_path):
    """benchmarks/fuzz_messages.py for 24 s (docs/deploy.md has a 10-minute run)."""
    out = tmp_path / "fuzz.json"
    run = run_bounded([sys.executable, str(REPO / "benchmarks" / "fuzz_messages.py"), "--minutes", "0.4", "--seed", "7",
                          "--out", str(out)], capture_output=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, (run.stdout.decode() + run.stderr.decode())[-4000:]
    summary = json.loads(out.read_text())
    assert summary["crashes"] == 0 and summary["cases"] > 500, summary
    assert set(summary["by_generator"]) == {"programs", "mutations", "attacks"}
    assert summary["peak_worker_rss_mb"] < summary["max_rss_mb"]


def test_an_ordered_dict_from_arguments_and_bools_other_than_0_and_1_are_refused():
    """``OrderedDict(shared)`` copies one memoised dict per call (pickle itself fills one with SETITEMS);
    a bool is the byte 0 or 1."""
    shared = {f"k{i}": 0 for i in range(100)}
    with pytest.raises(RefusedMessageError, match="OrderedDict with arguments"):
        load_message(observation(x=[Payload(OrderedDict, shared) for _ in range(3)]), TimedObservation)
    assert load_message(observation(x=OrderedDict(shared)), TimedObservation).observation["x"] == shared
    mask = Built(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype("b1"), False, b"\x00\x02"))
    with pytest.raises(RefusedMessageError, match="other bytes than 0 and 1"):
        load_message(observation(mask=mask), TimedObservation)
