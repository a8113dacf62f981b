"""The allow-list unpickler: LeRobot's own messages (numpy images and scalars, torch tensors) come
through unchanged; anything else is refused by name before it is called."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation

from vla_pipeline.deploy.messages import RefusedMessageError, load_message


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
    with pytest.raises(RefusedMessageError, match="dtype object"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"arm_gripper.pos": forged})), TimedObservation)
    raw = Payload(np.ndarray, (1,), np.dtype("f8"), b"A" * 8)  # any direct call is refused
    with pytest.raises(RefusedMessageError, match="numpy.ndarray directly"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"arm_gripper.pos": raw})), TimedObservation)
    objects = np.array([1, "x"], dtype=object)  # rebuilt the way numpy pickles arrays, object dtype
    with pytest.raises(RefusedMessageError, match="dtype object"):
        load_message(pickle.dumps(TimedObservation(0.0, 0, {"front": objects})), TimedObservation)


def test_a_refused_message_cannot_change_lerobots_classes_for_the_next_one():
    """pickle's BUILD sets attributes on whatever it is given, here LeRobot's message class itself."""
    from lerobot.async_inference import helpers

    original = helpers.TimedObservation.get_observation
    payload = (b"\x80\x04clerobot.async_inference.helpers\nTimedObservation\nN}\x8c\x0fget_observation"
               b"ccollections\nOrderedDict\ns\x86b.")
    with pytest.raises(RefusedMessageError, match="expected a TimedObservation"):
        load_message(payload, TimedObservation)
    assert helpers.TimedObservation.get_observation is original
    message = load_message(pickle.dumps(TimedObservation(0.0, 0, {"task": "pick"})), TimedObservation)
    assert type(message) is TimedObservation and message.get_observation() == {"task": "pick"}
