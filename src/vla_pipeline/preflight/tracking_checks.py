"""Tracking: the W&B mode, whether an API key is there (never printed), W&B reachable when online,
and the dvclive directory writable."""

from __future__ import annotations

import netrc
import os
import tempfile
from pathlib import Path

from vla_pipeline.preflight.report import Check

WANDB_API = ("api.wandb.ai", 443)


def wandb_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def check_wandb(mode: str, key_present: bool, is_reachable) -> list[Check]:
    value = f"mode {mode}, API key {'present' if key_present else 'absent'}"
    if mode != "online":
        return [Check("tracking", "wandb", "pass", value + ("; `wandb sync` uploads offline runs later"
                                                           if mode == "offline" else ""))]
    if not key_present:
        return [Check("tracking", "wandb", "fail", value,
                      "set WANDB_API_KEY in the environment (never in params.yaml), or train.wandb.mode: offline")]
    if not is_reachable(WANDB_API):
        return [Check("tracking", "wandb", "fail", value + f"; {WANDB_API[0]} unreachable",
                      "use train.wandb.mode: offline and `wandb sync` the run later")]
    return [Check("tracking", "wandb", "pass", value + f"; {WANDB_API[0]} reachable")]


def check_live_dir(live_dir: Path) -> list[Check]:
    target = Path(live_dir).resolve()
    while not target.exists():
        target = target.parent
    try:
        with tempfile.NamedTemporaryFile(dir=target):
            ok = True
    except OSError:
        ok = False
    return [Check("tracking", "dvclive_dir", "pass" if ok else "fail", f"{live_dir} (checked in {target})",
                  "" if ok else f"make {target} writable or point train.live_dir elsewhere")]
