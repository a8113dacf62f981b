"""Who may steer the robot, and how long a client may hold the server: ``vla serve``'s sessions and
stream limits. LeRobot 0.4.2's policy server keeps one set of state for whoever calls (the action
order, the FPS tracker, the observation queue), so a second client could reorder the first robot's
actions; here:

* one robot session at a time, owned by the client (gRPC peer: its address and port, one per
  channel) that sent ``Ready``, until it has been silent for ``session_timeout_s``; another client's
  ``Ready`` is refused meanwhile, and its policy instructions, observations and action requests are
  refused always;
* the robot's action order is fixed by the session's policy instructions; sending other names needs
  a new ``Ready`` (a new session, with fresh server state);
* an observation arrives in at most ``max_chunks`` chunks and ``max_message_bytes`` bytes, with no
  more than ``stream_idle_s`` between chunks and ``stream_max_s`` in all, over at most
  ``streams_per_peer`` open streams: a watchdog cancels a stream that stalls, so idle streams cannot
  hold the server's worker threads.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from lerobot.transport import services_pb2

from vla_pipeline.deploy.messages import OverLimitError
from vla_pipeline.errors import VlaError

BEGIN, MIDDLE, END = (services_pb2.TransferState.TRANSFER_BEGIN, services_pb2.TransferState.TRANSFER_MIDDLE,
                      services_pb2.TransferState.TRANSFER_END)


@dataclass(frozen=True)
class SessionLimits:
    session_timeout_s: float = 5.0  # the owner's silence after which another robot may start a session
    stream_idle_s: float = 2.0  # longest wait for the next chunk of an observation
    stream_max_s: float = 10.0  # longest an observation may take to arrive
    max_chunks: int = 64  # chunks in one observation (LeRobot's client sends 2 MiB chunks)
    streams_per_peer: int = 1  # observation streams open at once (LeRobot's client sends one at a time)
    grpc_message_bytes: int = 4 * 1024 * 1024  # one gRPC message (a chunk): LeRobot's MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("session_timeout_s", "stream_idle_s", "stream_max_s", "max_chunks", "streams_per_peer",
                     "grpc_message_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SessionLimits.{name} must be positive, got {getattr(self, name)}")


STREAM_SLOT_WAIT_S = 1.0  # how long a stream over the limit waits for an open one to leave


class SessionError(VlaError):
    """A call that breaks the session's rules: another robot holds it, no robot connected yet, or
    another action order (gRPC ``FAILED_PRECONDITION``)."""


class NotOwnerError(SessionError):
    """A call only the session's owner may make, from another client (``PERMISSION_DENIED``)."""


class MalformedError(VlaError):
    """A message whose framing or fields are not what LeRobot's client sends (``INVALID_ARGUMENT``)."""


class StreamCancelledError(VlaError):
    """An observation stream cancelled by the watchdog (late chunks) or by the client (``CANCELLED``)."""


@dataclass
class RobotSession:
    owner: str  # the gRPC peer that sent Ready
    started: float
    last_seen: float
    names: tuple[str, ...] | None = None  # the robot's action order, fixed by its policy instructions
    calls: int = 0  # calls of the owner in progress (a session is never idle during one)
    streams: int = 0  # observation streams open


class Sessions:
    """The one robot session, thread-safe; the clock is injectable for tests."""

    def __init__(self, limits: SessionLimits, clock=time.monotonic):
        self.limits = limits
        self.clock = clock
        self.current: RobotSession | None = None
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)  # an observation stream's slot coming free

    def start(self, peer: str) -> RobotSession:
        """``Ready`` from ``peer``: a new session, unless another client's session is still live."""
        with self._lock:
            now = self.clock()
            live = self.current
            if live is not None and live.owner != peer and self._is_live(live, now):
                raise SessionError(
                    f"another robot client ({live.owner}) holds the session (last call {now - live.last_seen:.1f} s "
                    f"ago); one robot at a time. It ends {self.limits.session_timeout_s:g} s after that client's "
                    f"last call")
            self.current = RobotSession(peer, now, now)
            return self.current

    def _is_live(self, session: RobotSession, now: float) -> bool:
        return session.calls > 0 or now - session.last_seen <= self.limits.session_timeout_s

    @contextlib.contextmanager
    def call(self, peer: str, what: str) -> Iterator[RobotSession]:
        """A call only the session's owner may make (its duration counts as activity)."""
        with self._lock:
            session = self.current
            if session is None or session.owner != peer:
                holder = "no robot client holds the session" if session is None else "another robot client holds it"
                raise NotOwnerError(f"{what} refused: this client has not started the robot session ({holder}); "
                                   f"send Ready first")
            session.calls += 1
            session.last_seen = self.clock()
        try:
            yield session
        finally:
            with self._lock:
                session.calls -= 1
                session.last_seen = self.clock()

    @staticmethod
    def check_order(session: RobotSession, names: Sequence[str]) -> None:
        """The session's action order is set once (after a robot is accepted); other names need a new ``Ready``."""
        if session.names is not None and session.names != tuple(names):
            raise SessionError(f"the robot's action order was fixed at connect ({list(session.names)}); "
                               f"send Ready to start a new session with other names")

    @contextlib.contextmanager
    def stream(self, session: RobotSession) -> Iterator[None]:
        """One observation stream. A full set waits up to ``STREAM_SLOT_WAIT_S`` for a slot: gRPC refuses an
        oversized message to the client before the refused stream's handler has left, so the client's
        next observation can arrive while the server still counts that stream as open."""
        with self._slots:
            if not self._slots.wait_for(lambda: session.streams < self.limits.streams_per_peer, STREAM_SLOT_WAIT_S):
                raise OverLimitError(f"{session.streams} observation streams already open (limit "
                                     f"{self.limits.streams_per_peer}); send one observation at a time")
            session.streams += 1
        try:
            yield
        finally:
            with self._slots:
                session.streams -= 1
                self._slots.notify_all()


class StreamWatch:
    """One daemon thread that cancels a stream whose next chunk is late (``stream_idle_s``) or whose
    observation takes too long in all (``stream_max_s``)."""

    def __init__(self, limits: SessionLimits, poll_s: float = 0.05):
        self.limits = limits
        self.poll_s = poll_s
        self._streams: dict[int, list] = {}  # id -> [context, started, last chunk, reason cancelled]
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, context) -> Iterator[list]:
        now = time.monotonic()
        entry = [context, now, now, None]
        with self._lock:
            self._streams[id(entry)] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vla-stream-watch", daemon=True)
                self._thread.start()
        try:
            yield entry
        finally:
            with self._lock:
                self._streams.pop(id(entry), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.poll_s)
            now = time.monotonic()
            with self._lock:
                late = [e for e in self._streams.values() if e[3] is None and self._late(e, now)]
                for entry in late:
                    entry[3] = self._late(entry, now)
            for entry in late:
                entry[0].cancel()

    def _late(self, entry: list, now: float) -> str | None:
        if now - entry[2] > self.limits.stream_idle_s:
            return f"no chunk for {self.limits.stream_idle_s:g} s"
        if now - entry[1] > self.limits.stream_max_s:
            return f"the observation took over {self.limits.stream_max_s:g} s to arrive"
        return None


def receive_message(request_iterator, entry: list, max_chunks: int, max_bytes: int) -> bytes:
    """One chunked message (LeRobot's TRANSFER_BEGIN/MIDDLE/END), bounded in chunks and bytes;
    ``entry``: the stream's :class:`StreamWatch` entry (each chunk restarts its idle clock)."""
    buffer = bytearray()
    for chunks, item in enumerate(request_iterator, start=1):
        entry[2] = time.monotonic()
        if chunks > max_chunks:
            raise OverLimitError(f"the observation came in more than {max_chunks} chunks; refused")
        if item.transfer_state not in (BEGIN, MIDDLE, END):
            raise MalformedError(f"unknown transfer state {item.transfer_state}; refused")
        if item.transfer_state == BEGIN:
            buffer.clear()
        if len(buffer) + len(item.data) > max_bytes:
            raise OverLimitError(f"the observation is over {max_bytes} bytes; refused")
        buffer += item.data
        if item.transfer_state == END:
            return bytes(buffer)
    if entry[3] is not None:
        raise StreamCancelledError(f"observation stream cancelled: {entry[3]}")
    raise MalformedError("the stream ended before its last chunk (TRANSFER_END); refused")


def check_timing(observation) -> None:
    """A ``TimedObservation``'s own fields, before LeRobot's FPS tracker and queue use them: a string
    timestamp there poisons the tracker for every later observation."""
    stamp, step, must_go = observation.timestamp, observation.timestep, observation.must_go
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(stamp)):
        raise MalformedError(f"the observation's timestamp must be a finite number (seconds), got "
                                  f"{type(stamp).__name__}; refused")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise MalformedError(f"the observation's timestep must be a non-negative integer, got "
                                  f"{type(step).__name__}; refused")
    if not isinstance(must_go, (bool, np.bool_)):
        raise MalformedError(f"the observation's must_go must be a bool, got {type(must_go).__name__}; refused")
