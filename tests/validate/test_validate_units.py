"""The validator's machinery on small inputs: its config, what load_view loads (and reports when it
cannot), which checks run or are skipped and why, the dataset-wide summary, the report and its
on-screen form, and the report check of the later stages. Datasets here have no videos
(tests/tabular.py); tests/validate/test_validate.py and tests/e2e/test_realdata.py validate whole datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.tables import Frames, format_no_camera
from vla_pipeline.data.validation_report import load_report
from vla_pipeline.errors import ValidationError
from vla_pipeline.provenance import compute_contract_hash, compute_dataset_fingerprint
from vla_pipeline.validate import run as validate
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.findings import Finding, Findings, View
from vla_pipeline.validate.report import (
    Report,
    count_episodes,
    format_report,
    make_report,
    summarize_wide_faults,
)
from vla_pipeline.validate.run import (
    EPISODES,
    FRAMES,
    INFO,
    TASKS_META,
    Check,
    load_view,
    run_checks,
    validate_dataset,
)

from tabular import write_arm_contract, write_tabular


def test_config_from_params_reads_and_casts_every_key() -> None:
    p = {"dataset": {"root": "data/x", "contract": "c.yaml", "exclude_episodes": ["3", 1]},
         "validate": {"report": "r/report.json", "decode_samples": "2"}, "policy": {"chunk_size": "12"}}
    assert ValidateConfig.from_params(p) == ValidateConfig(
        dataset_root=Path("data/x"), contract_path=Path("c.yaml"), report_path=Path("r/report.json"),
        exclude_episodes=(3, 1), min_episode_length=12, decode_samples=2)
    cfg = ValidateConfig(Path("d"), Path("c"), Path("r"))
    assert (cfg.exclude_episodes, cfg.min_episode_length, cfg.decode_samples) == ((), 1, 0)


# ----------------------------------------------------------------------------- loading
def _tabular(tmp_path: Path, lengths: tuple[int, ...] = (3, 4, 2)) -> tuple[Path, Path]:
    actions = [np.arange(4 * n, dtype=float).reshape(n, 4) for n in lengths]
    return write_tabular(tmp_path / "ds", actions), write_arm_contract(tmp_path / "c.yaml", joints=("elbow", "gripper"))


def _cfg(root: Path, contract: Path, tmp_path: Path, **kw) -> ValidateConfig:
    return ValidateConfig(root, contract, tmp_path / "out" / "report.json", **kw)


def test_load_view_reads_the_tables(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    view, loaded = load_view(_cfg(root, contract, tmp_path, min_episode_length=7, decode_samples=3,
                                  exclude_episodes=[2]), out)
    assert out.errors == [] and loaded == {INFO, FRAMES, EPISODES, TASKS_META}
    assert (view.root, view.contract, view.min_episode_length, view.decode_samples, view.exclude_episodes) == (
        root, load_contract(contract), 7, 3, (2,))
    assert view.info["fps"] == 30 and view.frames.n == 9 and view.tasks == {0: "reach"}
    assert view.episodes["length"].tolist() == [3, 4, 2]
    assert view.frames.vectors["action"].shape == (9, 4) and view.frames.vectors["observation.state"].shape == (9, 4)


@pytest.mark.parametrize("shape", ["four", None, [], "absent"])
def test_load_view_reads_no_vector_whose_shape_is_malformed(tmp_path, shape) -> None:
    root, contract = _tabular(tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    if shape == "absent":
        del info["features"]["action"]
    else:
        info["features"]["action"]["shape"] = shape
    (root / "meta" / "info.json").write_text(json.dumps(info))
    view, loaded = load_view(_cfg(root, contract, tmp_path), Findings())
    assert FRAMES in loaded and list(view.frames.vectors) == ["observation.state"]


@pytest.mark.parametrize(("text", "error"), [("{ not json", "JSONDecodeError"), ('{"fps": 30}', "KeyError"),
                                             ('{"features": {}}', "KeyError"), ("[1]", "TypeError")])
def test_an_unreadable_info_json_is_the_one_error(tmp_path, text, error) -> None:
    root, contract = _tabular(tmp_path)
    (root / "meta" / "info.json").write_text(text)
    out = Findings()
    assert load_view(_cfg(root, contract, tmp_path), out) == (None, set())
    assert len(out.errors) == 1 and out.errors[0].check == "info_json"
    message = out.errors[0].message
    assert message.startswith(f"{root}/meta/info.json cannot be read ({error}: ")
    assert message.endswith(f"); is {root} a LeRobotDataset v3.0 root?")
    with pytest.raises(ValidationError):
        validate_dataset(_cfg(root, contract, tmp_path))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["checks"] == {"info_json": {"status": "fail", "errors": 1, "warnings": 0}}


def test_another_layout_loads_nothing_else(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    out = Findings()
    view, loaded = load_view(_cfg(root, contract, tmp_path), out)
    assert loaded == {INFO} and view.frames is None and view.episodes is None and out.errors == []


def test_unreadable_tables_are_findings(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    for path in (root / "data").rglob("*.parquet"):
        path.unlink()
    (root / "meta" / "tasks.parquet").write_text("not parquet")
    out = Findings()
    view, loaded = load_view(_cfg(root, contract, tmp_path), out)
    assert loaded == {INFO, EPISODES} and view.frames is None and view.episodes is not None
    assert [f.check for f in out.errors] == ["data_files", "tasks_meta"]
    assert out.errors[0].message == (f"cannot read frames (FileNotFoundError: no parquet files under {root / 'data'}); "
                                     f"re-export the dataset")
    assert out.errors[1].message.startswith("cannot read tasks (") and out.errors[1].message.endswith(
        "); re-export the dataset")


def test_data_without_the_required_columns_is_not_loaded(tmp_path) -> None:
    import pyarrow.parquet as pq

    root, contract = _tabular(tmp_path)
    path = next((root / "data").rglob("*.parquet"))
    pq.write_table(pq.read_table(path).drop(["frame_index", "timestamp"]), path)
    out = Findings()
    view, loaded = load_view(_cfg(root, contract, tmp_path), out)
    assert FRAMES not in loaded and view.frames is not None
    (error,) = out.errors
    assert error.check == "data_files" and error.value == ["frame_index", "timestamp"]
    assert error.message.startswith("data parquet lacks columns ['frame_index', 'timestamp'], which LeRobot's loader")


# ----------------------------------------------------------------------------- running the checks
def _record(name: str, errors: int = 0, crash: bool = False):
    def fn(view, out: Findings) -> None:
        if crash:
            raise ValueError("boom")
        for _ in range(errors):
            out.error(name, f"{name} failed")
        out.warn("ran", name)
    return fn


def test_checks_run_or_are_skipped_with_what_they_need(monkeypatch) -> None:
    monkeypatch.setattr(validate, "CHECKS", [
        Check("codebase", _record("codebase"), after=()),
        Check("fails", _record("fails", errors=2)),
        Check("needs_frames", _record("needs_frames"), (INFO, FRAMES, TASKS_META)),
        Check("after_fail", _record("after_fail"), after=("codebase", "fails")),
        Check("after_skip", _record("after_skip"), after=("needs_frames", "codebase")),
        Check("after_unknown", _record("after_unknown"), after=("nothing_ran",)),
        Check("crashes", _record("crashes", crash=True), (INFO, EPISODES)),
        Check("after_crash", _record("after_crash"), after=("crashes", "crashes")),
        Check("after_ok", _record("after_ok"), after=("codebase", "needs_frames", "needs_frames")),
    ])
    out = Findings()
    status = run_checks(View(Path("r"), {}, None), {INFO, EPISODES}, out)
    assert status == {
        "codebase": {"state": "ran"},
        "fails": {"state": "ran"},
        "needs_frames": {"state": "skipped", "needs": ["data_files", "tasks_meta"]},
        "after_fail": {"state": "skipped", "needs": ["fails"]},
        "after_skip": {"state": "skipped", "needs": ["data_files", "tasks_meta"]},
        "after_unknown": {"state": "skipped", "needs": ["nothing_ran"]},
        "crashes": {"state": "ran"},
        "after_crash": {"state": "skipped", "needs": ["crashes"]},
        "after_ok": {"state": "skipped", "needs": ["data_files", "tasks_meta"]},
    }
    assert [w.message for w in out.warnings] == ["codebase", "fails"]
    assert out.errors[-1] == Finding("crashes", "check could not run (ValueError: boom); the files are malformed "
                                                "here: see the other errors, or re-export the dataset")


def test_count_episodes() -> None:
    frames = Frames(3, {"episode_index"}, {"episode_index": np.array([4, 4, 9])})
    assert count_episodes(None) is None
    assert count_episodes(View(Path("r"), {}, None)) is None
    assert count_episodes(View(Path("r"), {}, None, frames=frames)) == 2
    assert count_episodes(View(Path("r"), {}, None, frames=frames,
                               episodes={"episode_index": np.arange(5)})) == 5


# ----------------------------------------------------------------------------- the report
def _finding(check: str, episode: int | None, message: str = "") -> Finding:
    return Finding(check, message or f"{check} in {episode}", episode=episode)


def test_a_check_failing_in_most_episodes_is_a_dataset_fault() -> None:
    errors = [_finding("a", e) for e in (0, 1, 1, 2)] + [_finding("b", e) for e in (0, 3)] + [_finding("c", None)]
    summaries, wide = summarize_wide_faults(errors, 4)
    assert wide == ["a"]  # 3 of 4 episodes; b's 2 of 4 is not more than half
    assert summaries == [Finding("a", "3 of 4 episodes fail this check: a fault of the whole dataset, not of a few "
                                      "episodes, so excluding them is not the fix. First: a in 0", value=3, expected=0)]
    assert summarize_wide_faults(errors, 2)[1] == ["a", "b"]  # every usable episode
    assert summarize_wide_faults(errors, 5)[1] == ["a"] and summarize_wide_faults(errors, 6)[1] == []
    assert summarize_wide_faults(errors, None) == ([], []) and summarize_wide_faults(errors, 0) == ([], [])


def _view(n_episodes: int, frames: int = 0) -> View:
    view = View(Path("r"), {}, None, episodes={"episode_index": np.arange(n_episodes)})
    if frames:
        view.frames = Frames(frames, set(), {"episode_index": np.zeros(frames, dtype=int)})
    return view


def test_report_separates_excluded_errors_and_suggests_exclusions(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    out.error("finite", "nan in 1", episode=1)
    out.error("finite", "nan in 4", episode=4)
    out.error("ranges", "range in 4", episode=4)
    out.error("fps", "fps wrong")
    out.error("late", "found after the checks", episode=2)
    out.warn("static_joints", "static in 0", episode=0)
    out.warn("static_joints", "static in 4", episode=4)
    out.warn("timestamps", "clock")
    status = {"fps": {"state": "ran"}, "finite": {"state": "ran"}, "ranges": {"state": "ran"},
              "static_joints": {"state": "ran"}, "timestamps": {"state": "ran"}, "videos": {"state": "ran"},
              "tasks": {"state": "skipped", "needs": ["tasks_meta"]}}
    report = make_report(_cfg(root, contract, tmp_path, exclude_episodes=(4, 7)), out, status, _view(6, frames=9))
    assert report.ok is False and report.dataset_root == str(root) and report.contract == str(contract)
    assert report.contract_hash == compute_contract_hash(contract)
    assert report.dataset_fingerprint == compute_dataset_fingerprint(root)
    assert [(e["check"], e["episode"]) for e in report.errors] == [("finite", 1), ("fps", None), ("late", 2)]
    assert [(e["check"], e["episode"]) for e in report.excluded] == [("finite", 4), ("ranges", 4)]
    assert [(w["check"], w["episode"]) for w in report.warnings] == [("static_joints", 0), ("timestamps", None)]
    assert report.excluded_episodes == [4, 7] and report.suggested_exclusions == [1, 2] and report.dataset_wide == []
    assert report.checks == {
        "fps": {"status": "fail", "errors": 1, "warnings": 0},
        "finite": {"status": "fail", "errors": 1, "warnings": 0},
        "ranges": {"status": "pass", "errors": 0, "warnings": 0},  # its only error is in an excluded episode
        "static_joints": {"status": "warn", "errors": 0, "warnings": 1},
        "timestamps": {"status": "warn", "errors": 0, "warnings": 1},
        "videos": {"status": "pass", "errors": 0, "warnings": 0},
        "tasks": {"status": "skipped", "needs": ["tasks_meta"], "errors": 0, "warnings": 0},
        "late": {"status": "fail", "errors": 1, "warnings": 0},
    }
    assert report.summary == {"n_frames": 9, "n_episodes": 6, "n_excluded_episodes": 2}


def test_report_of_a_dataset_wide_fault_suggests_no_exclusion(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    for e in (0, 1, 2):
        out.error("videos", f"missing {e}", episode=e)
    out.error("finite", "nan", episode=3)
    report = make_report(_cfg(root, contract, tmp_path, exclude_episodes=(5,)), out, {}, _view(6))
    assert report.dataset_wide == ["videos"] and report.suggested_exclusions == [3]
    assert report.errors[0]["episode"] is None and report.errors[0]["message"].startswith("3 of 5 episodes")
    assert report.summary == {}  # no frames loaded


def test_exclusions_that_would_leave_too_little_are_not_suggested(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    out.error("finite", "nan", episode=0)
    assert make_report(_cfg(root, contract, tmp_path), out, {}, _view(3)).suggested_exclusions == [0]
    assert make_report(_cfg(root, contract, tmp_path), out, {}, _view(2)).suggested_exclusions == []
    report = make_report(_cfg(tmp_path / "absent", contract, tmp_path), Findings(), {}, None)
    assert report.ok is True and report.dataset_fingerprint == "" and report.suggested_exclusions == []


def _report(**changes) -> dict:
    r = {"errors": [], "warnings": [], "dataset_wide": [], "suggested_exclusions": [], "excluded_episodes": [],
         "checks": {"fps": {"status": "pass", "errors": 0, "warnings": 0}}}
    r.update(changes)
    return r


def test_format_report_lists_causes_advice_and_the_table() -> None:
    errors = [{"check": "finite", "message": f"nan in {e}\nsecond line", "episode": e} for e in range(3)]
    errors.append({"check": "fps", "message": "fps wrong", "episode": None})
    r = _report(errors=errors, warnings=[{"check": "static_joints", "message": "still", "episode": 0}],
                suggested_exclusions=[2, 0, 1], excluded_episodes=[5, 1],
                checks={"fps": {"status": "fail", "errors": 1, "warnings": 0},
                        "finite": {"status": "fail", "errors": 3, "warnings": 0},
                        "static_joints": {"status": "warn", "errors": 0, "warnings": 1},
                        "ranges": {"status": "pass", "errors": 0, "warnings": 0},
                        "tasks": {"status": "skipped", "needs": ["tasks_meta", "data_files"], "errors": 0,
                                  "warnings": 0},
                        "global_index": {"status": "pass", "errors": 0, "warnings": 0}})
    assert format_report(r, limit=2, where="r.json") == "\n".join([
        "errors (4):",
        "  [finite] nan in 0\n    second line",
        "  [finite] nan in 1\n    second line",
        "  [finite] ... and 1 more (all in r.json)",
        "  [fps] fps wrong",
        "warnings (1):",
        "  [static_joints] still",
        "to train without the episodes whose faults are their own, set in params.yaml  dataset.exclude_episodes: "
        "[0, 1, 2, 5]",
        "check                status   errors warnings",
        "fps                  fail          1        0",
        "finite               fail          3        0",
        "static_joints        warn          0        1",
        "tasks                skipped (needs: tasks_meta, data_files)",
        "passed: ranges, global_index",
        "Validation failed: 4 errors in finite, fps; fix them, or exclude the episodes named above "
        "(dataset.exclude_episodes), then validate again (full report: r.json).",
    ])


def test_format_report_of_a_dataset_wide_fault_and_of_too_few_episodes() -> None:
    wide = [{"check": "videos", "message": "3 of 3 episodes fail", "episode": None}] + [
        {"check": "videos", "message": f"missing {e}", "episode": e} for e in range(3)]
    text = format_report(_report(errors=wide, dataset_wide=["videos"]))
    assert text.splitlines()[:2] == ["errors (4):", "  [videos] 3 of 3 episodes fail"]
    assert "missing 0" not in text and "fix the dataset" not in text and "exclude_episodes" not in text
    few = [{"check": "finite", "message": "nan", "episode": 0}]
    assert "excluding the failing episodes would leave fewer than 2: fix the dataset" in format_report(
        _report(errors=few))
    assert "would leave fewer" not in format_report(_report(errors=[{"check": "fps", "message": "x", "episode": None}]))
    assert format_report(_report()) == "check                status   errors warnings\npassed: fps\nValidation passed: 0 warnings."
    default = format_report(_report(errors=[{"check": "c", "message": str(i), "episode": None} for i in range(7)]))
    assert "  [c] ... and 2 more (all in the JSON report)" in default  # five on screen by default
    five = format_report(_report(warnings=[{"check": "w", "message": str(i), "episode": None} for i in range(5)]))
    assert "more" not in five and "  [w] 4" in five
    six = format_report(_report(warnings=[{"check": "w", "message": str(i), "episode": None} for i in range(6)]),
                        where="r.json")
    assert "  [w] ... and 1 more (all in r.json)" in six


def test_format_report_takes_a_report_object(tmp_path) -> None:
    report = Report(ok=True, dataset_root="d", contract="c", contract_hash="h", dataset_fingerprint="f",
                    checks={"fps": {"status": "pass", "errors": 0, "warnings": 0}}, errors=[], warnings=[],
                    excluded=[], excluded_episodes=[], suggested_exclusions=[])
    assert format_report(report) == "check                status   errors warnings\npassed: fps\nValidation passed: 0 warnings."
    assert format_report(report, where="r.json").endswith("\nValidation passed: 0 warnings; report written to r.json.")


def test_validate_dataset_writes_the_report_then_fails_with_the_causes(tmp_path) -> None:
    root, contract = _tabular(tmp_path)  # the contract maps no camera: one error
    path = tmp_path / "out" / "validation" / "report.json"
    cfg = ValidateConfig(root, contract, path)
    with pytest.raises(ValidationError) as e:
        validate_dataset(cfg)
    report = json.loads(path.read_text())
    assert path.read_text() == json.dumps(report, indent=2)
    assert report["ok"] is False and [x["check"] for x in report["errors"]] == ["contract_keys"]
    assert str(e.value) == (f"dataset {root} failed validation against {contract} (1 error; full report: {path}):\n"
                            + format_report(report, where=str(path)))
    (root / "meta" / "info.json").write_text(json.dumps({**json.loads((root / "meta" / "info.json").read_text()),
                                                         "fps": 15}))
    with pytest.raises(ValidationError, match=r"\(2 errors; full report: "):
        validate_dataset(cfg)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"].update({f"extra{i}": {"dtype": "float32", "shape": [1], "names": None} for i in range(7)})
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValidationError) as e:
        validate_dataset(cfg)
    assert f"  [features_in_data] ... and 2 more (all in {path})" in str(e.value)


# ----------------------------------------------------------------------------- the report the later stages read
def test_load_report_refuses_a_missing_failed_stale_or_mismatched_report(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    path = tmp_path / "report.json"
    with pytest.raises(ValidationError) as e:
        load_report(path, root)
    assert str(e.value) == f"validation report {path} not found; run `dvc repro validate` (or `vla validate`) first"
    good = {"ok": True, "dataset_fingerprint": compute_dataset_fingerprint(root),
            "contract_hash": compute_contract_hash(contract), "excluded_episodes": [1, 3]}
    path.write_text(json.dumps({**good, "ok": False}))
    with pytest.raises(ValidationError) as e:  # a dataset without a camera: that, and nothing else
        load_report(path, root)
    assert str(e.value) == format_no_camera(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["cam"] = {"dtype": "video", "shape": [8, 8, 3], "names": ["height", "width", "channels"]}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    good["dataset_fingerprint"] = compute_dataset_fingerprint(root)
    with pytest.raises(ValidationError) as e:
        load_report(path, root)
    assert str(e.value) == (f"validation report {path} says {root} failed validation (no error recorded); fix what "
                            f"it names (`vla validate` lists every error), then run `dvc repro validate` (or "
                            f"`vla validate`)")
    path.write_text(json.dumps({**good, "dataset_fingerprint": "other"}))
    with pytest.raises(ValidationError) as e:
        load_report(path, root)
    assert str(e.value) == (f"validation report {path} belongs to another version of {root}; run `dvc repro validate` "
                            f"(or `vla validate`)")
    path.write_text(json.dumps({**good, "contract_hash": "other"}))
    assert load_report(path, root)["ok"] is True  # the contract is compared only when given
    with pytest.raises(ValidationError) as e:
        load_report(path, root, contract)
    assert str(e.value) == (f"validation report {path} was made against another contract than {contract}; run "
                            f"`dvc repro validate` (or `vla validate`)")
    path.write_text(json.dumps(good))
    assert load_report(str(path), root, contract, (3, 1, 3)) == good
    assert load_report(path, root, contract) == good  # exclusions compared only when given
    with pytest.raises(ValidationError) as e:
        load_report(path, root, contract, (1,))
    assert str(e.value) == (f"validation report {path} was made with dataset.exclude_episodes [1, 3], not [1]; run "
                            f"`dvc repro validate` (or `vla validate`)")


def _frames_view(lengths: dict[int, int]) -> View:
    episodes = np.concatenate([np.full(n, e) for e, n in lengths.items()])
    view = View(Path("r"), {}, None, episodes={"episode_index": np.array(list(lengths))})
    view.frames = Frames(len(episodes), set(), {"episode_index": episodes})
    return view


def test_behavioural_warnings_suggest_exclusions_and_trims_when_confined_to_a_few_episodes(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    out.warn("action_is_state", "copied in 1", episode=1, frames=[0, 99], suggestion="exclude")
    out.warn("idle_ends", "idle head in 2", episode=2, frames=[0, 39], suggestion="trim", trim=[40, 99])
    out.warn("idle_ends", "idle tail in 2", episode=2, frames=[80, 99], suggestion="trim", trim=[0, 79])
    out.warn("static_joints", "static in 3", episode=3)  # no suggestion: not an exclusion
    report = make_report(_cfg(root, contract, tmp_path), out, {}, _frames_view(dict.fromkeys(range(6), 100)))
    assert report.ok and report.suggested_exclusions == [1]
    assert report.suggested_trims == {2: [40, 79]}
    assert report.episode_quality == {0: 1.0, 1: 0.0, 2: 0.6 * 0.8, 3: 0.9, 4: 1.0, 5: 1.0}


def test_a_behavioural_fault_in_most_episodes_is_one_dataset_warning_and_no_exclusion(tmp_path) -> None:
    root, contract = _tabular(tmp_path)
    out = Findings()
    for e in range(4):
        out.warn("saturation", f"pinned in {e}", episode=e, frames=[0, 9], suggestion="exclude")
    out.error("finite", "nan in 5", episode=5)
    report = make_report(_cfg(root, contract, tmp_path), out, {}, _frames_view(dict.fromkeys(range(6), 100)))
    assert report.suggested_exclusions == [5] and "saturation" in report.dataset_wide
    assert [(w["check"], w["episode"]) for w in report.warnings] == [("saturation", None)]
    assert "4 of 6 episodes" in report.warnings[0]["message"]
    assert report.episode_quality == {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5, 4: 1.0, 5: 0.0}  # each episode's own findings
