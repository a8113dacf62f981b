"""The ``vla serve`` and ``vla lerobot`` commands (the policy on the robot, docs/deploy.md), and ``vla
check-compat`` (the policy on stock transformers against the reference vectors)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_serve(args) -> int:
    from vla_pipeline.checkpoint.io import compute_checkpoint_id
    from vla_pipeline.deploy.server import ServeConfig, format_address, make_server
    from vla_pipeline.deploy.session import SessionLimits

    cfg = ServeConfig(Path(args.checkpoint), host=args.host, port=args.port, device=args.device, expose=args.expose,
                      pick=args.pick, contract=Path(args.contract) if args.contract else None,
                      noise_seed=args.noise_seed, similarity_atol=args.similarity_atol, fps=args.fps,
                      limits=SessionLimits() if args.session_timeout is None else
                      SessionLimits(session_timeout_s=args.session_timeout))
    server, servicer = make_server(cfg)
    ckpt_id = (compute_checkpoint_id(servicer.deployed.ckpt) or str(servicer.deployed.ckpt.directory))[:12]
    server.start()
    address = format_address(cfg.host, servicer.config.port)
    print(f"serving {servicer.deployed.ckpt.directory} (checkpoint id {ckpt_id}) on {address}, "
          f"device {cfg.device}, contract '{servicer.deployed.contract.name}'\nrobot side: vla lerobot async-client "
          f"--server_address={address} --policy_type=pi05 --pretrained_name_or_path={ckpt_id} "
          f"--actions_per_chunk={servicer.deployed.config.chunk_size} --robot.type=... --task='...'", flush=True)
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=1.0)
    return 0


def cmd_check_compat(args) -> int:
    from vla_pipeline.model.reference import compare_with_reference

    errors = compare_with_reference(Path(args.reference))
    for e in errors:
        print(f"{e.name:>18}: max abs error {e.max_abs_error:.3e} (atol {e.atol:g}) {'ok' if e.ok else 'MISMATCH'}")
    ok = all(e.ok for e in errors)
    print("compat: PASS" if ok else "compat: FAIL")
    return 0 if ok else 1


def cmd_lerobot(argv: list[str]) -> int:
    from vla_pipeline.deploy.lerobot_tools import run_tool

    return run_tool(argv)


def add_serve(sub) -> None:
    s = sub.add_parser("serve", help="serve a checkpoint to LeRobot's async robot client (gRPC, localhost)")
    s.add_argument("checkpoint", help="a train run dir (e.g. artifacts/train), a checkpoints/<step> dir or a "
                                      "pretrained_model dir")
    s.add_argument("--pick", choices=("best", "last"), default="best", help="which checkpoint of a train run dir")
    s.add_argument("--host", default="127.0.0.1", help="address to bind; other than localhost needs --expose")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--expose", action="store_true",
                   help="allow a non-localhost --host (no TLS, no authentication: trusted networks only)")
    s.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    s.add_argument("--contract", help="a contract with the checkpoint's joints and ranges and other deploy: values")
    s.add_argument("--noise-seed", type=int, default=None,
                   help="draw each frame's noise as `vla evaluate` does (default: torch's generator, as LeRobot)")
    s.add_argument("--similarity-atol", type=float, default=1.0,
                   help="skip an observation whose state is within this distance of the last one served "
                        "(LeRobot's fixed 1.0); 0: never skip")
    s.add_argument("--fps", type=int, default=30, help="the robot's control rate (times the chunk's actions)")
    s.add_argument("--session-timeout", type=float, default=None,
                   help="seconds of silence after which the robot client that sent Ready loses the session and "
                        "another client may start one (default 5; docs/deploy.md: Security)")
    s.set_defaults(func=cmd_serve)


def add_lerobot(sub) -> None:
    s = sub.add_parser("lerobot", help="run a LeRobot CLI (record, replay, eval, async-client, ...) with our "
                                       "checkpoints' strict loader; `vla lerobot --help` lists them")
    s.add_argument("tool_args", nargs=argparse.REMAINDER, help="the tool, then its own arguments")


def add_check_compat(sub) -> None:
    s = sub.add_parser("check-compat", help="compare Pi0.5 on stock transformers with reference vectors")
    s.add_argument("reference", help="a .safetensors file of shared/testdata (its .json beside it)")
    s.set_defaults(func=cmd_check_compat)
