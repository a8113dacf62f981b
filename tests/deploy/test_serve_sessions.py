"""`vla serve` against hostile and clumsy clients, over real gRPC on 127.0.0.1: one robot session at a
time, observations validated before LeRobot's queue, streams bounded in chunks, bytes and time, and a
refusal log that keeps counts and short reasons. Each client gets its own connection (a local
subchannel pool), as two robot processes would."""

from __future__ import annotations

import pickle
import threading
import time

import grpc
import numpy as np
import pytest
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedObservation
from lerobot.transport import services_pb2, services_pb2_grpc

from vla_pipeline.checkpoint.io import compute_checkpoint_id
from vla_pipeline.deploy.messages import MessageLimits, OverLimitError
from vla_pipeline.deploy.server import ServeConfig, make_server
from vla_pipeline.deploy.session import STREAM_SLOT_WAIT_S, SessionLimits, Sessions

LEKIWI = ["arm_shoulder_pan.pos", "arm_shoulder_lift.pos", "arm_elbow_flex.pos", "arm_wrist_flex.pos",
          "arm_wrist_roll.pos", "arm_gripper.pos", "x.vel", "y.vel", "theta.vel"]
BASE = ("x.vel", "y.vel", "theta.vel")
LIMITS = SessionLimits(session_timeout_s=1.0, stream_idle_s=0.5, stream_max_s=3.0, max_chunks=8)
MAX_BYTES = 512 * 1024
CALL_TIMEOUT = 30


@pytest.fixture(scope="module")
def served(tiny_run):
    cfg = ServeConfig(tiny_run.train, port=0, noise_seed=7, similarity_atol=0, limits=LIMITS,
                      message_limits=MessageLimits(max_message_bytes=MAX_BYTES), obs_queue_timeout=5.0)
    server, servicer = make_server(cfg)
    server.start()
    yield servicer
    server.stop(grace=0)


class Client:
    """One robot client: its own channel and connection, so its own gRPC peer."""

    def __init__(self, servicer):
        self.servicer = servicer
        self.channel = grpc.insecure_channel(f"127.0.0.1:{servicer.config.port}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = services_pb2_grpc.AsyncInferenceStub(self.channel)

    def ready(self, wait_s: float = 0.0):
        """Ready; with ``wait_s``, retried while an earlier test's client still holds the session."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.stub.Ready(services_pb2.Empty(), timeout=CALL_TIMEOUT)
            except grpc.RpcError as e:
                if "holds the session" not in (e.details() or "") or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def instruct(self, names):
        features = {"observation.state": {"dtype": "float32", "shape": (len(names),), "names": list(names)},
                    "observation.images.front": {"dtype": "image", "shape": (32, 40, 3)},
                    "observation.images.wrist": {"dtype": "image", "shape": (32, 40, 3)}}
        spec = RemotePolicyConfig("pi05", compute_checkpoint_id(self.servicer.deployed.ckpt), features, 10)
        return self.stub.SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(spec)),
                                                timeout=CALL_TIMEOUT)

    def connect(self, names=LEKIWI):
        self.ready(wait_s=3 * LIMITS.session_timeout_s)
        self.instruct(names)
        return self

    def observe(self, observation: TimedObservation):
        return self.send_chunks([(services_pb2.TRANSFER_END, pickle.dumps(observation))])

    def send_chunks(self, chunks, pause_s: float = 0.0):
        def stream():
            for state, data in chunks:
                yield services_pb2.Observation(transfer_state=state, data=data)
                time.sleep(pause_s)
        return self.stub.SendObservations(stream(), timeout=CALL_TIMEOUT)

    def actions(self) -> list:
        reply = self.stub.GetActions(services_pb2.Empty(), timeout=CALL_TIMEOUT)
        return pickle.loads(reply.data) if reply.data else []  # our own server's reply

    def close(self):
        self.channel.close()


@pytest.fixture
def client(served):
    c = Client(served).connect()
    yield c
    c.close()


def good_observation(step: int = 0, **changes) -> TimedObservation:
    image = np.full((32, 40, 3), 100, np.uint8)
    raw = {**dict.fromkeys(LEKIWI, 0.0), "arm_shoulder_lift.pos": 10.0, "front": image, "wrist": image,
           "task": "pick up the cube"}
    timing = {"timestamp": time.time(), "timestep": step, "must_go": True}
    timing.update({k: changes.pop(k) for k in list(changes) if k in timing})
    return TimedObservation(timing["timestamp"], timing["timestep"], {**raw, **changes}, timing["must_go"])


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def test_a_second_client_cannot_steer_the_first_robot(served, client):
    """Client B, with the same names reordered, moved LeKiwi's base through A's chunks."""
    other = Client(served)
    try:
        e = refused(other.ready)
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "holds the session" in e.details()
        e = refused(lambda: other.instruct(list(reversed(LEKIWI))))
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "send Ready first" in e.details()
        e = refused(lambda: other.observe(good_observation()))
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        e = refused(other.actions)
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        other.close()
    client.observe(good_observation())
    chunk = client.actions()
    assert chunk, "the owner got no actions"
    for action in chunk:
        values = dict(zip(LEKIWI, action.get_action().tolist(), strict=True))
        assert all(values[n] == 0.0 for n in BASE), f"the base moves: {values}"
    assert list(served.served[-1].robot_actions[0]) == LEKIWI


def test_the_owner_cannot_change_the_action_order_without_a_new_session(served, client):
    e = refused(lambda: client.instruct(list(reversed(LEKIWI))))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "fixed at connect" in e.details()
    assert served.robot_names == tuple(LEKIWI)
    client.instruct(LEKIWI)  # the same order again is fine


def test_a_silent_owner_loses_the_session_to_the_next_robot(served, client):
    time.sleep(LIMITS.session_timeout_s + 0.3)
    other = Client(served)
    try:
        other.ready()
        e = refused(lambda: client.observe(good_observation()))
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert served.robot_names == (), "the new session inherited the old robot's action order"
    finally:
        other.close()


def test_ready_gives_the_session_fresh_server_state(served, client):
    for step in range(3):
        client.observe(good_observation(step))
    assert served.fps_tracker.total_obs_count == 3 and served.observation_queue.qsize() == 1
    client.ready()
    assert served.fps_tracker.total_obs_count == 0 and served.observation_queue.empty()
    assert served.fps_tracker.first_timestamp is None and served.deployed.adapter is None


@pytest.mark.parametrize("changes, says", [
    ({"timestamp": "yesterday"}, "timestamp must be a finite number"),
    ({"timestamp": float("nan")}, "timestamp must be a finite number"),
    ({"timestep": None}, "timestep must be a non-negative integer"),
    ({"must_go": np.int64(1)}, "must_go must be a bool"),
    ({"arm_gripper.pos": float("nan")}, "nothing is predicted from a non-finite state"),
    ({"arm_gripper.pos": float("inf")}, "non-finite state"),
    ({"arm_gripper.pos": 1e30}, "far outside the contract's range"),
    ({"arm_gripper.pos": "12.5"}, "it must be one number"),
    ({"arm_gripper.pos": np.zeros(2)}, "it must be one number"),
    ({"front": np.full((32, 40, 3), 100, np.int64)}, "images of dtype int64 are refused"),
    ({"front": np.full((32, 40, 3), 100.0, np.float32)}, "float pixels must lie in [0, 1]"),
    ({"front": np.zeros((0, 0, 3), np.uint8)}, "an image must be HxWx3"),
    ({"front": "not an image"}, "not an array"),
    ({"task": 7}, "the task is a int"),
    ({"task": ""}, "the observation has no task"),
    ({"episode_index": "3"}, "episode_index must be a non-negative integer"),
])
def test_an_observation_the_policy_must_not_run_on_is_refused_before_the_queue(served, client, changes, says):
    """These were served (NaN states got finite actions, int64 images other actions than their uint8
    pixels) or made GetActions return nothing, leaving the robot still with no error."""
    e = refused(lambda: client.observe(good_observation(**changes)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert says in e.details()
    assert served.observation_queue.empty(), "the refused observation reached LeRobot's queue"
    client.observe(good_observation(1))  # the server still serves the same client
    assert client.actions(), "a good observation after the refused one got no actions"


def test_a_stalled_observation_stream_is_cancelled_and_frees_its_thread(served, client):
    start = time.monotonic()
    e = refused(lambda: client.send_chunks([(services_pb2.TRANSFER_BEGIN, b"x"), (services_pb2.TRANSFER_END, b"")],
                                           pause_s=5.0))
    assert e.code() == grpc.StatusCode.CANCELLED
    assert time.monotonic() - start < 3.0, "the stalled stream was held past the idle limit"
    # the client sees CANCELLED as the watchdog cancels; the handler's thread records why a moment later,
    # beside what the server refused for other clients meanwhile (another's session still open, under load)
    deadline = time.monotonic() + 5.0
    while not any("no chunk for" in r for r in list(served.refused)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("no chunk for" in r for r in list(served.refused)), list(served.refused)
    client.observe(good_observation())


def test_observations_over_the_chunk_and_byte_limits_are_refused(served, client):
    many = [(services_pb2.TRANSFER_BEGIN, b"x")] + [(services_pb2.TRANSFER_MIDDLE, b"x")] * LIMITS.max_chunks
    e = refused(lambda: client.send_chunks(many))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "chunks" in e.details()
    big = [(services_pb2.TRANSFER_BEGIN, bytes(MAX_BYTES // 2))] + [(services_pb2.TRANSFER_MIDDLE, bytes(MAX_BYTES // 2))] * 2
    e = refused(lambda: client.send_chunks(big))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and f"over {MAX_BYTES} bytes" in e.details()
    e = refused(lambda: client.send_chunks([(services_pb2.TRANSFER_END, bytes(LIMITS.grpc_message_bytes + 1))]))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    client.observe(good_observation())


def test_a_stream_over_the_limit_gets_the_slot_a_leaving_stream_frees_or_is_refused() -> None:
    """gRPC refuses an oversized message to the client before the refused stream's handler has left: the
    client's next observation must not be refused for a stream that is closing."""
    sessions = Sessions(SessionLimits())
    session = sessions.start("robot")
    first = sessions.stream(session)
    first.__enter__()
    threading.Timer(0.2, first.__exit__, (None, None, None)).start()
    with sessions.stream(session):  # waits for the first to leave
        assert session.streams == 1
        start = time.monotonic()
        with pytest.raises(OverLimitError, match="1 observation streams already open"), sessions.stream(session):
            pass
        assert time.monotonic() - start >= STREAM_SLOT_WAIT_S - 0.05  # refused once the wait ran out
    assert session.streams == 0


def test_idle_streams_from_other_clients_do_not_hold_the_server(served, client):
    """Four idle streams held every worker thread; now another client's stream is refused at once."""
    others = [Client(served) for _ in range(6)]
    stop = threading.Event()

    def idle():
        yield services_pb2.Observation(transfer_state=services_pb2.TRANSFER_BEGIN, data=b"x")
        stop.wait(10)

    try:
        start = time.monotonic()
        for other in others:
            e = refused(lambda o=other: o.stub.SendObservations(idle(), timeout=CALL_TIMEOUT))
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert time.monotonic() - start < 5.0
        client.observe(good_observation())
        assert client.actions()
    finally:
        stop.set()
        for other in others:
            other.close()


def test_the_refusal_log_keeps_counts_and_short_reasons(served, client):
    """Every refused message's key list was kept (+192 MB after 20 refusals)."""
    junk = {f"key_{i:06d}_{'x' * 200}": 0.0 for i in range(1000)}
    before = served.refusals["INVALID_ARGUMENT"]
    for _ in range(20):
        observation = good_observation(**junk)
        del observation.observation["arm_gripper.pos"]
        e = refused(lambda o=observation: client.observe(o))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.details()) <= 300
    assert served.refusals["INVALID_ARGUMENT"] - before == 20
    assert all(len(reason) <= 300 for reason in served.refused)
    assert "arm_gripper.pos" in served.refused[-1]


def test_a_cpu_bomb_is_refused_and_the_robot_keeps_its_round_trip(served, client):
    """306 bytes of shared references (``level = [level] * 4`` sixteen times) made the value walk visit
    4**16 values: one message tripled a good client's round trip, four stopped the server for hours."""
    level: list = []
    for _ in range(16):
        level = [level] * 4
    bomb = good_observation(bomb=level)
    start = time.monotonic()
    for _ in range(4):
        e = refused(lambda: client.observe(bomb))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
    assert time.monotonic() - start < 5.0, "the bombs took the server's time"
    start = time.monotonic()
    client.observe(good_observation(1))
    assert client.actions() and time.monotonic() - start < 10.0
