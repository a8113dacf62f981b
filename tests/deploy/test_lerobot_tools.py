"""`vla lerobot`: LeRobot's own CLIs in a process with the compat layer, the strict loader and the
arm-only adapter; a record loop with the replay robot runs our checkpoint as LeRobot documents it."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import pretrained_dir_of, resolve_checkpoint, write_manifest
from vla_pipeline.cli import main
from vla_pipeline.data.contract import load_contract

from conftest import CONTRACT, vla


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_a_lerobot_cli_runs_with_its_own_arguments_and_unknown_tools_are_refused(capsys):
    out = vla("lerobot", "record", "--help", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--dataset.single_task" in out.stdout and "vla_replay" in out.stdout  # LeRobot's parser, our robot
    for tool, says in (("nosuch", "no such LeRobot tool"), ("policy-server", "vla serve CHECKPOINT")):
        assert main(["lerobot", tool]) == 1
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err


def test_the_async_client_takes_lekiwi_past_lerobots_robot_list():
    """LeRobot 0.4.2's client refuses lekiwi_client ("not yet supported"); here it gets as far as
    looking for the LeKiwi host, which is not there, and says so in one line."""
    out = vla("lerobot", "async-client", "--robot.type=lekiwi_client", "--robot.remote_ip=127.0.0.1",
              "--robot.connect_timeout_s=1", "--robot.id=test", "--policy_type=pi05", "--pretrained_name_or_path=x",
              "--actions_per_chunk=10", "--task=t", "--server_address=127.0.0.1:1", timeout=300)
    assert out.returncode == 1, (out.stdout + out.stderr)[-2000:]
    assert "not yet supported" not in out.stderr + out.stdout
    assert "LeRobot could not reach the robot: Timeout waiting for LeKiwi Host" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_robot_whose_actions_are_not_its_state_in_order_is_refused(tiny_run):
    from vla_pipeline.deploy.config_replay import ReplayRobotConfig
    from vla_pipeline.deploy.lerobot_tools import check_action_order
    from vla_pipeline.deploy.replay import ReplayRobot
    from vla_pipeline.errors import ConfigError

    robot = ReplayRobot(ReplayRobotConfig(root=tiny_run.dataset))
    check_action_order(robot)  # the demo's (LeKiwi's) names: state and actions alike
    robot = ReplayRobot(ReplayRobotConfig(root=tiny_run.dataset))
    robot.action_names = robot.action_names[1:] + robot.action_names[:1]
    with pytest.raises(ConfigError, match="would drive the wrong motors"):
        check_action_order(robot)


def record(pretrained, dataset, episode: int, out):
    return vla("lerobot", "record", "--robot.type=vla_replay", f"--robot.root={dataset}", f"--robot.episode={episode}",
               f"--policy.path={pretrained}", "--dataset.repo_id=local/eval_replay", f"--dataset.root={out}",
               "--dataset.single_task=pick up the cube", "--dataset.num_episodes=1", "--dataset.episode_time_s=1",
               "--dataset.fps=30", "--dataset.push_to_hub=false", "--play_sounds=false",
               timeout=600)


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_record_runs_our_checkpoint_arm_only_through_the_strict_loader(tiny_run, tmp_path):
    pretrained = pretrained_dir_of(resolve_checkpoint(tiny_run.train, "last"))
    out = record(pretrained, tiny_run.dataset, 0, tmp_path / "rec")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "tensors loaded strictly (0 missing, 0 unexpected)" in out.stdout
    assert "arm-only policy: contract 'lekiwi_arm'" in out.stdout
    frames = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "rec" / "data").rglob("*.parquet")))
    actions = np.stack(frames["action"].to_numpy())
    assert len(actions) >= 5 and actions.shape[1] == 9  # the robot's nine actions, recorded as sent
    contract = load_contract(CONTRACT)
    lo, hi = (np.array([contract.ranges[j][k] for j in contract.joints]) for k in (0, 1))
    assert (actions[:, :6] >= lo).all() and (actions[:, :6] <= hi).all()
    np.testing.assert_array_equal(actions[:, 6:], 0.0)  # deploy.hold: the base stays still
    assert len(np.unique(actions[:, :6], axis=0)) > 1  # the policy drives the arm


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_record_refuses_a_checkpoint_whose_weights_fail_strict_loading(tiny_run, tmp_path):
    pretrained = tmp_path / "pretrained_model"
    shutil.copytree(pretrained_dir_of(resolve_checkpoint(tiny_run.train, "last")), pretrained)
    state = load_file(str(pretrained / "model.safetensors"))
    dropped = sorted(state)[-1]
    del state[dropped]
    save_file(state, str(pretrained / "model.safetensors"))
    write_manifest(pretrained)
    out = record(pretrained, tiny_run.dataset, 0, tmp_path / "rec")
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "1 missing keys" in out.stderr and dropped in out.stderr and "Traceback" not in out.stderr


def test_lerobots_pipeline_loader_takes_a_verified_checkpoint_and_allowed_steps_only(tiny_run, tmp_path):
    """`vla lerobot`'s ``DataProcessorPipeline.from_pretrained``: our checkpoint is verified (a file added
    after the save is refused), and a directory without our manifest (third-party) still builds no step
    outside the allow-list: the planted command does not run."""
    from lerobot.processor.pipeline import DataProcessorPipeline

    from vla_pipeline.deploy.lerobot_tools import _checked_pipeline
    from vla_pipeline.errors import CheckpointError

    load = _checked_pipeline(DataProcessorPipeline.from_pretrained.__func__)
    pretrained = tmp_path / "pretrained_model"
    shutil.copytree(pretrained_dir_of(resolve_checkpoint(tiny_run.train, "last")), pretrained)
    (pretrained / "extra.txt").write_text("added")
    with pytest.raises(CheckpointError, match=f"^refusing to load the processors of {pretrained}: "
                                              f"{pretrained / 'extra.txt'} is not in"):
        load(DataProcessorPipeline, str(pretrained), "policy_preprocessor.json")
    (pretrained / "extra.txt").unlink()
    pipeline = load(DataProcessorPipeline, str(pretrained), "policy_preprocessor.json")
    tokenizer = next(s for s in pipeline.steps if type(s).__name__ == "TokenizerProcessorStep")
    assert tokenizer.tokenizer_name == str(pretrained / "tokenizer")
    planted = tmp_path / "planted"
    config = pretrained / "policy_postprocessor.json"
    doc = json.loads(config.read_text())
    doc["steps"].append({"class": "subprocess.Popen", "config": {"args": ["touch", str(planted)]}})
    config.write_text(json.dumps(doc))
    (pretrained / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"policy_postprocessor.json: step 2 names a class to import"):
        load(DataProcessorPipeline, str(pretrained), "policy_postprocessor.json")
    time.sleep(0.5)
    assert not planted.exists()


@pytest.mark.slow  # about ten seconds or more: a real training or LeRobot process (make test runs it)
def test_record_refuses_processors_that_name_a_class_without_running_them(tiny_run, tmp_path):
    """Through the installed patches, in LeRobot's own record tool: the policy loads (weights from elsewhere,
    no manifest), its processors do not."""
    pretrained = tmp_path / "pretrained_model"
    shutil.copytree(pretrained_dir_of(resolve_checkpoint(tiny_run.train, "last")), pretrained)
    planted = tmp_path / "planted"
    config = pretrained / "policy_preprocessor.json"
    doc = json.loads(config.read_text())
    doc["steps"].insert(0, {"class": "subprocess.Popen", "config": {"args": ["touch", str(planted)]}})
    config.write_text(json.dumps(doc))
    (pretrained / "manifest.json").unlink()
    out = record(pretrained, tiny_run.dataset, 0, tmp_path / "rec")
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "policy_preprocessor.json: step 0 names a class to import, 'subprocess.Popen'" in out.stderr
    assert "Traceback" not in out.stderr and not planted.exists()
