"""The dataset commands of ``vla``: make-demo, convert, trim and contract init (docs/validation.md,
docs/datasets.md), and ``vla store du|gc``, the store's disk use and cleaning (docs/experiments.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from vla_pipeline.workspace import refuse_stage_output

log = logging.getLogger(__name__)


def cmd_make_demo(args) -> int:
    from vla_pipeline.data.demo import DemoConfig, make_demo_dataset

    refuse_stage_output(args.out, "OUT")  # the demo_data stage's (dvc repro demo_data)
    print(f"demo dataset: {make_demo_dataset(DemoConfig(root=Path(args.out), num_episodes=args.episodes))}")
    return 0


def cmd_convert(args) -> int:
    from vla_pipeline.data.convert_run import convert_v21_to_v30

    refuse_stage_output(args.out, "--out")
    out = convert_v21_to_v30(Path(args.src), Path(args.out))
    print(f"converted {args.src} -> {out} (LeRobot v3.0, loads with LeRobot); next: point dataset.root "
          f"(params.yaml) at {out} and `dvc add {out}`")
    return 0


def cmd_trim(args) -> int:
    from vla_pipeline.data.trim import parse_trims, trim_dataset
    from vla_pipeline.data.validation_report import load_report

    refuse_stage_output(args.out, "--out")
    report = load_report(Path(args.report), Path(args.dataset), Path(args.contract) if args.contract else None)
    keep = parse_trims(report.get("suggested_trims") or {})
    if not keep:
        print(f"{args.report} suggests no trims: nothing to do ({args.dataset} is unchanged)")
        return 0
    out = trim_dataset(Path(args.dataset), Path(args.out), keep)
    print(f"trimmed {len(keep)} episodes of {args.dataset} -> {out} (the source is unchanged); next: point "
          f"dataset.root (params.yaml) at {out}, `dvc add {out}`, and validate it")
    return 0


def cmd_contract_init(args) -> int:
    from vla_pipeline.data.contract_init.config import InitConfig
    from vla_pipeline.data.contract_init.starter import init_contract

    cfg = InitConfig(Path(args.dataset), Path(args.out), joints=tuple(args.joints),
                     cameras=tuple(c for arg in args.cameras for c in arg.split(",") if c),
                     action_key=args.action, state_key=args.state, name=args.name, margin=args.margin,
                     force=args.force)
    starter = init_contract(cfg)
    print(f"starter contract: {args.out} ({len(starter.joints)} joints of '{starter.action_key}', cameras "
          f"{list(starter.cameras)}); confirm the lines marked 'guessed: confirm', then: "
          f"vla validate {args.dataset} --contract {args.out}")
    for note in starter.notes:
        print(f"note: {note}")
    return 0


def add_dataset_tools(sub) -> None:
    s = sub.add_parser("make-demo", help="write the synthetic LeKiwi demo dataset")
    s.add_argument("out")
    s.add_argument("--episodes", type=int, default=24)
    s.set_defaults(func=cmd_make_demo)

    s = sub.add_parser("convert", help="convert a LeRobot v2.1 dataset into a new v3.0 directory (offline; "
                                       "the source is only read)")
    s.add_argument("src", help="root of the v2.1 dataset (meta/, data/, videos/)")
    s.add_argument("--out", required=True, help="new directory for the v3.0 dataset (must not exist)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("trim", help="write a copy of a dataset with the idle heads and tails its validation report "
                                    "suggests trimming cut (the source is only read)")
    s.add_argument("dataset", help="LeRobotDataset v3.0 root the report validated")
    s.add_argument("--report", required=True, help="its validation report (suggested_trims), e.g. "
                                                   "artifacts/validation/report.json")
    s.add_argument("--contract", help="the contract it was validated with (checked against the report)")
    s.add_argument("--out", required=True, help="new directory for the trimmed dataset (must not exist or be empty)")
    s.set_defaults(func=cmd_trim)


def add_contract(sub) -> None:
    s = sub.add_parser("contract", help="action contracts: write a starter contract from a dataset")
    contract_sub = s.add_subparsers(dest="contract_command", required=True)
    s = contract_sub.add_parser("init", help="write a starter contract from a dataset's info.json and data")
    s.add_argument("dataset", help="LeRobotDataset v3.0 root (holds meta/info.json)")
    s.add_argument("--out", required=True, help="contract file to write, e.g. contracts/NAME.yaml")
    s.add_argument("--joints", action="append", default=[], metavar="PATTERN",
                   help="joints by name: a glob ('right.*') or a regex ('re:...'), repeatable; default: every "
                        "name of the action vector")
    s.add_argument("--cameras", action="append", default=[], metavar="NAME[,NAME]",
                   help="camera names or keys, in the policy's order, repeatable (default: every camera)")
    s.add_argument("--action", help="the action vector's key (default: guessed from the key names)")
    s.add_argument("--state", help="the state vector's key (default: guessed from the key names)")
    s.add_argument("--name", help="the contract's name (default: the --out file's stem)")
    s.add_argument("--margin", type=float, default=0.1,
                   help="ranges: observed min/max widened by this fraction of the span on each side")
    s.add_argument("--force", action="store_true", help="overwrite an existing --out")
    s.set_defaults(func=cmd_contract_init)


def store_and_repo(args) -> tuple[Path, Path]:
    """The store (``--store``, else the repository's ``base.store``, a relative one taken from the
    repository, else ``$VLA_STORE`` or ``~/.cache``) and the repository."""
    from vla_pipeline.checkpoint.store_gc import read_workspace_param
    from vla_pipeline.store import resolve_store

    repo = Path(args.repo)
    value = args.store or read_workspace_param(repo, "base.store", None)
    if not args.store and value not in (None, "", "auto") and not Path(value).expanduser().is_absolute():
        value = str(repo / value)  # as the pipeline's stages read it: from the repository
    return resolve_store(value), repo


def print_plan_header(consulted, plan, limit: int = 10) -> None:
    """Which clones were consulted, and the revisions whose run gc could not (or only by live params) tell."""
    for line in consulted.lines:
        print(line)
    for revision in plan.unresolved[:limit]:
        print(f"could not tell which run dvc.lock at {revision.label} references ({revision.why})")
    for revision in plan.unverified[:limit]:
        print(f"dvc.lock at {revision.label}: the DVC cache lacks its train output; its run is named by its live "
              f"params (from live params, unverified)")
    more = max(0, len(plan.unresolved) - limit) + max(0, len(plan.unverified) - limit)
    if more:
        print(f"... and {more} more such revisions")
    if plan.unresolved or plan.unverified:
        print("so every run begun before the newest of them is kept (`dvc pull` of those revisions resolves them)")


def plan_store(args, also: bool = False):
    """Register the repository in the store, consult every registered clone and plan gc: (store, repo,
    usage, consulted, plan)."""
    from vla_pipeline.checkpoint.store_gc import consult_repos, plan_gc, read_workspace_param, register_repo
    from vla_pipeline.checkpoint.store_refs import DEFAULT_OUT_DIR, DvcCache
    from vla_pipeline.checkpoint.store_usage import compute_store_usage

    store, repo = store_and_repo(args)
    consulted = consult_repos(store, repo, args.keep_recent)  # refused first: a repository without dvc.lock
    out_dir = repo / read_workspace_param(repo, "train.out_dir", DEFAULT_OUT_DIR)
    usage = compute_store_usage(store, [p for p in (out_dir, DvcCache(repo).root) if also and p.exists()])
    warning = register_repo(store, repo)
    if warning:
        log.warning(warning)
    return store, repo, usage, consulted, plan_gc(usage, consulted.refs, consulted.rules)


def cmd_store_du(args) -> int:
    from vla_pipeline.checkpoint.store_refs import LOCK_FILE
    from vla_pipeline.checkpoint.store_usage import compute_store_usage, format_usage

    status: dict = {}
    if (Path(args.repo) / LOCK_FILE).is_file():
        _, _, usage, consulted, plan = plan_store(args, also=True)
        status = {d.entry.path: ("kept: " if d.keep else "no, gc deletes it: ") + d.why for d in plan.decisions}
        print_plan_header(consulted, plan)
    else:
        usage = compute_store_usage(store_and_repo(args)[0])
        log.warning(f"no {LOCK_FILE} in {Path(args.repo).resolve()}: which runs are referenced is unknown (pass "
                    f"--repo DIR)")
    for line in format_usage(usage, lambda e: status.get(e.path, "?")):
        print(line)
    return 0


def cmd_store_gc(args) -> int:
    from vla_pipeline.checkpoint.store_gc import delete_planned
    from vla_pipeline.checkpoint.store_usage import format_size

    store, repo, usage, consulted, plan = plan_store(args)
    refs = consulted.refs
    here = sum(1 for e in usage.entries if e.kind == "run" and e.name in refs.runs)
    print(f"the dvc.lock of {refs.revisions} revisions (every commit, experiment and workspace of the consulted "
          f"clones) and their outputs reference {len(refs.runs)} runs, {here} of them in {store}")
    print_plan_header(consulted, plan)
    for d in plan.decisions:
        print(f"{'keep  ' if d.keep else 'delete'} {d.entry.path} ({format_size(d.entry.bytes)}): {d.why}")
    freeable = sum(d.entry.bytes - d.entry.shared for d in plan.to_delete)
    if not plan.to_delete:
        print(f"nothing to delete in {store}")
    elif not args.yes:
        again = " ".join(["vla store gc --yes", *(["--store", str(store)] if args.store else []),
                          *(["--repo", str(repo)] if args.repo != "." else []),
                          *([f"--keep-recent {args.keep_recent:g}"] if args.keep_recent != KEEP_RECENT_H else [])])
        print(f"would delete {len(plan.to_delete)} entries, freeing {format_size(freeable)}; nothing was deleted: "
              f"run `{again}` to delete them")
    else:
        print(f"freed {format_size(delete_planned(plan))} in {store}")
    print("the DVC cache is DVC's own: `dvc gc -w -A --all-experiments` keeps what any commit or experiment uses")
    return 0


KEEP_RECENT_H = 72.0  # store_gc.DEFAULT_KEEP_RECENT_H (not imported at the CLI's start)


def add_store(sub) -> None:
    s = sub.add_parser("store", help="the store (base.store): disk use per run and frame cache, and cleaning")
    store_sub = s.add_subparsers(dest="store_command", required=True)
    du = store_sub.add_parser("du", help="bytes on disk per run, frame-cache entry and wandb/ (hard links once)")
    gc = store_sub.add_parser("gc", help="delete runs no commit's, experiment's or workspace's dvc.lock references, "
                                         "and frame caches the workspace does not use (only with --yes)")
    gc.add_argument("--yes", action="store_true", help="delete; without it gc only prints what it would delete")
    for p, func in ((du, cmd_store_du), (gc, cmd_store_gc)):
        p.add_argument("--store", help="the store (default: base.store of the repository's params.yaml)")
        p.add_argument("--repo", default=".", help="the pipeline's git repository (default: .)")
        p.add_argument("--keep-recent", type=float, default=KEEP_RECENT_H, metavar="HOURS",
                       help="keep every run modified within the last HOURS (default: %(default)g; a clone that "
                            "never ran `vla store` is unknown to gc); 0: no such rule")
        p.set_defaults(func=func)
