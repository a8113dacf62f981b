"""`vla serve` with LeRobot's own robot client: a replay robot (the frames of a held-out episode) connects
through LeRobot's `RobotClient` over gRPC; what the server returns must be what `vla evaluate` predicts for
the same frames and noise seed, and what the robot executes must be those predictions through the adapter."""

from __future__ import annotations

import pickle
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from lerobot.async_inference.configs import RobotClientConfig
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedObservation
from lerobot.async_inference.robot_client import RobotClient
from lerobot.transport import services_pb2, services_pb2_grpc
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import (
    compute_checkpoint_id,
    pretrained_dir_of,
    resolve_checkpoint,
    write_manifest,
)
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.deploy.config_replay import ReplayRobotConfig
from vla_pipeline.deploy.server import ServeConfig, make_server
from vla_pipeline.deploy.session import SessionLimits
from vla_pipeline.errors import ConfigError, ContractError
from vla_pipeline.eval.inference import predict_episodes

from conftest import vla

NOISE_SEED = 7


@pytest.fixture(scope="module")
def served(tiny_run):
    server, servicer = make_server(ServeConfig(tiny_run.train, port=0, noise_seed=NOISE_SEED, similarity_atol=0,
                                               limits=SessionLimits(session_timeout_s=1.0)))
    server.start()
    yield servicer
    server.stop(grace=0)


def held_out_episode(servicer) -> int:
    return servicer.deployed.ckpt.split["val"][0]


class RecordingClient(RobotClient):
    """LeRobot's client, noting the timestep of every action it executes (it sets ``latest_action``
    to it in the same thread)."""

    performed: list

    def control_loop_action(self, verbose: bool = False):
        action = super().control_loop_action(verbose)
        self.performed.append((self.latest_action, action))
        return action


def run_replay(servicer, root, episode: int, timeout: float = 120.0):
    """LeRobot's RobotClient, in this process, driving a replay robot until the episode is done."""
    from vla_pipeline.deploy.lerobot_tools import install_lerobot_patches

    install_lerobot_patches()  # the replay robot among the client's robots
    cfg = RobotClientConfig(
        policy_type="pi05", pretrained_name_or_path=compute_checkpoint_id(servicer.deployed.ckpt)[:12],
        robot=ReplayRobotConfig(root=root, episode=episode), actions_per_chunk=servicer.deployed.config.chunk_size,
        server_address=f"127.0.0.1:{servicer.config.port}", aggregate_fn_name="latest_only", fps=30)
    client = RecordingClient(cfg)
    client.performed = []
    robot = client.robot
    task = robot.dataset[robot.frames[0]]["task"]
    assert client.start(), "the client could not connect"
    threads = [threading.Thread(target=client.receive_actions, daemon=True),
               threading.Thread(target=client.control_loop, kwargs={"task": task}, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.time() + timeout
    while not robot.done and time.time() < deadline:
        time.sleep(0.05)
    client.shutdown_event.set()
    threads[1].join(5)
    assert robot.done, f"the replay did not finish in {timeout} s ({len(robot.executed)} of {len(robot.frames)} actions)"
    return robot, client.performed


def test_served_chunks_equal_offline_evaluation_and_the_robot_executes_them_through_the_adapter(served, tiny_run):
    episode = held_out_episode(served)
    robot, performed = run_replay(served, tiny_run.dataset, episode)
    chunks = [c for c in served.served if c.episode == episode]
    assert len(chunks) >= 3, "the replay should have asked for several chunks"

    ckpt = served.deployed.ckpt
    contract = served.deployed.contract
    dataset = make_dataset(tiny_run.dataset, contract, [episode], ckpt.policy.config.chunk_size)
    offline = predict_episodes(ckpt, dataset, stride=1, batch_size=1, noise_seed=NOISE_SEED)
    batched = predict_episodes(ckpt, dataset, stride=1, batch_size=16, noise_seed=NOISE_SEED)
    for c in chunks:
        i = int(np.flatnonzero(offline.frame == c.frame)[0])
        np.testing.assert_array_equal(c.chunk.astype(np.float64), offline.pred[i][: len(c.chunk)],
                                      err_msg=f"frame {c.frame}: served != vla evaluate (batch 1)")
        # evaluate's own batch: the same within float rounding of batched matmuls (docs/deploy.md)
        np.testing.assert_allclose(c.chunk, batched.pred[i][: len(c.chunk)], atol=1e-3, rtol=0)

    lo, hi = (np.array([contract.ranges[j][k] for j in contract.joints]) for k in (0, 1))
    clipped = 0
    for c in chunks:
        arm = np.array([[a[j] for j in contract.joints] for a in c.robot_actions])
        np.testing.assert_array_equal(arm, np.clip(c.chunk, lo, hi).astype(np.float64))
        clipped += int(((c.chunk < lo) | (c.chunk > hi)).sum())
        assert all(a[name] == value for a in c.robot_actions for name, value in contract.hold.items())
    assert sum(served.deployed.adapter.clamped.values()) >= clipped

    # latest_only: the action executed at timestep t is action t - c.timestep of a chunk c that covers t
    assert [a for _, a in performed] == [a for _, a in robot.executed]
    for t, action in performed:
        sent = [c.robot_actions[t - c.timestep] for c in chunks if c.timestep <= t < c.timestep + len(c.robot_actions)]
        assert action in sent, f"timestep {t}: the robot executed an action no chunk sent for that timestep"
        assert (action["x.vel"], action["y.vel"], action["theta.vel"]) == (0.0, 0.0, 0.0)


def stub(servicer):
    channel = grpc.insecure_channel(f"127.0.0.1:{servicer.config.port}")
    return services_pb2_grpc.AsyncInferenceStub(channel)


def ready(s, wait_s: float = 5.0):
    """Ready, retried while the replay robot's session (a client before this one) is still live."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return s.Ready(services_pb2.Empty(), timeout=30)
        except grpc.RpcError as e:
            if "holds the session" not in (e.details() or "") or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def policy_setup(servicer, names, name=None) -> services_pb2.PolicySetup:
    features = {"observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
                "observation.images.front": {"dtype": "image", "shape": (32, 40, 3)},
                "observation.images.wrist": {"dtype": "image", "shape": (32, 40, 3)}}
    spec = RemotePolicyConfig("pi05", name or compute_checkpoint_id(servicer.deployed.ckpt), features, 10)
    return services_pb2.PolicySetup(data=pickle.dumps(spec))


LEKIWI = ["arm_shoulder_pan.pos", "arm_shoulder_lift.pos", "arm_elbow_flex.pos", "arm_wrist_flex.pos",
          "arm_wrist_roll.pos", "arm_gripper.pos", "x.vel", "y.vel", "theta.vel"]


@pytest.mark.parametrize("names, expected", [
    ([n for n in LEKIWI if n != "arm_gripper.pos"], "no action named ['arm_gripper.pos']"),
    ([*LEKIWI, "z.vel"], "['z.vel'] are not driven by the policy and have no deploy.hold value"),
])
def test_a_robot_with_a_missing_or_extra_joint_is_refused_with_the_difference(served, names, expected):
    s = stub(served)
    ready(s)
    with pytest.raises(grpc.RpcError) as e:
        s.SendPolicyInstructions(policy_setup(served, names))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert expected in e.value.details()
    ready(s)
    s.SendPolicyInstructions(policy_setup(served, LEKIWI))  # the right robot still connects


def test_a_client_naming_another_policy_is_refused(served):
    s = stub(served)
    ready(s)
    with pytest.raises(grpc.RpcError) as e:
        s.SendPolicyInstructions(policy_setup(served, LEKIWI, name="lerobot/pi05_base"))
    assert "this server serves only pi05" in e.value.details()
    assert compute_checkpoint_id(served.deployed.ckpt)[:12] in e.value.details()


class Planted:
    """What an attacker sends: unpickling it would create a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_message_naming_a_class_outside_the_allow_list_is_refused_and_never_run(served, tmp_path):
    planted = tmp_path / "planted"
    s = stub(served)
    ready(s)
    with pytest.raises(grpc.RpcError) as e:
        s.SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(Planted(planted))))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "io.open" in e.value.details() and "io.open" in served.refused[-1]
    ready(s)
    s.SendPolicyInstructions(policy_setup(served, LEKIWI))
    observation = TimedObservation(time.time(), 0, {"task": Planted(planted)}, must_go=True)
    with pytest.raises(grpc.RpcError) as e:
        send_observation(s, observation)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "io.open" in served.refused[-1]
    assert not planted.exists(), "the refused message ran"


def send_observation(s, observation):
    return s.SendObservations(iter([services_pb2.Observation(transfer_state=services_pb2.TRANSFER_END,
                                                             data=pickle.dumps(observation))]))


def test_an_observation_the_policy_cannot_run_on_is_refused_to_the_client_not_logged_away(served):
    """LeRobot's GetActions turns any error into an empty reply: the robot would just stand still."""
    s = stub(served)
    ready(s)
    s.SendPolicyInstructions(policy_setup(served, LEKIWI))
    image = np.zeros((32, 40, 3), np.uint8)
    full = {**dict.fromkeys(LEKIWI, 0.0), "front": image, "wrist": image, "task": "pick"}
    for drop, says in (("task", "no task"), ("wrist", "has no ['wrist']"), ("arm_gripper.pos", "['arm_gripper.pos']")):
        with pytest.raises(grpc.RpcError) as e:
            send_observation(s, TimedObservation(time.time(), 0, {k: v for k, v in full.items() if k != drop}, True))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in e.value.details()
    send_observation(s, TimedObservation(time.time(), 0, full, must_go=True))  # the complete one is taken


def test_the_server_refuses_a_checkpoint_whose_weights_fail_strict_loading(tiny_run, tmp_path):
    step = tmp_path / "step"
    shutil.copytree(pretrained_dir_of(resolve_checkpoint(tiny_run.train, "last")).parent, step)
    weights = step / "pretrained_model" / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(weights))
    write_manifest(step / "pretrained_model")  # the files are consistent: only the strict load can see it
    write_manifest(step)
    out = vla("serve", str(step), "--port", "0")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 missing keys" in out.stderr and dropped in out.stderr
    assert "serving" not in out.stdout and "Traceback" not in out.stderr


def test_binding_beyond_localhost_needs_expose(tiny_run):
    with pytest.raises(ConfigError, match="ssh -N -L"):
        ServeConfig(tiny_run.train, host="0.0.0.0")
    assert ServeConfig(tiny_run.train, host="0.0.0.0", expose=True).expose


def test_the_ipv6_loopback_binds_and_serves(tiny_run):
    """--host ::1 binds [::1] (it failed as '::1:8080', which gRPC cannot parse) and a client reaches it."""
    from vla_pipeline.deploy.server import format_address

    assert format_address("::1", 8080) == "[::1]:8080" and format_address("127.0.0.1", 8080) == "127.0.0.1:8080"
    server, servicer = make_server(ServeConfig(tiny_run.train, host="::1", port=0))
    server.start()
    try:
        channel = grpc.insecure_channel(f"[::1]:{servicer.config.port}")
        services_pb2_grpc.AsyncInferenceStub(channel).Ready(services_pb2.Empty(), timeout=30)
        channel.close()
    finally:
        server.stop(grace=0)


def test_the_in_process_policy_gives_robot_actions_a_chunk_at_a_time(served, tiny_run):
    from vla_pipeline.deploy.policy import DeployedPolicy
    from vla_pipeline.deploy.replay import ReplayRobot

    policy = DeployedPolicy.load(tiny_run.train, noise_seed=NOISE_SEED)
    robot = ReplayRobot(ReplayRobotConfig(root=tiny_run.dataset, episode=held_out_episode(served)))
    robot.connect()
    policy.connect(list(robot.action_features))
    observation = robot.get_observation()
    task = robot.dataset[robot.frames[0]]["task"]
    chunk = policy.predict_chunk(observation, task)
    actions = [policy.select_action(observation, task) for _ in range(policy.config.n_action_steps)]
    contract = load_contract(policy.ckpt.directory / "contract.yaml")
    lo, hi = (np.array([contract.ranges[j][k] for j in contract.joints]) for k in (0, 1))
    expected = np.clip(chunk[: policy.config.n_action_steps], lo, hi)
    np.testing.assert_array_equal([[a[j] for j in contract.joints] for a in actions], expected)
    assert [list(a) for a in actions] == [list(robot.action_features)] * len(actions)
    assert not policy.queue  # the next call predicts a new chunk
    with pytest.raises(ContractError, match="arm_gripper.pos"):
        policy.make_batch({k: v for k, v in observation.items() if k != "arm_gripper.pos"}, task)
