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
