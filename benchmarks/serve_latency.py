"""Observation -> action chunk round trip through `vla serve` (gRPC on localhost), batch 1.

    python benchmarks/serve_latency.py [--checkpoint artifacts/train] [--device cpu] [--n 100] [--server-log F]

`vla serve` runs in its own process, as on a GPU host. The client sends the frames of a held-out
episode of the checkpoint's dataset (the replay robot's observations: one float per motor, uint8
camera images) the way LeRobot's robot client does (a pickled ``TimedObservation`` through
``SendObservations``, then ``GetActions``) and times each round trip: client pickling, gRPC, the
server's allow-list unpickling, preprocessing, Pi0.5's chunk, postprocessing, the adapter and the
pickled chunk back. ``must_go`` is set so no observation is filtered. ``server_compute`` is what
`vla serve` logs per chunk (prediction and adapter). The same observations then run through the
policy in this process (``DeployedPolicy.predict_chunk``, no gRPC). Prints p50/p90 in ms and the
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import vla_pipeline  # noqa: F401  (compat layer, offline defaults)
from vla_pipeline.checkpoint.io import compute_checkpoint_id
from vla_pipeline.deploy.config_replay import ReplayRobotConfig
from vla_pipeline.deploy.policy import DeployedPolicy
from vla_pipeline.deploy.replay import ReplayRobot


def start_server(args, log: Path) -> tuple[subprocess.Popen, int]:
    port = args.port
    proc = subprocess.Popen([sys.executable, "-m", "vla_pipeline.cli", "serve", str(args.checkpoint), "--port",
                             str(port), "--device", args.device, "--noise-seed", "0"],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)  # noqa: SIM115
    line = proc.stdout.readline()
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"vla serve did not start: {line!r}")
    return proc, port


def observations(policy: DeployedPolicy, dataset: Path, n: int) -> tuple[ReplayRobot, list[dict], str]:
    return replay_observations(dataset, (policy.ckpt.split or {"val": [0]})["val"][0], n)


def replay_observations(dataset: Path, episode: int, n: int) -> tuple[ReplayRobot, list[dict], str]:
    """The replay robot on ``episode``, its first ``n`` observations (cycling) and the episode's task."""
    robot = ReplayRobot(ReplayRobotConfig(root=dataset, episode=episode))
    robot.connect()
    out = []
    for i in range(n):
        robot.position = i % len(robot.frames)
        out.append(robot.get_observation())
    return robot, out, robot.dataset[robot.frames[0]]["task"]


def round_trips(port: int, robot: ReplayRobot, obs: list[dict], task: str, ckpt_id: str, chunk: int) -> list[float]:
    import grpc
    from lerobot.async_inference.helpers import (
        RemotePolicyConfig,
        TimedObservation,
        map_robot_keys_to_lerobot_features,
    )
    from lerobot.transport import services_pb2, services_pb2_grpc
    from lerobot.transport.utils import send_bytes_in_chunks

    stub = services_pb2_grpc.AsyncInferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    stub.Ready(services_pb2.Empty())
    spec = RemotePolicyConfig("pi05", ckpt_id, map_robot_keys_to_lerobot_features(robot), chunk)
    stub.SendPolicyInstructions(services_pb2.PolicySetup(data=pickle.dumps(spec)))
    times = []
    for i, o in enumerate(obs):
        start = time.perf_counter()
        message = pickle.dumps(TimedObservation(time.time(), i, {**o, "task": task}, must_go=True))
        stub.SendObservations(send_bytes_in_chunks(message, services_pb2.Observation, silent=True))
        reply = stub.GetActions(services_pb2.Empty())
        actions = pickle.loads(reply.data)  # nosec: our own server's reply
        times.append(time.perf_counter() - start)
        assert len(actions) == chunk
    return times


def in_process(policy: DeployedPolicy, obs: list[dict], task: str) -> list[float]:
    times = []
    for o in obs:
        start = time.perf_counter()
        policy.predict_chunk(o, task)
        times.append(time.perf_counter() - start)
    return times


def server_compute(log: Path) -> list[float]:
    """The per-chunk times `vla serve` logs (prediction and adapter), in seconds."""
    return [float(ms) / 1000 for ms in re.findall(r"actions in ([0-9.]+) ms", log.read_text())]


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def summary(times: list[float], warmup: int) -> dict[str, float]:
    ms = np.asarray(times[warmup:]) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/train"))
    parser.add_argument("--dataset", type=Path, default=Path("data/demo"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--port", type=int, default=18089)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--server-log", type=Path, help="vla serve's log (its per-chunk times)")
    args = parser.parse_args()
    policy = DeployedPolicy.load(args.checkpoint, device=args.device, noise_seed=0)
    robot, obs, task = observations(policy, args.dataset, args.n + args.warmup)
    log = args.server_log or Path(tempfile.mkdtemp()) / "serve.log"
    proc, port = start_server(args, log)
    try:
        grpc_times = round_trips(port, robot, obs, task, compute_checkpoint_id(policy.ckpt)[:12],
                                 policy.config.chunk_size)
    finally:
        proc.terminate()
        proc.wait(10)
    local = in_process(policy, obs, task)
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads",
              "device": args.device, "checkpoint": str(policy.ckpt.directory),
              "image_sizes": {k: list(v) for k, v in robot.shapes.items()},
              "grpc_round_trip": summary(grpc_times, args.warmup), "server_compute": summary(server_compute(log), args.warmup),
              "in_process_chunk": summary(local, args.warmup)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
