"""Strict params: what params.yaml may hold (params/schema.py), refused at the entry points with the key,
the value and what is allowed, before anything runs."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import yaml

from vla_pipeline.errors import ConfigError
from vla_pipeline.params.fields import Spec
from vla_pipeline.params.load import load_params
from vla_pipeline.params.models import Params, Phase, fields_of, submodel
from vla_pipeline.params.schema import ALL_KEYS, check_params

from conftest import REPO
from procs import run_bounded

SHIPPED = yaml.safe_load((REPO / "params.yaml").read_text())


def _problems(edit) -> str:
    params = copy.deepcopy(SHIPPED)
    edit(params)
    with pytest.raises(ConfigError) as e:
        check_params(params)
    return str(e.value)


def test_the_shipped_params_follow_the_schema_and_name_every_key() -> None:
    check_params(SHIPPED)

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and k != "phases":
                yield from leaves(v, f"{prefix}{k}.")
            yield prefix + k

    shipped = {k for k in leaves(SHIPPED) if not k.startswith("phases")}
    assert shipped == {k for k in ALL_KEYS if not k.startswith("phases")}


@pytest.mark.parametrize(("key", "closest"), [
    ("train.lrr", "train.lr"), ("train.augment.brightnes", "train.augment.brightness"),
    ("evaluate.strid", "evaluate.stride"), ("norms.val_fractoin", "norms.val_fraction"),
])
def test_an_unknown_key_is_refused_with_the_closest_valid_key(key, closest) -> None:
    """Also what `dvc exp run -S +train.lrr=1e-3` (DVC's own hint for a new key) writes."""
    section, *middle, leaf = key.split(".")
    message = _problems(lambda p: _node(p, [section, *middle]).__setitem__(leaf, 1))
    assert f"unknown key '{key}'; did you mean '{closest}'?" in message
    assert "nothing was run" in message


def _node(params: dict, path: list[str]) -> dict:
    for part in path:
        params = params[part]
    return params


def test_a_key_nothing_resembles_is_refused_without_a_guess() -> None:
    assert "unknown key 'zzz'\n" in _problems(lambda p: p.__setitem__("zzz", {}))


@pytest.mark.parametrize(("value", "shown"), [(1.5, "(not float 1.5)"), (True, "(not bool True)"),
                                              ("1e4", "(not str '1e4')"), (2.0, "(not float 2.0)")])
def test_an_integer_key_takes_only_integers(value, shown) -> None:
    message = _problems(lambda p: p["train"].__setitem__("steps", value))
    assert f"'train.steps' = {value!r}: an integer >= 1 or null {shown}" in message


def test_a_number_key_takes_the_strings_yaml_leaves_unparsed_but_never_a_bool() -> None:
    params = copy.deepcopy(SHIPPED)
    params["train"]["lr"] = "1e-3"  # PyYAML reads 1e-3 (no dot) as a string; DVC's -S writes it so
    check_params(params)
    assert "'train.lr' = True: a number > 0 or null" in _problems(lambda p: p["train"].__setitem__("lr", True))
    assert "'train.lr' = 0: a number > 0 or null" in _problems(lambda p: p["train"].__setitem__("lr", 0))


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("brightness", [1.2, 0.8], "the range is inverted: low 1.2 > high 0.8"),
    ("hue", [-0.7, 0.1], "null or [low, high] with low <= high, both in [-0.5, 0.5]"),
    ("contrast", [0.9], "null or [low, high] with low <= high, both >= 0"),
    ("crop_scale", 0.3, "a number >= 0.5 and <= 1 or null"),
])
def test_augmentation_ranges_are_ordered_and_in_bounds(key, value, rule) -> None:
    message = _problems(lambda p: p["train"]["augment"].__setitem__(key, value))
    assert f"'train.augment.{key}' = {value!r}: " in message and rule in message


@pytest.mark.parametrize(("path", "value", "allowed"), [
    (("norms", "val_fraction"), 1.0, "a number > 0 and < 1"),
    (("evaluate", "saturation_margin"), 0.5, "a number >= 0 and < 0.5"),
    (("train", "precision"), "bf32", "one of ['auto', 'bf16', 'fp16', 'fp32']"),
    (("train", "num_workers"), -1, "an integer >= 0 or auto"),
    (("train", "compile"), "yes", "auto, true or false"),
    (("train", "freeze"), ["vision", "arms"], "a list of: vision, language, vlm, expert_only"),
    (("dataset", "exclude_episodes"), [1, 2.5], "a list of episode indices (integers >= 0), or null"),
    (("frame_cache", "enable"), "true", "true or false"),
    (("policy", "pretrained"), 3, "null, a hub id, a directory or a .safetensors file"),
])
def test_values_out_of_their_range_or_kind_are_refused(path, value, allowed) -> None:
    message = _problems(lambda p: _node(p, list(path[:-1])).__setitem__(path[-1], value))
    assert f"'{'.'.join(path)}' = {value!r}: {allowed}" in message


def test_phases_and_missing_keys() -> None:
    assert "'train.phase' = 'smok': one of the phases defined under `phases`: ['smoke', 'sanity', 'scale']" in \
        _problems(lambda p: p["train"].__setitem__("phase", "smok"))
    assert "'phases.scale.steps' = 3.5: an integer >= 1 or null (not float 3.5)" in \
        _problems(lambda p: p["phases"]["scale"].__setitem__("steps", 3.5))
    assert "unknown key 'phases.scale.step'; did you mean" in _problems(
        lambda p: p["phases"]["scale"].__setitem__("step", 3))
    assert "missing key 'train.keep_last'" in _problems(lambda p: p["train"].pop("keep_last"))
    assert "'train.augment.enable' is true but no transform is configured" in _problems(
        lambda p: p["train"]["augment"].update(brightness=None, contrast=None))


def test_every_problem_is_listed_at_once() -> None:
    def edit(p):
        p["train"]["lrr"] = 1
        p["train"]["steps"] = 1.5
        p["evaluate"]["videos"] = "no"

    message = _problems(edit)
    assert message.startswith("params.yaml: 3 problem(s):\n")


def test_the_schema_has_a_leaf_spec_or_a_section_everywhere() -> None:
    """Every key of the models either is a section (a model) or says what it allows (a Spec): the words of
    every problem message."""
    def walk(model):
        for name, field in fields_of(model).items():
            if submodel(field) is not None:
                yield from walk(submodel(field))
            elif name != "phases":
                yield name, [m for m in field.metadata if isinstance(m, Spec)]

    leaves = [*walk(Params), *walk(Phase)]
    assert leaves and all(len(specs) == 1 for _, specs in leaves), [n for n, s in leaves if len(s) != 1]


def test_broken_yaml_names_file_line_and_column(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 0\ntrain:\n  lr: [1e-3\n  steps: 4\n")
    with pytest.raises(ConfigError) as e:
        load_params(path)
    assert str(e.value).startswith(f"{path}:5:")
    assert "not valid YAML" in str(e.value)


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_the_cli_refuses_a_bad_params_file_in_one_message_without_traceback(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: 1\n")
    params = copy.deepcopy(SHIPPED)
    params["train"]["steps"] = True
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(params))
    for path, expected in ((broken, f"error: {broken}:2:1: not valid YAML"),
                           (typo, "'train.steps' = True: an integer >= 1 or null (not bool True)")):
        result = run_bounded([sys.executable, "-m", "vla_pipeline.cli", "train", "--params", str(path)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (Path.cwd() / "artifacts/train.tmp").exists()


def test_overrides_set_dotted_keys_as_yaml_values_before_the_check(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(SHIPPED))
    params = load_params(path, ["train.lr=2e-4", "train.steps=7", "dataset.exclude_episodes=[1, 3]",
                                "train.wandb.mode=disabled"])
    assert params["train"]["lr"] == "2e-4" and params["train"]["steps"] == 7  # as params.yaml would read them
    assert params["dataset"]["exclude_episodes"] == [1, 3] and params["train"]["wandb"]["mode"] == "disabled"
    assert yaml.safe_load(path.read_text()) == SHIPPED  # the file is only read


@pytest.mark.parametrize(("override", "message"), [
    ("train.lrr=1", "unknown key 'train.lrr'; did you mean 'train.lr'"),
    ("train.steps=many", "'train.steps' = 'many'"),
    ("trian.lr=1", "override 'trian.lr=1': trian is not a section of the params file"),
    ("train.lr", "override 'train.lr' is not KEY=VALUE"),
])
def test_a_bad_override_is_refused_with_the_key(tmp_path, override: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(SHIPPED))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(path, [override])
