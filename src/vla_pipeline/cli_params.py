"""``vla params``: editing the params file the pipeline reads (``unset``: take out keys a refused
``dvc exp run -S`` left in it)."""

from __future__ import annotations

from pathlib import Path


def cmd_params_unset(args) -> int:
    from vla_pipeline.params.left_keys import remove_keys

    removed = remove_keys(Path(args.params), args.keys)
    print(f"{args.params}: removed {', '.join(removed)}")
    return 0


def add_params(sub) -> None:
    s = sub.add_parser("params", help="edit the params file (vla params unset KEY: what a refused "
                                      "`dvc exp run -S +KEY=...` left in it)")
    params_sub = s.add_subparsers(dest="params_command", required=True)
    unset = params_sub.add_parser("unset", help="remove keys from the params file, keeping every other edit and "
                                                "comment (the committed file when nothing else differs)")
    unset.add_argument("keys", nargs="+", metavar="KEY", help="dotted keys, e.g. train.lrr")
    unset.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    unset.set_defaults(func=cmd_params_unset)
