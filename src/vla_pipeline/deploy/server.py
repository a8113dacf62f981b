"""``vla serve``: LeRobot 0.4.2's async-inference policy server, serving one of our checkpoints.

It is LeRobot's own ``PolicyServer`` (its gRPC service, messages, observation queue and chunk
timing), so LeRobot's ``robot_client`` connects unchanged. What differs, and why:

* the checkpoint is loaded once, at start, by the strict loader with the compat layer active (LeRobot's
  server calls ``PI05Policy.from_pretrained``, which returns random weights when loading fails); a
  client that names another policy is refused, never served something else;
* client messages are unpickled with the allow-list of :mod:`~vla_pipeline.deploy.messages`;
* the robot is checked against the contract when it connects (names, cameras), and every action
  goes through the arm-only adapter, so the client receives the robot's full action vector;
* one robot session at a time, owned by the client that sent ``Ready``; its action order is fixed at
  connect and checked on every chunk, and its server state (FPS tracker, queues) is its own
  (:mod:`~vla_pipeline.deploy.session`);
* an observation is bounded while it arrives (chunks, bytes, time) and validated before it enters
  LeRobot's queue (types, finite values, image dtype and range, timestep), so a bad one is refused to
  the client (``INVALID_ARGUMENT``) instead of an empty ``GetActions`` that leaves the robot still;
* refusals are logged as counts and short reasons, never payloads;
* the observation-similarity filter (LeRobot's fixed ``atol=1`` in joint space, which leaves some
  setups with one chunk, lerobot #2356) is a flag;
* it binds to localhost unless told otherwise.
"""

from __future__ import annotations

import collections
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import torch
from lerobot.async_inference.configs import PolicyServerConfig
from lerobot.async_inference.helpers import (
    RemotePolicyConfig,
    TimedAction,
    TimedObservation,
    observations_similar,
)
from lerobot.async_inference.policy_server import PolicyServer
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

from vla_pipeline.checkpoint.io import compute_checkpoint_id
from vla_pipeline.deploy.messages import (
    DEFAULT_LIMITS,
    MessageLimits,
    OverLimitError,
    RefusedMessageError,
    load_message,
)
from vla_pipeline.deploy.policy import EPISODE_KEY, FRAME_KEY, DeployedPolicy
from vla_pipeline.deploy.session import (
    MalformedError,
    NotOwnerError,
    SessionError,
    SessionLimits,
    Sessions,
    StreamCancelledError,
    StreamWatch,
    check_timing,
    receive_message,
)
from vla_pipeline.errors import ConfigError, VlaError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: Path
    host: str = "127.0.0.1"
    port: int = 8080
    device: str = "cpu"
    expose: bool = False  # bind to a non-loopback address
    pick: str = "best"  # which checkpoint of a train run dir
    contract: Path | None = None  # another deploy: section for the checkpoint's contract
    noise_seed: int | None = None
    similarity_atol: float = 1.0  # LeRobot's fixed filter; 0 turns it off
    fps: int = 30
    inference_latency: float = 0.0
    obs_queue_timeout: float = 2.0
    limits: SessionLimits = SessionLimits()
    message_limits: MessageLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and not self.expose:
            raise ConfigError(
                f"--host {self.host} would expose the policy server beyond this machine: gRPC without TLS or "
                f"authentication. Keep the default (127.0.0.1) and tunnel from the robot's computer "
                f"(`ssh -N -L {self.port}:127.0.0.1:{self.port} user@gpu-host`), or pass --expose on a trusted network")


@dataclass(frozen=True)
class ServedChunk:
    timestep: int
    episode: int | None  # the dataset frame a replay robot showed (None for a real robot)
    frame: int | None
    chunk: np.ndarray  # (actions, joints), contract units, before the adapter
    robot_actions: list[dict[str, float]]


class VlaPolicyServer(PolicyServer):
    def __init__(self, config: PolicyServerConfig, deployed: DeployedPolicy, served_as: set[str],
                 serve: ServeConfig):
        super().__init__(config)
        self.deployed = deployed
        self.served_as = served_as  # the names a client may give for this checkpoint
        self.similarity_atol = serve.similarity_atol
        self.message_limits = serve.message_limits
        self.limits = serve.limits
        self.sessions = Sessions(serve.limits)
        self.watch = StreamWatch(serve.limits)
        self.policy = deployed.ckpt.policy
        self.policy_type = "pi05"
        self.served: collections.deque[ServedChunk] = collections.deque(maxlen=1000)  # the newest chunks served
        self.refused: collections.deque[str] = collections.deque(maxlen=100)  # short reasons, newest last
        self.refusals: collections.Counter[str] = collections.Counter()  # gRPC status -> refusals

    @property
    def robot_names(self) -> tuple[str, ...]:
        session = self.sessions.current
        return session.names if session is not None and session.names is not None else ()

    def _refuse(self, context, code, message: str):
        """Abort the call with ``code``; the log keeps a count and the reason cut short, never a payload."""
        reason = message if len(message) <= MAX_REASON_CHARS else message[: MAX_REASON_CHARS - 3] + "..."
        self.refusals[code.name] += 1
        self.refused.append(reason)
        self.logger.error(f"refused {context.peer()[:60]} ({code.name}): {reason}")
        context.abort(code, reason)

    def Ready(self, request, context):  # noqa: N802  (LeRobot's gRPC method name)
        try:
            self.sessions.start(context.peer())
        except SessionError as e:
            return self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        self._reset_server()  # LeRobot's: the observation queue and predicted timesteps
        self.shutdown_event.clear()
        self.fps_tracker.reset()
        self.last_processed_obs = None
        self.deployed.adapter = None
        self.deployed.reset()
        self.logger.info(f"client {context.peer()} started the robot session")
        return services_pb2.Empty()

    def SendPolicyInstructions(self, request, context):  # noqa: N802
        try:
            with self.sessions.call(context.peer(), "policy instructions") as session:
                spec = load_message(request.data, RemotePolicyConfig, self.message_limits)
                names = check_policy_spec(spec)
                self._check_policy(spec)
                self._check_cameras(spec.lerobot_features)
                self.sessions.check_order(session, names)
                self.deployed.connect(names)  # last: a refused robot leaves the served one as it was
                session.names = names
        except VlaError as e:
            return self._refuse(context, status_of(e, grpc.StatusCode.FAILED_PRECONDITION), str(e))
        if spec.device != self.deployed.ckpt.policy.config.device:
            self.logger.info(f"the client asks for device {spec.device}; this server runs on "
                             f"{self.deployed.ckpt.policy.config.device} (vla serve --device)")
        self.lerobot_features = spec.lerobot_features
        self.actions_per_chunk = min(spec.actions_per_chunk, self.deployed.config.chunk_size)
        self.logger.info(f"client {context.peer()} connected: robot actions {list(names)}, "
                         f"{self.actions_per_chunk} actions per chunk, holds {self.deployed.contract.hold}")
        return services_pb2.Empty()

    def SendObservations(self, request_iterator, context):  # noqa: N802
        try:
            with self.sessions.call(context.peer(), "observations") as session:
                observation = self._receive_observation(request_iterator, context, session)
                if session.names is None or self.deployed.adapter is None:
                    raise SessionError("no robot connected: the client sends its policy instructions first")
                # here, not in GetActions: LeRobot's GetActions turns any error into silence on the robot's side
                check_timing(observation)
                raw = observation.get_observation()
                self.deployed.check_observation(raw, raw.get("task") if isinstance(raw, dict) else None)
                self.fps_tracker.calculate_fps_metrics(observation.get_timestamp())
                if not self._enqueue_observation(observation):
                    self.logger.debug(f"Observation #{observation.get_timestep()} has been filtered out")
        except VlaError as e:
            return self._refuse(context, status_of(e, grpc.StatusCode.INVALID_ARGUMENT), str(e))
        return services_pb2.Empty()

    def _receive_observation(self, request_iterator, context, session) -> TimedObservation:
        with self.sessions.stream(session), self.watch.watch(context) as entry:
            try:
                data = receive_message(request_iterator, entry, self.limits.max_chunks,
                                       self.message_limits.max_message_bytes)
            except grpc.RpcError as e:  # the watchdog cancelled a stalled stream, or the client went away
                raise StreamCancelledError(f"observation stream cancelled: {entry[3] or 'by the client'}") from e
        return load_message(data, TimedObservation, self.message_limits)

    def GetActions(self, request, context):  # noqa: N802
        try:
            with self.sessions.call(context.peer(), "action requests"):
                return super().GetActions(request, context)
        except SessionError as e:
            return self._refuse(context, status_of(e, grpc.StatusCode.PERMISSION_DENIED), str(e))

    def _check_policy(self, spec: RemotePolicyConfig) -> None:
        if spec.policy_type != "pi05" or spec.pretrained_name_or_path not in self.served_as:
            raise ConfigError(
                f"the client asks for {spec.policy_type} '{spec.pretrained_name_or_path}'; this server serves only "
                f"pi05 {self.deployed.ckpt.directory}. Start the client with --policy_type=pi05 "
                f"--pretrained_name_or_path={min(self.served_as, key=len)} (its checkpoint id)")

    def _check_cameras(self, features: dict) -> None:
        sent = {k.removeprefix(f"{OBS_IMAGES}.") for k in features if k.startswith(f"{OBS_IMAGES}.")}
        missing = sorted(set(self.deployed.camera_keys().values()) - sent)
        if missing:
            raise ConfigError(f"the robot has no camera {missing}; contract '{self.deployed.contract.name}' needs "
                              f"{sorted(self.deployed.camera_keys().values())}, the robot has {sorted(sent)}")

    def _obs_sanity_checks(self, obs: TimedObservation, previous_obs: TimedObservation) -> bool:
        with self._predicted_timesteps_lock:
            if obs.get_timestep() in self._predicted_timesteps:
                return False
        return self.similarity_atol <= 0 or not observations_similar(
            obs, previous_obs, lerobot_features=self.lerobot_features, atol=self.similarity_atol)

    def _predict_action_chunk(self, observation_t: TimedObservation) -> list[TimedAction]:
        raw = observation_t.get_observation()
        start = time.perf_counter()
        chunk = self.deployed.predict_chunk(raw)[: self.actions_per_chunk]
        clamped_before = sum(self.deployed.adapter.clamped.values())
        robot_actions = self.deployed.to_robot_actions(chunk, raw)
        names = self.robot_names
        if not names or any(tuple(a) != names for a in robot_actions):  # the order fixed at connect, every chunk
            raise SessionError(f"the chunk's action order is not the session's {list(names)}; nothing is sent")
        self.last_processed_obs = observation_t
        self.served.append(ServedChunk(observation_t.get_timestep(), _int_or_none(raw.get(EPISODE_KEY)),
                                       _int_or_none(raw.get(FRAME_KEY)), chunk, robot_actions))
        if sum(self.deployed.adapter.clamped.values()) > clamped_before:
            self.logger.warning(f"actions clamped to the contract's ranges so far: {dict(self.deployed.adapter.clamped)}")
        self.logger.info(f"chunk for observation #{observation_t.get_timestep()}: {len(chunk)} actions in "
                         f"{1000 * (time.perf_counter() - start):.1f} ms")
        vectors = [torch.tensor([a[n] for n in self.robot_names], dtype=torch.float32) for a in robot_actions]
        return self._time_action_chunk(observation_t.get_timestamp(), vectors, observation_t.get_timestep())


MAX_REASON_CHARS = 300


def status_of(error: VlaError, default: grpc.StatusCode) -> grpc.StatusCode:
    """The gRPC status a refusal reaches the client with."""
    for kind, code in ((OverLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
                       (NotOwnerError, grpc.StatusCode.PERMISSION_DENIED),
                       (SessionError, grpc.StatusCode.FAILED_PRECONDITION),
                       (StreamCancelledError, grpc.StatusCode.CANCELLED),
                       (MalformedError, grpc.StatusCode.INVALID_ARGUMENT),
                       (RefusedMessageError, grpc.StatusCode.PERMISSION_DENIED)):
        if isinstance(error, kind):
            return code
    return default


def check_policy_spec(spec: RemotePolicyConfig) -> tuple[str, ...]:
    """The policy instructions' types (they come from the network); returns the robot's action names."""
    features = spec.lerobot_features
    if not isinstance(features, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in features.items()):
        raise MalformedError("lerobot_features must map feature names to dicts; refused")
    # LeRobot's robots name their actions as their state (SO-100/101, LeKiwi); the client sends no action names
    names = features.get(OBS_STATE, {}).get("names") or []
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and len(n) <= 200 for n in names) \
            or len(names) > 1000:
        raise MalformedError(f"{OBS_STATE}'s names must be a list of joint names; refused")
    if not isinstance(spec.actions_per_chunk, int) or isinstance(spec.actions_per_chunk, bool) \
            or spec.actions_per_chunk < 1:
        raise MalformedError(f"actions_per_chunk must be a positive integer, got "
                                  f"{type(spec.actions_per_chunk).__name__}; refused")
    if not all(isinstance(v, str) for v in (spec.policy_type, spec.pretrained_name_or_path, spec.device)):
        raise MalformedError("policy_type, pretrained_name_or_path and device must be text; refused")
    return tuple(names)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def served_names(cfg: ServeConfig, deployed: DeployedPolicy) -> set[str]:
    """What a client may name this checkpoint by: the path given to ``vla serve``, the resolved
    directories, and the checkpoint id (its manifest's sha256, or its first 12 characters)."""
    names = {str(cfg.checkpoint), str(Path(cfg.checkpoint).resolve()), str(deployed.ckpt.directory.resolve()),
             str(deployed.ckpt.directory.resolve().parent)}
    checkpoint_id = compute_checkpoint_id(deployed.ckpt)
    if checkpoint_id:
        names |= {checkpoint_id, checkpoint_id[:12]}
    return names


def format_address(host: str, port: int) -> str:
    """``host:port`` as gRPC and LeRobot's client take it: an IPv6 address in brackets (``[::1]:8080``)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def make_server(cfg: ServeConfig) -> tuple[grpc.Server, VlaPolicyServer]:
    """Load the checkpoint and build the gRPC server (not started); the port 0 picks a free one."""
    deployed = DeployedPolicy.load(cfg.checkpoint, device=cfg.device, pick=cfg.pick, contract=cfg.contract,
                                   noise_seed=cfg.noise_seed)
    lerobot_cfg = PolicyServerConfig(host=cfg.host, port=cfg.port or 8080, fps=cfg.fps,
                                     inference_latency=cfg.inference_latency, obs_queue_timeout=cfg.obs_queue_timeout)
    servicer = VlaPolicyServer(lerobot_cfg, deployed, served_names(cfg, deployed), cfg)
    # no SO_REUSEPORT: a second server on the same port is an error, not a silent share of the traffic; a
    # chunk over the limit is refused by gRPC before it is buffered
    options = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", cfg.limits.grpc_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(format_address(cfg.host, cfg.port))
    except RuntimeError as e:
        raise ConfigError(f"cannot bind {format_address(cfg.host, cfg.port)} ({e}): is another server on that port? Pick another "
                          f"--port") from e
    servicer.config.port = port
    return server, servicer
