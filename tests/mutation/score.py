"""Print the mutation score of the last `mutmut run` (``mutants/``), per module and in total.

``python tests/mutation/score.py [SECONDS] [--survivors]``: SECONDS is the run's wall time (the
Makefile passes it); ``--survivors`` also lists every mutant that was not killed. A mutant counts as
killed when a test failed against it, or when it made the tests time out (an endless loop is caught
too: mutmut counts it so). Survived, no-test and suspicious mutants count against the score.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
CAUGHT = ("killed", "timeout")
COLUMNS = ("killed", "timeout", "survived", "no tests", "other")


def load() -> dict[str, dict[str, int | None]]:
    """module file -> {mutant name: exit code} for every mutated file mutmut wrote metadata for."""
    return {str(meta.relative_to(MUTANTS))[: -len(".meta")]: json.loads(meta.read_text())["exit_code_by_key"]
            for meta in sorted(MUTANTS.rglob("*.py.meta"))}


def tally(codes: dict[str, int | None]) -> Counter:
    counts = Counter()
    for code in codes.values():
        status = status_by_exit_code[code]
        counts[status if status in COLUMNS else "other"] += 1
    counts["total"] = len(codes)
    return counts


def score(c: Counter) -> float:
    return 100.0 * sum(c[s] for s in CAUGHT) / c["total"] if c["total"] else 0.0


def main(argv: list[str]) -> int:
    if not MUTANTS.is_dir():
        print("no mutants/ directory: run `make mutation` first", file=sys.stderr)
        return 1
    results = load()
    header = f"{'module':<38} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} {'other':>6} " \
             f"{'total':>6} {'score':>7}"
    print(header)
    print("-" * len(header))
    overall = Counter()
    for module, codes in results.items():
        c = tally(codes)
        overall.update(c)
        print(f"{module:<38} {c['killed']:>7} {c['timeout']:>7} {c['survived']:>8} {c['no tests']:>8} "
              f"{c['other']:>6} {c['total']:>6} {score(c):>6.1f}%")
    print("-" * len(header))
    print(f"{'total':<38} {overall['killed']:>7} {overall['timeout']:>7} {overall['survived']:>8} "
          f"{overall['no tests']:>8} {overall['other']:>6} {overall['total']:>6} {score(overall):>6.1f}%")
    numbers = [a for a in argv if not a.startswith("--")]
    if numbers:
        seconds = int(float(numbers[0]))
        print(f"mutation run took {seconds // 60} min {seconds % 60} s")
    if "--survivors" in argv:
        for codes in results.values():
            for name, code in codes.items():
                if status_by_exit_code[code] not in CAUGHT:
                    print(f"{status_by_exit_code[code]:<10} {name}")
    else:
        print("the mutants not killed: .venv/bin/python tests/mutation/score.py --survivors; `.venv/bin/mutmut show "
              "NAME` shows one (docs/mutation.md: those judged harmless)")
    unchecked = overall["other"]
    if unchecked:
        print(f"{unchecked} mutants were not checked or are suspicious: `mutmut results` lists them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
