"""``vla``: the library's entry points outside DVC (same functions the stages call).

Every subcommand that the pipeline runs as a stage (validate, norms, frame-cache, preflight, train,
evaluate) reads one params file: ``--params FILE``, else ``params.yaml`` of the current directory.
``--set KEY=VALUE`` overrides its keys, then each flag given overrides the one key it stands for
(the ``*_FLAGS`` tables below): a flag has no default of its own. The flags that name no params key (the run's
directory of ``train --out``, ``evaluate``'s ``--out``/``--pick``/``--norms``, ``--exclude`` of norms
and frame-cache, ``frame-cache --resolution``, ``preflight --testdata``/``--allow-cuda-graphs``) say
so in their help. A command run by hand never writes a DVC stage's output (workspace.by_hand)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from pathlib import Path

from vla_pipeline.cli_data import add_contract, add_dataset_tools, add_store
from vla_pipeline.cli_deploy import add_check_compat, add_lerobot, add_serve, cmd_lerobot
from vla_pipeline.cli_params import add_params
from vla_pipeline.cores import claim_core_share
from vla_pipeline.errors import ConfigError, run_entry_point
from vla_pipeline.logs import configure_logging
from vla_pipeline.params.load import load_params
from vla_pipeline.quiet import quiet_third_party
from vla_pipeline.workspace import by_hand

log = logging.getLogger(__name__)
DEFAULT_PARAMS = "params.yaml"


def flag_overrides(args, flags: dict) -> list[str]:
    """The flags given, as overrides: ``flags`` maps an argument to its dotted key, or a switch to (key, the
    value it sets)."""
    overrides = []
    for name, spec in flags.items():
        key, const = spec if isinstance(spec, tuple) else (spec, None)
        value = getattr(args, name, None)
        if value is not None and value is not False:
            overrides.append(f"{key}={json.dumps(value if const is None else const)}")  # JSON is YAML
    return overrides


def read_params(args, overrides=()) -> dict:
    """The params file (``--params``, else ./params.yaml, else the package's shipped defaults where
    ``params.load.load_default_params`` exists, else an error), then ``--set``, then ``overrides``, checked by
    the schema: what the stage would read."""
    overrides = [*args.set, *overrides]
    if args.params is not None or Path(DEFAULT_PARAMS).is_file():
        return load_params(args.params or DEFAULT_PARAMS, overrides)
    from vla_pipeline.params import load as loading

    load_defaults = getattr(loading, "load_default_params", None)  # the shipped defaults, where the package has them
    if load_defaults is None:
        raise ConfigError(f"vla {args.command}: no {DEFAULT_PARAMS} in {Path.cwd()}; pass --params FILE (the "
                          f"pipeline repository's params.yaml, or a copy of it)")
    return load_defaults(overrides)


def stage_params(args, flags: dict) -> dict:
    """The params file, ``--set`` overrides, then the subcommand's explicit flags as overrides (``flags``:
    argument name -> dotted key): the mapping the stage reads."""
    return read_params(args, flag_overrides(args, flags))


def other_dataset(args) -> str | None:
    """The params file's ``dataset.root`` when the command's dataset flag names another dataset: what the
    file derives from its own dataset (its validation report, its frame cache) does not apply then."""
    if getattr(args, "dataset", None) is None:
        return None
    root = read_params(args)["dataset"]["root"]
    return None if Path(root).resolve() == Path(args.dataset).resolve() else root


VALIDATE_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "report": "validate.report",
                  "exclude": "dataset.exclude_episodes", "min_episode_length": "policy.chunk_size",
                  "decode_samples": "validate.decode_samples", "no_dry_run": ("validate.dry_run", False)}


def make_validate_config(args):
    from vla_pipeline.validate.config import ValidateConfig

    return ValidateConfig.from_params(stage_params(args, VALIDATE_FLAGS))


def make_validate_dry_run(args):
    """The dry run that ends validation: the run the params describe; None with ``validate.dry_run: false``
    (``--no-dry-run``)."""
    from vla_pipeline.train.dry_run import DryRunConfig, make_dry_run_check

    params = stage_params(args, VALIDATE_FLAGS)
    return make_dry_run_check(DryRunConfig.from_params(params)) if params["validate"]["dry_run"] else None


def cmd_validate(args) -> int:
    from vla_pipeline.validate.report import format_report
    from vla_pipeline.validate.run import validate_dataset

    cfg = make_validate_config(args)
    cfg = dataclasses.replace(cfg, report_path=by_hand(cfg.report_path, "the report"))
    report = validate_dataset(cfg, make_validate_dry_run(args))
    print(format_report(report, where=str(cfg.report_path)))  # its last line: "Validation passed: ..."
    return 0


NORMS_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "out": "norms.out_dir",
               "report": "validate.report", "val_fraction": "norms.val_fraction", "seed": "norms.split_seed"}


def make_norms_config(args):
    from vla_pipeline.norms import NormsConfig

    root = other_dataset(args) if args.report is None else None
    if root is not None:
        raise ConfigError(f"vla norms: {args.dataset} is not the params file's dataset.root ({root}), whose "
                          f"validation report validate.report names; pass --report with {args.dataset}'s (vla "
                          f"validate {args.dataset})")
    cfg = NormsConfig.from_params(stage_params(args, NORMS_FLAGS))  # the exclusions its report recorded
    return cfg if args.exclude is None else dataclasses.replace(cfg, exclude_episodes=tuple(args.exclude))


def cmd_norms(args) -> int:
    from vla_pipeline.norms import save_norm_stats

    cfg = make_norms_config(args)
    print(f"frozen stats: {save_norm_stats(dataclasses.replace(cfg, out_dir=by_hand(cfg.out_dir, 'the stats')))}")
    return 0


def cmd_train(args) -> int:
    from vla_pipeline.train.config import TrainConfig
    from vla_pipeline.train.trainer import train

    params = read_params(args)
    # --out OUT puts the whole run under OUT (checkpoints, live metrics, W&B), never into the workspace's DVC
    # outputs. Without it, a train.out_dir inside this DVC workspace is the train stage's output, which DVC
    # deletes before the stage runs: the run goes to the store and its best and last are published, as the
    # stage does, but to .vla/by-hand/ where the out_dir is the stage's (dvc status stays as it was).
    # Elsewhere train.out_dir is the run's own directory (checkpoints, resumed from there).
    overrides = {"runs_in_store": False}
    if args.out:
        out = by_hand(args.out, "the run")
        overrides.update(out_dir=out, live_dir=out / "live", wandb_dir=out / "wandb")
    elif is_dvc_output_here(params["train"]["out_dir"]):
        out_dir, live_dir = params["train"]["out_dir"], params["train"]["live_dir"]
        overrides = {"out_dir": by_hand(out_dir, "the published run"), "live_dir": by_hand(live_dir, "live metrics")}
    print(f"final checkpoint: {train(TrainConfig.from_params(params, **overrides))}")
    return 0


def is_dvc_output_here(out_dir: str) -> bool:
    """Whether ``out_dir`` lies in the DVC workspace of the current directory (the train stage's output)."""
    return Path("dvc.yaml").is_file() and Path(out_dir).resolve().is_relative_to(Path.cwd().resolve())


EVALUATE_FLAGS = {"dataset": "dataset.root", "stride": "evaluate.stride", "batch_size": "evaluate.batch_size",
                  "noise_seed": "evaluate.noise_seed", "device": "evaluate.device", "num_workers": "evaluate.num_workers",
                  "wandb": "evaluate.wandb.mode", "wandb_project": "evaluate.wandb.project",
                  "wandb_dir": "evaluate.wandb.dir", "no_videos": ("evaluate.videos", False),
                  "frame_cache": "frame_cache.dir"}


def make_evaluate_config(args):
    """The evaluate section; the output, and W&B's files unless evaluate.wandb.dir names a place, under
    ``--out``; the params' frame cache only for the params' dataset (``--frame-cache`` names another)."""
    from vla_pipeline.checkpoint.io import resolve_checkpoint
    from vla_pipeline.eval.config import EvaluateConfig

    checkpoint, out = resolve_checkpoint(Path(args.checkpoint), args.pick), Path(args.out)
    cache = ["frame_cache.enable=true"] if args.frame_cache else []
    root = None if args.frame_cache else other_dataset(args)
    if root is not None:  # the params' frame cache was decoded from the params' dataset
        log.debug(f"--dataset {args.dataset} is not dataset.root ({root}): its frame cache is not read")
        cache = ["frame_cache.enable=false"]
    params = read_params(args, [*flag_overrides(args, EVALUATE_FLAGS), *cache])
    cfg = EvaluateConfig.from_params(params, checkpoint, out)
    if params["evaluate"]["wandb"]["dir"] is None:
        cfg = dataclasses.replace(cfg, wandb_dir=out / "wandb")  # as `vla train --out`: the whole run under OUT
    return cfg if args.norms is None else dataclasses.replace(cfg, norms_dir=Path(args.norms))


def cmd_evaluate(args) -> int:
    from vla_pipeline.eval.run import evaluate, format_summary

    cfg = make_evaluate_config(args)
    out = by_hand(cfg.out_dir, "the evaluation")
    if out != cfg.out_dir:
        cfg = dataclasses.replace(cfg, out_dir=out, wandb_dir=out / "wandb" if cfg.wandb_dir == cfg.out_dir / "wandb"
                                  else cfg.wandb_dir)
    print(format_summary(evaluate(cfg), cfg.checkpoint, cfg.out_dir, cfg.videos))  # the full JSON: metrics.json
    return 0


FRAME_CACHE_FLAGS = {"dataset": "dataset.root", "contract": "dataset.contract", "out": "frame_cache.dir",
                     "num_workers": "frame_cache.num_workers", "report": "validate.report",
                     "native": ("frame_cache.resize", False)}


def make_frame_cache_config(args):
    """The frame_cache section; the exclusions the params' validation report recorded, unless ``--exclude``
    names them or the dataset is another than the params' (none then, without ``--report``)."""
    from vla_pipeline.data.frame_cache import FrameCacheConfig

    cfg = FrameCacheConfig.from_params(stage_params(args, FRAME_CACHE_FLAGS))
    root = other_dataset(args) if args.exclude is None and args.report is None else None
    if root is not None:
        log.debug(f"{args.dataset} is not dataset.root ({root}): its validation report is not read")
        cfg = dataclasses.replace(cfg, exclude_episodes=(), report_path=None)
    cfg = cfg if args.exclude is None else dataclasses.replace(cfg, exclude_episodes=tuple(args.exclude))
    return cfg if args.resolution is None or args.native else dataclasses.replace(cfg, resolution=tuple(args.resolution))


def cmd_frame_cache(args) -> int:
    from vla_pipeline.data.frame_cache import save_frame_cache

    cfg = make_frame_cache_config(args)
    print(f"frame cache: {save_frame_cache(dataclasses.replace(cfg, out_dir=by_hand(cfg.out_dir, 'the cache')))}")
    return 0


PREFLIGHT_FLAGS = {"report": "preflight.report", "probe": ("preflight.probe", True),
                   "memory_gib": "preflight.memory_gib"}


def cmd_preflight(args) -> int:
    from vla_pipeline.preflight.run import PreflightConfig, require_preflight, verdict_path

    cfg = PreflightConfig.from_params(stage_params(args, PREFLIGHT_FLAGS))
    verdict = verdict_path(cfg.report_path)  # written beside the report: the stage's tracked output
    moved = by_hand(verdict, "the verdict and the report")
    report = moved.with_name(cfg.report_path.name) if moved != verdict else by_hand(cfg.report_path, "the report")
    require_preflight(dataclasses.replace(cfg, report_path=report, allow_cuda_graphs=args.allow_cuda_graphs,
                                          testdata=Path(args.testdata) if args.testdata else None))
    return 0


def add_params_options(s, what: str) -> None:
    s.add_argument("--params", help=f"the params file to take {what} from, as the DVC stage does (default: "
                                     f"{DEFAULT_PARAMS} here); the flags given override the keys they name")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key (dotted, e.g. dataset.exclude_episodes=[3]), repeatable")


def add_validate(sub) -> None:
    s = sub.add_parser("validate", help="validate a LeRobotDataset v3.0 against an action contract")
    s.add_argument("dataset", nargs="?", help="dataset.root")
    s.add_argument("--contract", help="dataset.contract")
    s.add_argument("--report", help="validate.report")
    s.add_argument("--exclude", type=int, nargs="*", help="dataset.exclude_episodes: episode indices to leave out")
    s.add_argument("--min-episode-length", type=int, help="policy.chunk_size: warn below this")
    s.add_argument("--decode-samples", type=int, help="validate.decode_samples: frames to decode per video file")
    s.add_argument("--no-dry-run", action="store_true", help="validate.dry_run=false: skip the last check (sampled "
                   "frames through the train stage's data paths and one training step of a tiny Pi0.5 shaped like "
                   "the run)")
    add_params_options(s, "the dataset, contract, exclusions and report")
    s.set_defaults(func=cmd_validate)


def add_norms(sub) -> None:
    s = sub.add_parser("norms", help="split episodes and freeze normalization statistics")
    s.add_argument("dataset", nargs="?", help="dataset.root")
    s.add_argument("--contract", help="dataset.contract")
    s.add_argument("--out", help="norms.out_dir")
    s.add_argument("--report", help="validate.report: the dataset's validation report (vla validate)")
    s.add_argument("--exclude", type=int, nargs="*", help="episode indices to leave out (not a params key: default "
                                                           "those the validation report recorded)")
    s.add_argument("--val-fraction", type=float, help="norms.val_fraction")
    s.add_argument("--seed", type=int, help="norms.split_seed")
    add_params_options(s, "the dataset, contract, exclusions and split settings")
    s.set_defaults(func=cmd_norms)


def add_train(sub) -> None:
    s = sub.add_parser("train", help="fine-tune Pi0.5 as the train stage does, from a params file")
    s.add_argument("--out", help="the run's directory (not a params key): checkpoints (resumed from here), live "
                                 "metrics (OUT/live) and W&B files (OUT/wandb) all go under it (default: "
                                 "train.out_dir, train.live_dir, train.wandb.dir)")
    add_params_options(s, "everything")
    s.set_defaults(func=cmd_train)


def add_preflight(sub) -> None:
    s = sub.add_parser("preflight", help="check the machine, numerics, memory, disk and inputs of the train run")
    s.add_argument("--report", help="preflight.report: the JSON report (the verdict beside it)")
    s.add_argument("--testdata", help="reference vectors (not a params key; default: ../shared/testdata, else the "
                                      "shipped copy)")
    s.add_argument("--allow-cuda-graphs", action="store_true",
                   help="accept compile modes that use CUDA graphs on ROCm (not a params key; refused by default)")
    s.add_argument("--probe", action="store_true",
                   help="preflight.probe=true: measure peak memory with one training step per batch size (random "
                        "weights) instead of predicting it")
    s.add_argument("--memory-gib", type=float, help="preflight.memory_gib: the memory budget")
    add_params_options(s, "the run to check")
    s.set_defaults(func=cmd_preflight)


def add_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="evaluate a checkpoint on its held-out episodes (metrics, traces, videos)")
    s.add_argument("checkpoint", help="a train run dir (its last/best checkpoint), a checkpoints/<step> dir "
                                      "or a pretrained_model dir")
    s.add_argument("--dataset", help="dataset.root: the LeRobotDataset the checkpoint was trained on (another "
                                     "than the params file's: its frame cache is not read)")
    s.add_argument("--out", default="eval", help="output directory, W&B files under it unless evaluate.wandb.dir "
                                                 "(not a params key; default: eval)")
    s.add_argument("--pick", choices=["last", "best"], default="last",
                   help="which checkpoint of a run dir (not a params key)")
    s.add_argument("--norms", help="take the split from this norms dir (not a params key; default: the "
                                   "checkpoint's own)")
    s.add_argument("--stride", type=int, help="evaluate.stride: replan every N frames")
    s.add_argument("--batch-size", type=int, help="evaluate.batch_size")
    s.add_argument("--noise-seed", type=int, help="evaluate.noise_seed")
    s.add_argument("--device", help="evaluate.device")
    s.add_argument("--num-workers", type=int, help="evaluate.num_workers: video-decoding workers")
    s.add_argument("--no-videos", action="store_true", help="evaluate.videos=false: traces and metrics only")
    s.add_argument("--wandb", choices=["offline", "online", "disabled"], help="evaluate.wandb.mode")
    s.add_argument("--wandb-project", help="evaluate.wandb.project")
    s.add_argument("--wandb-dir", help="evaluate.wandb.dir: W&B run files")
    s.add_argument("--frame-cache", help="frame_cache.dir (and frame_cache.enable=true): read camera frames from "
                                         "this decoded-frame cache (vla frame-cache)")
    add_params_options(s, "the dataset and the evaluate section")
    s.set_defaults(func=cmd_evaluate)


def add_frame_cache(sub) -> None:
    s = sub.add_parser("frame-cache", help="decode every camera frame once into a memory-mapped cache")
    s.add_argument("dataset", nargs="?", help="dataset.root")
    s.add_argument("--contract", help="dataset.contract")
    s.add_argument("--out", help="frame_cache.dir")
    s.add_argument("--report", help="validate.report: the exclusions it recorded are not decoded")
    s.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"),
                   help="not a params key: instead of the policy's image resolution (policy.size, "
                        "policy.dims.vision.image_size)")
    s.add_argument("--native", action="store_true", help="frame_cache.resize=false: keep decoded frames as they "
                                                         "are (bit-identical, larger)")
    s.add_argument("--exclude", type=int, nargs="*", help="episode indices not to decode (not a params key; default: "
                                                           "the report's, none for another dataset than the params')")
    s.add_argument("--num-workers", type=int, help="frame_cache.num_workers: decoding processes")
    add_params_options(s, "the dataset, contract, exclusions, resolution and store")
    s.set_defaults(func=cmd_frame_cache)


VERBOSITY_FLAGS = {"-v": 1, "--verbose": 1, "-q": -1, "--quiet": -1}


def add_verbosity(parser, default) -> None:
    """``-v``/``-q``, before the subcommand or after it (``default``: SUPPRESS on a subcommand's, so that the
    one given before it stays)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also debug lines and other libraries' info")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="warnings and errors only")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_validate, add_norms, add_frame_cache, add_preflight, add_train, add_evaluate, add_check_compat,
                add_dataset_tools, add_contract, add_store, add_params, add_serve, add_lerobot):
        add(sub)
    for command in subcommand_parsers(parser):
        add_verbosity(command, argparse.SUPPRESS)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser):
    """Every subcommand's parser, nested ones too (``vla store du``), but ``lerobot``'s (LeRobot's flags)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                if name != "lerobot":
                    yield command
                    yield from subcommand_parsers(command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lead = list(itertools.takewhile(lambda a: a in VERBOSITY_FLAGS, argv))
    if argv[len(lead):len(lead) + 1] == ["lerobot"]:  # the rest is LeRobot's, unparsed (its flags look like ours)
        configure_logging(VERBOSITY_FLAGS[lead[-1]] if lead else None)
        claim_core_share()
        return run_entry_point(lambda: cmd_lerobot(argv[len(lead) + 1:]))
    args = make_parser().parse_args(argv)
    configure_logging(args.verbosity or None)  # no flag: VLA_LOG, else the default
    quiet_third_party()
    claim_core_share()  # this process's share of the cores, beside other runs (docs/performance.md)
    return run_entry_point(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
