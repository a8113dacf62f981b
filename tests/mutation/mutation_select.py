"""pytest plugin that `make mutation` loads (``-p mutation_select``): the mutation run uses only the
tests that need neither the generated demo dataset (AV1 videos) nor a trained model.

mutmut runs each mutant in a fresh pytest session, so a session fixture such as ``demo_dataset``
or ``tiny_run`` (tens of seconds) would be rebuilt for every mutant of every function it reaches.
Those tests, and the ``slow`` end-to-end ones, are deselected here; what is left are unit tests
that build their inputs in memory or in ``tmp_path`` in milliseconds. Which of them run against a
mutant is mutmut's choice: the tests that called the mutated function while it collected stats.
See docs/mutation.md.
"""

from __future__ import annotations

HEAVY_FIXTURES = frozenset({"demo_dataset", "tiny_run"})


def pytest_collection_modifyitems(config, items) -> None:
    keep, drop = [], []
    for item in items:
        heavy = HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))
        (drop if heavy or item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
