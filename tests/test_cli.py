"""`vla`: the subcommands build their config from a params file the way the DVC stages do (one
config path), flags and --set override its keys, and without --params the flags alone must say
what to read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vla_pipeline.cli import (
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
    from vla_pipeline.checkpoint.io import resolve_checkpoint

    cfg = make_evaluate_config(parse("evaluate", str(tiny_run.train), "--out", str(tmp_path), "--params", str(PARAMS),
                                     "--dataset", str(tiny_run.dataset), "--no-videos"))
    params = load_params(PARAMS, [f'dataset.root="{tiny_run.dataset}"', "evaluate.videos=false"])
    assert cfg == EvaluateConfig.from_params(params, resolve_checkpoint(tiny_run.train, "last"), tmp_path)


@pytest.mark.parametrize(("argv", "missing"), [
    (["validate"], "pass DATASET and --contract, or --params FILE"),
    (["norms", "data/x", "--contract", "c.yaml"], "pass --report, or --params FILE"),
    (["frame-cache", "data/x"], "pass --contract, or --params FILE"),
])
def test_without_params_the_flags_must_name_the_inputs(argv, missing) -> None:
    make = {"validate": make_validate_config, "norms": make_norms_config, "frame-cache": make_frame_cache_config}
    with pytest.raises(ConfigError, match=missing):
        make[argv[0]](parse(*argv))
