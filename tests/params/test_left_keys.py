"""A key a refused `dvc exp run -S` left in params.yaml: reported as such, with the one command that takes it
out (params/left_keys.py; through DVC itself: tests/e2e/test_params_workspace.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import modify_yaml

from vla_pipeline.cli_params import add_params
from vla_pipeline.errors import ConfigError
from vla_pipeline.params.left_keys import remove_keys
from vla_pipeline.params.load import load_params

from conftest import REPO
from procs import run_bounded

LEFT = "'train.lrr' was left in params.yaml by a refused `dvc exp run -S` (not in the committed file)"


def _git(cwd: Path, *args: str) -> None:
    run_bounded(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A git repository with the shipped params.yaml committed; the working directory."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "params.yaml")
    _git(tmp_path, "commit", "-qm", "params")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "params.yaml"


def _dvc_set(path: Path, key: str, value) -> None:
    """What `dvc exp run -S +key=value` does to the file before any stage runs (DVC's own writer)."""
    with modify_yaml(str(path)) as doc:
        *sections, leaf = key.split(".")
        node = doc
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = value


def _refusal(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as e:
        load_params(path, overrides)
    return str(e.value)


def test_a_left_key_is_named_with_the_command_that_removes_it(workspace: Path) -> None:
    committed = workspace.read_text()
    _dvc_set(workspace, "train.lrr", "1e-3")
    message = _refusal(workspace)
    assert "unknown key 'train.lrr'; did you mean 'train.lr'?" in message
    assert f"{LEFT}; remove it, keeping your other edits, with:\n  vla params unset train.lrr\n" in message
    assert message.endswith("nothing was run")
    assert remove_keys(workspace, ["train.lrr"]) == ["train.lrr"]
    assert workspace.read_text() == committed  # nothing else differed: the committed text, DVC's reformatting undone
    load_params(workspace)


def test_the_users_other_edits_and_comments_stay(workspace: Path) -> None:
    _dvc_set(workspace, "train.keep_last", 5)  # an edit of the user's own (also with DVC's writer)
    _dvc_set(workspace, "train.lrr", "1e-3")
    _dvc_set(workspace, "evaluate.strid", 3)
    message = _refusal(workspace)
    assert ("'train.lrr', 'evaluate.strid' were left in params.yaml by a refused `dvc exp run -S` (not in the "
            "committed file); remove them, keeping your other edits, with:\n  vla params unset train.lrr "
            "evaluate.strid") in message
    remove_keys(workspace, ["train.lrr", "evaluate.strid"])
    params = load_params(workspace)
    assert params["train"]["keep_last"] == 5 and "lrr" not in params["train"]
    assert "# periodic checkpoints kept besides best and last" in workspace.read_text()


def test_a_key_of_the_committed_file_or_of_an_override_is_not_called_left(workspace: Path, tmp_path) -> None:
    overridden = _refusal(workspace, ["train.lrr=1"])
    assert "unknown key 'train.lrr'" in overridden and "was left" not in overridden
    _dvc_set(workspace, "train.lrr", "1e-3")
    _git(workspace.parent, "commit", "-qam", "a typo committed")
    assert "was left" not in _refusal(workspace)
    outside = tmp_path / "elsewhere"  # not a git repository: no explanation, no error
    outside.mkdir()
    (outside / "params.yaml").write_text(workspace.read_text())
    assert "unknown key 'train.lrr'" in _refusal(outside / "params.yaml")
    assert "was left" not in _refusal(outside / "params.yaml")


def test_another_params_file_gets_its_path_in_the_command(workspace: Path) -> None:
    other = workspace.parent / "exp.yaml"
    other.write_text(workspace.read_text())
    _git(workspace.parent, "add", "exp.yaml")
    _git(workspace.parent, "commit", "-qm", "exp")
    _dvc_set(other, "train.lrr", "1e-3")
    assert f"vla params unset train.lrr --params {other}" in _refusal(other)


def test_unset_refuses_a_key_the_file_lacks_and_changes_nothing(workspace: Path) -> None:
    before = workspace.read_text()
    with pytest.raises(ConfigError, match="has no key 'train.lrr'; nothing was changed"):
        remove_keys(workspace, ["train.lr", "train.lrr"])
    assert workspace.read_text() == before


def test_vla_params_unset_parses_its_keys(workspace: Path, capsys) -> None:
    _dvc_set(workspace, "train.lrr", "1e-3")
    parser = argparse.ArgumentParser(prog="vla")
    add_params(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["params", "unset", "train.lrr"])
    assert args.func(args) == 0
    assert "params.yaml: removed train.lrr" in capsys.readouterr().out
    assert yaml.safe_load(workspace.read_text()) == yaml.safe_load((REPO / "params.yaml").read_text())
