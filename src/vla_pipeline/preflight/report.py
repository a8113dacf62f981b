"""One preflight check's result, and the report: a JSON document and a table for the terminal."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATUSES = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Check:
    group: str  # environment | numerics | compile | memory | disk | inputs | tracking
    name: str
    status: str  # pass | warn | fail
    value: str  # what was measured or found
    fix: str = ""  # what to do (empty on pass)

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict:
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        return {"ok": self.ok, "counts": counts, "checks": [asdict(c) for c in self.checks]}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def save_verdict(self, path: Path) -> None:
        """Each check's status only: the same on every run of one machine and config (the train stage
        depends on this file, so a re-run of preflight re-runs train only when a verdict changes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        verdict = {"ok": self.ok, "checks": {f"{c.group}/{c.name}": c.status for c in self.checks}}
        path.write_text(json.dumps(verdict, indent=2) + "\n")

    def format_table(self) -> str:
        """One line per check (status, name, what was measured), the fix indented under a warn or fail."""
        width = max(len(f"{c.group}/{c.name}") for c in self.checks) if self.checks else 0
        lines = []
        for c in self.checks:
            status = c.status if c.status == "pass" else c.status.upper()
            lines.append(f"{status:<4}  {f'{c.group}/{c.name}':<{width}}  {c.value}")
            if c.fix:
                lines.append(f"{'':<4}  {'':<{width}}  -> {c.fix}")
        counts = self.to_dict()["counts"]
        lines.append(f"preflight: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
        return "\n".join(lines)
