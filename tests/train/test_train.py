"""Training runs LeRobot's Pi0.5 with the frozen stats, logs, saves, and refuses bad inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from lerobot.processor import NormalizerProcessorStep
from lerobot.utils.constants import ACTION

from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.checkpoint.layout import TRAIN_CONFIG_FILE, find_last
from vla_pipeline.errors import TrainInputError, ValidationError
from vla_pipeline.norms import NormsConfig, save_norm_stats
from vla_pipeline.provenance import TRAIN_ENTRY, compute_code_identity
from vla_pipeline.train.trainer import train
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.run import validate_dataset

from conftest import CONTRACT, make_train_config
from procs import run_bounded


def test_run_logs_and_saves_resolved_config(tiny_run) -> None:
    assert find_last(tiny_run.train) == tiny_run.checkpoint
    metrics = json.loads((tiny_run.live / "metrics.json").read_text())
    curve = (tiny_run.live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    step, loss = curve[-1].split("\t")[0], float(curve[-1].split("\t")[-1])
    assert metrics["step"] == 4 and step == "4" and metrics["train"]["loss"] == pytest.approx(loss)  # the last logged
    assert 0 < loss < 100  # a finite flow-matching loss
    resolved = json.loads((tiny_run.checkpoint / TRAIN_CONFIG_FILE).read_text())
    assert resolved["steps"] == 4 and resolved["policy"]["dims"]["vocab_size"] == 512
    runs = list((tiny_run.train.parent / "wandb" / "wandb").glob("offline-run-*"))
    assert runs and all(list(run.glob("run-*.wandb")) for run in runs), "W&B offline run (its .wandb log) missing"


def test_checkpoint_processors_hold_the_frozen_stats(tiny_run) -> None:
    ckpt = load_checkpoint(tiny_run.checkpoint)
    frozen = json.loads((tiny_run.norms / "stats.json").read_text())["features"][ACTION]
    normalizer = next(s for s in ckpt.preprocessor.steps if isinstance(s, NormalizerProcessorStep))
    for key in ("q01", "q99"):
        assert torch.allclose(normalizer._tensor_stats[ACTION][key], torch.tensor(frozen[key], dtype=torch.float32))


def test_refuses_stats_of_another_dataset_version(params, tiny_run, tmp_path) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(tiny_run.dataset, copy)
    (copy / "meta" / "info.json").write_text((copy / "meta" / "info.json").read_text() + "\n")
    cfg = make_train_config(params, copy, tmp_path, norms_dir=tiny_run.norms, validation_report=tiny_run.report)
    with pytest.raises(ValidationError, match="another version.*dvc repro validate"):
        train(cfg)  # the report is stale first
    validate_dataset(ValidateConfig(copy, CONTRACT, tmp_path / "fresh.json"))
    cfg = make_train_config(params, copy, tmp_path, norms_dir=tiny_run.norms, validation_report=tmp_path / "fresh.json")
    with pytest.raises(TrainInputError, match="dvc repro norms"):
        train(cfg)  # then the stats


def test_refuses_a_report_made_with_other_exclusions_than_the_stats(params, tiny_run, tmp_path) -> None:
    """The exclusions are carried: validate records them, norms computes the stats without those episodes;
    a report of other exclusions than the stats' is stale, whatever params.yaml says now."""
    report = tmp_path / "report.json"
    validate_dataset(ValidateConfig(tiny_run.dataset, CONTRACT, report, exclude_episodes=(3,)))
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms, validation_report=report)
    with pytest.raises(ValidationError, match=r"made with dataset.exclude_episodes \[3\], not \[\]"):
        train(cfg)


def test_refuses_failed_validation(params, tiny_run, tmp_path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"ok": False}))
    save_norm_stats(NormsConfig(tiny_run.dataset, CONTRACT, tmp_path / "norms"))
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, validation_report=report)
    with pytest.raises(ValidationError, match=r"failed validation \(no error recorded\)"):
        train(cfg)


def test_lr_param_is_the_lr_used(params, tiny_run, tmp_path) -> None:
    save_norm_stats(NormsConfig(tiny_run.dataset, CONTRACT, tmp_path / "norms"))
    shutil.copy(tiny_run.report, tmp_path / "report.json")
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, steps=2, lr=7e-4, warmup_steps=0, decay_steps=2,
                            log_every=1, wandb_mode="disabled")
    train(cfg)
    lrs = (tmp_path / "live" / "plots" / "metrics" / "train" / "lr.tsv").read_text().splitlines()
    assert float(lrs[1].split("\t")[-1]) == pytest.approx(7e-4)


def test_policy_size_typo_is_refused(params) -> None:
    from vla_pipeline.errors import ConfigError
    from vla_pipeline.model.config import PolicyConfig

    with pytest.raises(ConfigError, match=r"policy.size.*\['tiny', 'full'\]"):
        PolicyConfig.from_params({**params["policy"], "size": "tinny"})


def test_batch_larger_than_split_is_refused_not_hung(params, tiny_run, tmp_path) -> None:
    from vla_pipeline.errors import ConfigError

    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, batch_size=10_000)
    with pytest.raises(ConfigError, match="fewer than train.batch_size=10000"):
        train(cfg)


def test_truncated_prompt_is_refused(params, tiny_run, tmp_path) -> None:
    from vla_pipeline.errors import ConfigError

    policy = {**params["policy"], "tokenizer_max_length": 12}
    cfg = make_train_config({**params, "policy": policy}, tiny_run.dataset, tmp_path, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report, wandb_mode="disabled")
    with pytest.raises(ConfigError, match="tokenizer_max_length=12"):
        train(cfg)


def test_cli_reports_user_errors_without_traceback(tiny_run, tmp_path) -> None:
    import sys

    import yaml

    from conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"]["report"] = str(tmp_path / "missing_report.json")
    params["dataset"].update(root=str(tiny_run.dataset), contract=str(CONTRACT))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_bounded([sys.executable, "-m", "vla_pipeline.cli", "train", "--params", str(tmp_path / "params.yaml")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    assert "error: validation report" in result.stderr and "dvc repro validate" in result.stderr
    assert "Traceback" not in result.stderr


def test_contract_that_does_not_match_the_dataset_is_refused(params, tiny_run, tmp_path) -> None:
    from vla_pipeline.errors import ContractError

    so101 = CONTRACT.parent / "so101_arm.yaml"
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, contract_path=so101, norms_dir=tiny_run.norms,
                            validation_report=tiny_run.report)
    with pytest.raises(ContractError, match=r"\['shoulder_pan.pos'.*are not among the dataset's names for 'action'.*arm_shoulder_pan.pos"):
        train(cfg)


def test_refusals_each_say_what_changed(params, tiny_run, tmp_path) -> None:
    """Missing stats, a changed split and a changed contract each get their own message."""
    norms = tmp_path / "norms"
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=norms, validation_report=tiny_run.report)
    with pytest.raises(FileNotFoundError, match="stats.json not found; run `dvc repro norms`"):
        train(cfg)
    shutil.copytree(tiny_run.norms, norms)
    split = json.loads((norms / "split.json").read_text())
    split["train"], split["val"] = split["train"][:-1], split["val"] + split["train"][-1:]
    (norms / "split.json").write_text(json.dumps(split))
    with pytest.raises(TrainInputError, match="episode split .* not the one its stats were computed on"):
        train(cfg)
    shutil.copy(tiny_run.norms / "split.json", norms / "split.json")
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT.read_text().replace("max_action_jump: 30", "max_action_jump: 31"))
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=norms, validation_report=tiny_run.report,
                            contract_path=contract)
    with pytest.raises(ValidationError, match="validation report .* made against another contract"):
        train(cfg)  # the report first
    report = tmp_path / "report.json"
    validate_dataset(ValidateConfig(tiny_run.dataset, contract, report))
    cfg = make_train_config(params, tiny_run.dataset, tmp_path, norms_dir=norms, validation_report=report,
                            contract_path=contract)
    with pytest.raises(TrainInputError, match="frozen stats were computed with another contract"):
        train(cfg)  # then the stats


def test_two_runs_give_identical_loss_curves_and_weights(params, tiny_run, tmp_path) -> None:
    from safetensors.torch import load_file

    runs = []
    for name in ("a", "b"):
        cfg = make_train_config(params, tiny_run.dataset, tmp_path / name, norms_dir=tiny_run.norms,
                                validation_report=tiny_run.report, log_every=1, wandb_mode="disabled")
        runs.append(train(cfg))
    curves = [(c.parents[2].parent / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text() for c in runs]
    assert curves[0] == curves[1] and len(curves[0].splitlines()) == 5
    a, b = (load_file(str(c / "model.safetensors")) for c in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    versions = json.loads((runs[0] / "versions.json").read_text())
    assert versions["lerobot"] == "0.4.2" and versions["transformers"] == "4.53.3"
    # what the checkpoint records is the same on every machine and commit (a fresh clone's make demo writes
    # the same bytes): the code train runs, not the git commit; no store or W&B directory of this machine
    assert versions["code"] == compute_code_identity(TRAIN_ENTRY) and "git" not in versions
    saved = json.loads((runs[0] / "train_config.json").read_text())
    assert not {"store", "wandb_dir", "git"} & set(saved) and saved["steps"] == cfg.steps


def test_phase_values_fill_nulls_and_explicit_values_win(params) -> None:
    from vla_pipeline.train.config import TrainConfig

    p = {**params, "train": {**params["train"], "phase": "sanity", "steps": 20}}
    cfg = TrainConfig.from_params(p)
    sanity = params["phases"]["sanity"]
    assert cfg.phase == "sanity" and cfg.steps == 20  # the override
    assert (cfg.lr, cfg.save_every, cfg.decay_steps) == (sanity["lr"], sanity["save_every"], sanity["decay_steps"])
    smoke = TrainConfig.from_params(params)
    assert smoke.steps == params["phases"]["smoke"]["steps"] and smoke.lr == params["phases"]["smoke"]["lr"]
    from vla_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.phase.*\['smoke', 'sanity', 'scale'\]"):
        TrainConfig.from_params({**params, "train": {**params["train"], "phase": "big"}})
