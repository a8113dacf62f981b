"""The promise on generated format variants (tests/variants.py): for each, either validation (or
conversion) refuses naming the variant's real cause, or the whole run works: the dry run held the
decode and frame-cache paths to the source frames (pixels) and the table rows, and norms,
frame_cache, train (2 steps) and evaluate ran as DVC runs them, with the frame cache on or off.

``make test`` runs the first ``VLA_VARIANTS`` (default 15: the plain variant and each quirk alone);
``make test-variants`` runs 200 drawn from ``VLA_VARIANTS_SEED``. A failure names the variant, and
``VLA_VARIANTS=<n> VLA_VARIANTS_SEED=<seed>`` replays it."""

from __future__ import annotations

import json
import os

import pytest

from pipeline import STAGES
from variants import draw_variants, run_user_path, run_variant

COUNT = int(os.environ.get("VLA_VARIANTS", "15"))
SEED = int(os.environ.get("VLA_VARIANTS_SEED", "2712"))
VARIANTS = draw_variants(COUNT, SEED)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(VARIANTS)), ids=[f"{i}-{v.name}" for i, v in enumerate(VARIANTS)])
def test_validation_names_the_cause_or_the_run_works(index, tmp_path, monkeypatch, capsys):
    variant = VARIANTS[index]
    cache = index % 2 == 0  # the dry run checks the cache path either way; the stages use it on every other
    outcome = run_variant(variant, tmp_path, cache=cache, monkeypatch=monkeypatch)
    where = f"variant {index} of seed {SEED}: {variant}"
    expected = variant.expected_refusal()
    if expected is not None:
        assert outcome.refused is not None and expected in outcome.refused, f"{where}: {outcome.refused}"
        assert "Traceback" not in outcome.refused and outcome.stages == (), where
        return
    assert outcome.refused is None, f"{where}: refused after {outcome.stages}: {outcome.refused}"
    assert outcome.stages == STAGES, where
    dry_run = outcome.report["checks"]["dry_run"]
    assert dry_run["status"] == "pass" and dry_run["frames"] == 3 * 4, f"{where}: {dry_run}"
    metrics = json.loads((tmp_path / "run" / "eval" / "best" / "metrics.json").read_text())
    assert metrics["n_executed_steps"] > 0, where
    assert (tmp_path / "run" / "eval" / "best" / "videos").is_dir(), "dvc.yaml's evaluate output, evaluate.videos false"


@pytest.mark.slow
def test_the_real_pattern_recording_goes_from_convert_to_evaluate(tmp_path, monkeypatch):
    """The recording of issue 27 (tests/v21.py): a bimanual v2.1 set from its owner's recorder, cameras
    declared [3, H, W], mp4v, no stats file, stray files, no index columns, wall-clock timestamps, an
    all-black wrist camera in episode 1. It converts, validates with two warnings (the clock, the black
    camera), and with that episode excluded every stage runs on [3, H, W] frames."""
    from v21 import BLACK_CAMERA, write_v21_recording
    from vla_pipeline.data.contract import load_contract
    from vla_pipeline.data.metadata import camera_shapes

    recorded = write_v21_recording(tmp_path / "recorded")
    outcome = run_user_path(recorded, tmp_path, v2_1=True, joints="right.*", cache=True, monkeypatch=monkeypatch,
                            exclude=(BLACK_CAMERA[1],))
    assert outcome.refused is None and outcome.stages == STAGES, outcome.refused
    report = outcome.report
    assert {w["check"] for w in report["warnings"]} == {"timestamps"}  # the black episode is excluded
    assert [e["check"] for e in report["excluded"]] == [] and report["excluded_episodes"] == [BLACK_CAMERA[1]]
    assert report["checks"]["dry_run"]["status"] == "pass"
    assert set(camera_shapes(tmp_path / "ds", load_contract(tmp_path / "contract.yaml")).values()) == {(3, 24, 32)}
