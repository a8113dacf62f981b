"""``vla``: the library's entry points outside DVC (same functions the stages call)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vla_pipeline.cli_data import add_contract, add_dataset_tools, add_store
from vla_pipeline.cli_deploy import add_lerobot, add_serve, cmd_lerobot
from vla_pipeline.errors import ConfigError, run_entry_point
from vla_pipeline.params.load import load_params
from vla_pipeline.quiet import quiet_third_party


def cmd_check_compat(args) -> int:
    from vla_pipeline.model.reference import compare_with_reference

    errors = compare_with_reference(Path(args.reference))
    for e in errors:
        print(f"{e.name:>18}: max abs error {e.max_abs_error:.3e} (atol {e.atol:g}) {'ok' if e.ok else 'MISMATCH'}")
    ok = all(e.ok for e in errors)
    print("compat: PASS" if ok else "compat: FAIL")
    return 0 if ok else 1


def stage_params(args, flags: dict[str, str]) -> dict | None:
    """With ``--params FILE``: the file, ``--set`` overrides, then the subcommand's explicit flags as
    overrides (``flags``: argument name -> dotted key), checked by the schema: the mapping the stage
    reads. None without ``--params`` (the flags alone describe the run)."""
    if args.params is None:
        return None
    overrides = list(args.set)
    for name, key in flags.items():
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # JSON is YAML: strings, numbers, lists read back
    return load_params(args.params, overrides)


def require_flags(args, command: str, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" if n != "dataset" else "DATASET" for n in names if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"vla {command}: pass {' and '.join(missing)}, or --params FILE to take them from a params "
                          f"file as the DVC stage does")


VALIDATE_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "report": "validate.report",
                  "exclude": "dataset.exclude_episodes", "min_episode_length": "policy.chunk_size",
                  "decode_samples": "validate.decode_samples"}


def make_validate_config(args):
    from vla_pipeline.validate.config import ValidateConfig

    params = stage_params(args, VALIDATE_FLAGS)
    if params is not None:
        return ValidateConfig.from_params(params)
    require_flags(args, "validate", "dataset", "contract")
    return ValidateConfig(Path(args.dataset), Path(args.contract), Path(args.report or "validation_report.json"),
                          tuple(args.exclude or ()), args.min_episode_length or 1, args.decode_samples or 0)


def make_validate_dry_run(args):
    """The dry run that ends validation: the run the params file describes, else a full-size run's shape
    (``train.dry_run``); None with ``--no-dry-run`` or ``validate.dry_run: false``."""
    from vla_pipeline.train.dry_run import DryRunConfig, make_dry_run_check

    params = stage_params(args, VALIDATE_FLAGS)
    if args.no_dry_run or (params is not None and not params["validate"]["dry_run"]):
        return None
    cfg = DryRunConfig.from_params(params) if params is not None else DryRunConfig.full_size(
        args.min_episode_length or DryRunConfig.full_size().policy.chunk_size)
    return make_dry_run_check(cfg)


def cmd_validate(args) -> int:
    from vla_pipeline.validate.report import format_report
    from vla_pipeline.validate.run import validate_dataset

    cfg = make_validate_config(args)
    report = validate_dataset(cfg, make_validate_dry_run(args))
    print(format_report(report, where=str(cfg.report_path)))  # its last line: "Validation passed: ..."
    return 0


NORMS_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "out": "norms.out_dir",
               "report": "validate.report", "val_fraction": "norms.val_fraction", "seed": "norms.split_seed"}


def make_norms_config(args):
    from vla_pipeline.norms import NormsConfig

    params = stage_params(args, NORMS_FLAGS)
    if params is not None:  # the exclusions the report recorded, unless --exclude says otherwise
        cfg = NormsConfig.from_params(params)
        return cfg if args.exclude is None else dataclasses.replace(cfg, exclude_episodes=tuple(args.exclude))
    require_flags(args, "norms", "dataset", "contract", "report")
    return NormsConfig(Path(args.dataset), Path(args.contract), Path(args.out or "norms"), report_path=Path(args.report),
                       exclude_episodes=tuple(args.exclude or ()),
                       val_fraction=0.2 if args.val_fraction is None else args.val_fraction, seed=args.seed or 0)


def cmd_norms(args) -> int:
    from vla_pipeline.norms import save_norm_stats

    print(f"frozen stats: {save_norm_stats(make_norms_config(args))}")
    return 0


def cmd_train(args) -> int:
    from vla_pipeline.train.config import TrainConfig
    from vla_pipeline.train.trainer import train

    params = load_params(args.params or "params.yaml", args.set)
    # --out OUT puts the whole run under OUT (checkpoints, live metrics, W&B), never into the workspace's DVC
    # outputs. Without it, a train.out_dir inside this DVC workspace is the train stage's output, which DVC
    # deletes before the stage runs: the run goes to the store and its best and last are published there, as
    # the stage does. Elsewhere train.out_dir is the run's own directory (checkpoints, resumed from there).
    overrides = {"runs_in_store": False}
    if args.out:
        out = Path(args.out)
        overrides.update(out_dir=out, live_dir=out / "live", wandb_dir=out / "wandb")
    elif is_dvc_output_here(params["train"]["out_dir"]):
        overrides = {}
    print(f"final checkpoint: {train(TrainConfig.from_params(params, **overrides))}")
    return 0


def is_dvc_output_here(out_dir: str) -> bool:
    """Whether ``out_dir`` lies in the DVC workspace of the current directory (the train stage's output)."""
    return Path("dvc.yaml").is_file() and Path(out_dir).resolve().is_relative_to(Path.cwd().resolve())


EVALUATE_FLAGS = {"dataset": "dataset.root", "stride": "evaluate.stride", "batch_size": "evaluate.batch_size",
                  "noise_seed": "evaluate.noise_seed", "device": "evaluate.device", "num_workers": "evaluate.num_workers",
                  "wandb": "evaluate.wandb.mode", "wandb_project": "evaluate.wandb.project",
                  "wandb_dir": "evaluate.wandb.dir"}


def make_evaluate_config(args):
    from vla_pipeline.checkpoint.io import resolve_checkpoint
    from vla_pipeline.eval.config import EvaluateConfig

    checkpoint, out = resolve_checkpoint(Path(args.checkpoint), args.pick), Path(args.out)
    params = stage_params(args, EVALUATE_FLAGS)
    if params is not None:
        if args.no_videos:
            params["evaluate"]["videos"] = False
        cfg = EvaluateConfig.from_params(params, checkpoint, out)
        return cfg if args.norms is None else dataclasses.replace(cfg, norms_dir=Path(args.norms))
    require_flags(args, "evaluate", "dataset")
    return EvaluateConfig(
        checkpoint, Path(args.dataset), out, norms_dir=Path(args.norms) if args.norms else None, stride=args.stride,
        batch_size=args.batch_size or 16, noise_seed=args.noise_seed or 0, device=args.device or "cpu",
        num_workers=0 if args.num_workers is None else args.num_workers, videos=not args.no_videos,
        wandb_mode=args.wandb or "offline", wandb_project=args.wandb_project or "vla-pipeline",
        wandb_dir=Path(args.wandb_dir) if args.wandb_dir else out / "wandb",
        frame_cache=Path(args.frame_cache) if args.frame_cache else None,
    )


def cmd_evaluate(args) -> int:
    from vla_pipeline.eval.run import evaluate, format_summary

    cfg = make_evaluate_config(args)
    print(format_summary(evaluate(cfg), cfg.checkpoint, cfg.out_dir, cfg.videos))  # the full JSON: metrics.json
    return 0


FRAME_CACHE_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "out": "frame_cache.dir",
                     "num_workers": "frame_cache.num_workers"}


def make_frame_cache_config(args):
    from vla_pipeline.data.frame_cache import FrameCacheConfig

    params = stage_params(args, FRAME_CACHE_FLAGS)
    if params is not None:
        cfg = FrameCacheConfig.from_params(params)  # the exclusions the report recorded, unless --exclude
        cfg = cfg if args.exclude is None else dataclasses.replace(cfg, exclude_episodes=tuple(args.exclude))
        return dataclasses.replace(cfg, resolution=None) if args.native else cfg
    require_flags(args, "frame-cache", "dataset", "contract")
    return FrameCacheConfig(Path(args.dataset), Path(args.contract), Path(args.out or "frame_cache"),
                            resolution=None if args.native else tuple(args.resolution or (224, 224)),
                            num_workers=args.num_workers or 1, exclude_episodes=tuple(args.exclude or ()))


def cmd_frame_cache(args) -> int:
    from vla_pipeline.data.frame_cache import save_frame_cache

    print(f"frame cache: {save_frame_cache(make_frame_cache_config(args))}")
    return 0


def cmd_preflight(args) -> int:
    from vla_pipeline.preflight.run import PreflightConfig, require_preflight

    cfg = PreflightConfig.from_params(load_params(args.params or "params.yaml", args.set))
    cfg = dataclasses.replace(cfg, report_path=Path(args.report) if args.report else cfg.report_path,
                              testdata=Path(args.testdata) if args.testdata else None,
                              allow_cuda_graphs=args.allow_cuda_graphs, probe=args.probe or cfg.probe,
                              memory_gib=args.memory_gib if args.memory_gib is not None else cfg.memory_gib)
    require_preflight(cfg)
    return 0


def add_params_options(s, what: str) -> None:
    s.add_argument("--params", help=f"take {what} from this params file, as the DVC stage does; the other flags "
                                     f"given here override its keys")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key (dotted, e.g. dataset.exclude_episodes=[3]), repeatable; with --params")


def add_validate(sub) -> None:
    s = sub.add_parser("validate", help="validate a LeRobotDataset v3.0 against an action contract")
    s.add_argument("dataset", nargs="?")
    s.add_argument("--contract")
    s.add_argument("--report", help="default: validation_report.json")
    s.add_argument("--exclude", type=int, nargs="*", help="episode indices to leave out")
    s.add_argument("--min-episode-length", type=int, help="warn below this (the policy's chunk size; default 1)")
    s.add_argument("--decode-samples", type=int, help="frames to decode per video file (default 0)")
    s.add_argument("--no-dry-run", action="store_true", help="skip the last check: sampled frames through the train "
                   "stage's data paths and one training step of a tiny Pi0.5 shaped like the run")
    add_params_options(s, "the dataset, contract, exclusions and report")
    s.set_defaults(func=cmd_validate)


def add_norms(sub) -> None:
    s = sub.add_parser("norms", help="split episodes and freeze normalization statistics")
    s.add_argument("dataset", nargs="?")
    s.add_argument("--contract")
    s.add_argument("--out", help="default: norms")
    s.add_argument("--report", help="the dataset's validation report (vla validate)")
    s.add_argument("--exclude", type=int, nargs="*", help="episode indices to leave out")
    s.add_argument("--val-fraction", type=float, help="default 0.2")
    s.add_argument("--seed", type=int, help="default 0")
    add_params_options(s, "the dataset, contract, exclusions and split settings")
    s.set_defaults(func=cmd_norms)


def add_train(sub) -> None:
    s = sub.add_parser("train", help="fine-tune Pi0.5 as the train stage does, from a params file")
    s.add_argument("--out", help="the run's directory: checkpoints (resumed from here), live metrics (OUT/live) "
                                 "and W&B files (OUT/wandb) all go under it (default: train.out_dir, "
                                 "train.live_dir, train.wandb.dir)")
    add_params_options(s, "everything (default: params.yaml)")
    s.set_defaults(func=cmd_train)


def add_preflight(sub) -> None:
    s = sub.add_parser("preflight", help="check the machine, numerics, memory, disk and inputs of the train run")
    s.add_argument("--report", help="write the JSON report here (default: preflight.report)")
    s.add_argument("--testdata", help="reference vectors (default: ../shared/testdata, else the shipped copy)")
    s.add_argument("--allow-cuda-graphs", action="store_true",
                   help="accept compile modes that use CUDA graphs on ROCm (refused by default)")
    s.add_argument("--probe", action="store_true",
                   help="measure peak memory with one training step per batch size (random weights) instead of "
                        "predicting it (default: preflight.probe)")
    s.add_argument("--memory-gib", type=float, help="the memory budget (default: preflight.memory_gib, else the GPU's)")
    add_params_options(s, "the run to check (default: params.yaml)")
    s.set_defaults(func=cmd_preflight)


def add_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="evaluate a checkpoint on its held-out episodes (metrics, traces, videos)")
    s.add_argument("checkpoint", help="a train run dir (its last/best checkpoint), a checkpoints/<step> dir "
                                      "or a pretrained_model dir")
    s.add_argument("--dataset", help="the LeRobotDataset root the checkpoint was trained on")
    s.add_argument("--out", default="eval", help="output directory (default: eval)")
    s.add_argument("--pick", choices=["last", "best"], default="last", help="which checkpoint of a run dir")
    s.add_argument("--norms", help="take the split from this norms dir (default: the checkpoint's own)")
    s.add_argument("--stride", type=int, help="replan every N frames (default: the checkpoint's n_action_steps)")
    s.add_argument("--batch-size", type=int, help="default 16")
    s.add_argument("--noise-seed", type=int, help="default 0")
    s.add_argument("--device", help="default cpu")
    s.add_argument("--num-workers", type=int, help="video-decoding workers (default 0)")
    s.add_argument("--no-videos", action="store_true", help="skip the MP4s (traces and metrics only)")
    s.add_argument("--wandb", choices=["offline", "online", "disabled"], help="default offline")
    s.add_argument("--wandb-project", help="default vla-pipeline")
    s.add_argument("--wandb-dir", help="W&B run files (default: OUT/wandb)")
    s.add_argument("--frame-cache", help="read camera frames from this decoded-frame cache (vla frame-cache)")
    add_params_options(s, "the dataset and the evaluate section")
    s.set_defaults(func=cmd_evaluate)


def add_frame_cache(sub) -> None:
    s = sub.add_parser("frame-cache", help="decode every camera frame once into a memory-mapped cache")
    s.add_argument("dataset", nargs="?")
    s.add_argument("--contract")
    s.add_argument("--out", help="default: frame_cache")
    s.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"),
                   help="the policy's image_resolution (default 224 224: full-size Pi0.5)")
    s.add_argument("--native", action="store_true", help="keep decoded frames as they are (bit-identical, larger)")
    s.add_argument("--exclude", type=int, nargs="*", help="episode indices not to decode")
    s.add_argument("--num-workers", type=int, help="decoding processes (default 1)")
    add_params_options(s, "the dataset, contract, exclusions, resolution and store")
    s.set_defaults(func=cmd_frame_cache)


def add_tools(sub) -> None:
    s = sub.add_parser("check-compat", help="compare Pi0.5 on stock transformers with reference vectors")
    s.add_argument("reference", help="a .safetensors file of shared/testdata (its .json beside it)")
    s.set_defaults(func=cmd_check_compat)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_validate, add_norms, add_frame_cache, add_preflight, add_train, add_evaluate, add_tools,
                add_dataset_tools, add_contract, add_store, add_serve, add_lerobot):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lerobot"]:  # the rest is LeRobot's, unparsed (its flags look like ours)
        return run_entry_point(lambda: cmd_lerobot(argv[1:]))
    args = make_parser().parse_args(argv)
    quiet_third_party()
    return run_entry_point(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
