"""`vla`: the subcommands build their config from a params file the way the DVC stages do (one
config path: --params, else ./params.yaml), --set and then each flag given override its keys (a flag
has no default of its own), and a command run by hand never writes a DVC stage's output."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from vla_pipeline.cli import (
    EVALUATE_FLAGS,
    PREFLIGHT_FLAGS,
    VALIDATE_FLAGS,
    flag_overrides,
    make_evaluate_config,
    make_frame_cache_config,
    make_norms_config,
    make_parser,
    make_validate_config,
)
from vla_pipeline.data.frame_cache import FrameCacheConfig
from vla_pipeline.errors import ConfigError
from vla_pipeline.eval.config import EvaluateConfig
from vla_pipeline.norms import NormsConfig
from vla_pipeline.params.load import load_params
from vla_pipeline.validate.config import ValidateConfig

from conftest import REPO

PARAMS = REPO / "params.yaml"


def parse(*argv: str):
    return make_parser().parse_args(list(argv))


@pytest.mark.parametrize(("command", "make", "config"), [
    ("validate", make_validate_config, ValidateConfig),
    ("norms", make_norms_config, NormsConfig),
    ("frame-cache", make_frame_cache_config, FrameCacheConfig),
])
def test_with_params_the_cli_builds_the_stage_config(command, make, config) -> None:
    assert make(parse(command, "--params", str(PARAMS))) == config.from_params(load_params(PARAMS))


def test_flags_and_set_override_the_params_keys(tmp_path) -> None:
    cfg = make_validate_config(parse("validate", str(tmp_path / "other"), "--params", str(PARAMS), "--exclude", "3", "5",
                                     "--set", "validate.decode_samples=2"))
    expected = ValidateConfig.from_params(load_params(PARAMS))
    assert cfg == dataclasses.replace(expected, dataset_root=tmp_path / "other", exclude_episodes=(3, 5),
                                      decode_samples=2)


def test_only_validate_reads_the_exclusions_the_later_stages_take_them_from_its_report() -> None:
    """dataset.exclude_episodes is read once (validate, into its report); norms and the frame cache
    take the report's; an explicit --exclude still wins for a run outside the pipeline."""
    params = load_params(PARAMS, ["dataset.exclude_episodes=[1]"])
    assert ValidateConfig.from_params(params).exclude_episodes == (1,)
    for make, command in ((make_norms_config, "norms"), (make_frame_cache_config, "frame-cache")):
        cfg = make(parse(command, "--params", str(PARAMS), "--set", "dataset.exclude_episodes=[1]"))
        assert cfg.exclude_episodes is None and cfg.report_path == Path(params["validate"]["report"])
        assert make(parse(command, "--params", str(PARAMS), "--exclude", "4")).exclude_episodes == (4,)


def test_evaluate_with_params_builds_the_stage_config(tiny_run, tmp_path) -> None:
    """As the stage's, but W&B's files under --out (as `vla train --out`), and the params' frame cache
    (decoded from the params' dataset) not read for another --dataset."""
    from vla_pipeline.checkpoint.io import resolve_checkpoint

    cfg = make_evaluate_config(parse("evaluate", str(tiny_run.train), "--out", str(tmp_path), "--params", str(PARAMS),
                                     "--dataset", str(tiny_run.dataset), "--no-videos"))
    params = load_params(PARAMS, [f'dataset.root="{tiny_run.dataset}"', "evaluate.videos=false",
                                  "frame_cache.enable=false"])
    expected = EvaluateConfig.from_params(params, resolve_checkpoint(tiny_run.train, "last"), tmp_path)
    assert cfg == dataclasses.replace(expected, wandb_dir=tmp_path / "wandb")


def test_without_params_the_flags_override_params_yaml_here(tmp_path, monkeypatch) -> None:
    """No flag has a default of its own: without --params, ./params.yaml is the file the flags override."""
    doc = yaml.safe_load(PARAMS.read_text())
    doc["norms"]["val_fraction"] = 0.4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    cfg = make_norms_config(parse("norms", "--seed", "3"))
    assert (cfg.val_fraction, cfg.seed, cfg.out_dir) == (0.4, 3, Path(doc["norms"]["out_dir"]))
    assert make_validate_config(parse("validate", "d", "--contract", "c.yaml")) == ValidateConfig.from_params(
        load_params(tmp_path / "params.yaml", ['dataset.root="d"', 'dataset.contract="c.yaml"']))
    cfg = make_frame_cache_config(parse("frame-cache", "--native", "--num-workers", "2"))
    assert cfg == dataclasses.replace(FrameCacheConfig.from_params(load_params(tmp_path / "params.yaml")),
                                      resolution=None, num_workers=2)


def test_without_a_params_file_the_error_says_to_pass_one(tmp_path, monkeypatch) -> None:
    import vla_pipeline.params.load as loading

    if hasattr(loading, "load_default_params"):
        pytest.skip("the package ships default params: no params.yaml is needed")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"vla validate: no params.yaml in .*; pass --params FILE"):
        make_validate_config(parse("validate", "d", "--contract", "c.yaml"))


def test_every_switch_sets_its_key() -> None:
    assert flag_overrides(parse("validate", "--no-dry-run", "--exclude"), VALIDATE_FLAGS) == [
        "dataset.exclude_episodes=[]", "validate.dry_run=false"]
    assert flag_overrides(parse("preflight", "--probe", "--memory-gib", "0"), PREFLIGHT_FLAGS) == [
        "preflight.probe=true", "preflight.memory_gib=0.0"]
    assert flag_overrides(parse("evaluate", "ckpt"), EVALUATE_FLAGS) == []


def test_norms_of_another_dataset_than_the_params_needs_its_report() -> None:
    with pytest.raises(ConfigError, match="data/x is not the params file's dataset.root .*pass --report"):
        make_norms_config(parse("norms", "data/x", "--params", str(PARAMS)))
    cfg = make_norms_config(parse("norms", "data/x", "--params", str(PARAMS), "--report", "r.json"))
    assert (cfg.dataset_root, cfg.report_path) == (Path("data/x"), Path("r.json"))


def test_a_frame_cache_of_another_dataset_reads_no_report_unless_named() -> None:
    cfg = make_frame_cache_config(parse("frame-cache", "data/x", "--params", str(PARAMS)))
    assert (cfg.exclude_episodes, cfg.report_path) == ((), None)
    cfg = make_frame_cache_config(parse("frame-cache", "data/x", "--params", str(PARAMS), "--report", "r.json"))
    assert (cfg.exclude_episodes, cfg.report_path) == (None, Path("r.json"))


def test_verbose_and_quiet_before_or_after_the_subcommand() -> None:
    assert parse("-v", "validate").verbosity == 1 and parse("validate", "-q").verbosity == -1
    assert parse("store", "du", "--verbose").verbosity == 1 and parse("norms").verbosity == 0
    with pytest.raises(SystemExit):
        parse("validate", "-v", "-q")


def test_a_dvc_stage_output_is_written_under_by_hand_and_said(tmp_path, caplog) -> None:
    from vla_pipeline.workspace import by_hand, refuse_stage_output, stage_outputs

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text("out: {dir: art}\nkeys: [a, b]\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  one:\n    cmd: x\n    outs:\n      - ${out.dir}/one.json\n"
                                       "      - big:\n          cache: false\n  two:\n    foreach: ${keys}\n"
                                       "    do:\n      cmd: y\n      metrics:\n        - ${out.dir}/${item}/m.json\n")
    assert stage_outputs(tmp_path) == {tmp_path / "art/one.json": "one", tmp_path / "big": "one",
                                       tmp_path / "art/a/m.json": "two@a", tmp_path / "art/b/m.json": "two@b"}
    for path, stage in ((tmp_path / "art/one.json", "one"), (tmp_path / "big/x", "one"), (tmp_path / "art", "one")):
        with caplog.at_level("WARNING"):
            assert by_hand(path, "it") == tmp_path / ".vla/by-hand" / path.relative_to(tmp_path)
        assert f"output of DVC stage '{stage}'" in caplog.text
    assert by_hand(tmp_path / "elsewhere", "it") == tmp_path / "elsewhere"
    assert (tmp_path / ".vla/.gitignore").read_text().splitlines()[-1] == "*"
    with pytest.raises(ConfigError, match="output of DVC stage 'two@b'.*give --out another"):
        refuse_stage_output(tmp_path / "art/b", "--out")


def test_vla_train_in_a_dvc_workspace_publishes_the_stage_outputs_under_by_hand(tmp_path, monkeypatch) -> None:
    """The run stays in the store, as the stage's; what the stage publishes to its outputs goes to .vla/by-hand/."""
    import vla_pipeline.train.trainer as trainer
    from vla_pipeline.cli import cmd_train

    (tmp_path / ".dvc").mkdir()
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: x\n    outs:\n      - ${train.out_dir}\n"
                                       "    metrics:\n      - ${train.live_dir}/metrics.json\n")
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg: seen.append(cfg) or "ckpt")
    assert cmd_train(parse("train")) == 0
    assert (seen[0].out_dir, seen[0].live_dir) == (tmp_path / ".vla/by-hand/artifacts/train",
                                                   tmp_path / ".vla/by-hand/artifacts/train_live")
    assert seen[0].runs_in_store
    assert cmd_train(parse("train", "--out", "run")) == 0 and (seen[1].out_dir, seen[1].runs_in_store) == (
        Path("run"), False)
