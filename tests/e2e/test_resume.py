"""Resume: a run killed with SIGKILL at a random step and resumed ends bit-identical to an
uninterrupted one; a corrupt newest checkpoint is detected and the previous one used; another
config starts a new run; retention keeps best and last; resumed stats must equal the frozen ones."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import replayable_seed, run_killed_before_step, vla, write_train_params

pytestmark = pytest.mark.slow  # end-to-end: real trainings, SIGKILLed and resumed (make test runs it)

STEPS = 16
RUN = dict(steps=STEPS, decay_steps=STEPS, save_every=2, eval_every=4, keep_last=2, log_every=1)
VARIANTS = {  # what else a killed run must restore: the EMA and the raw weights (training_state/)
    "full": {},
    "ema": {"ema": {"decay": 0.9}},
    "lora": {"peft": {"preset": "openpi"}},  # the adapters and fully trained parts, not double-wrapped
    "lora-ema": {"peft": {"preset": "expert"}, "ema": {"decay": 0.9}},  # an EMA of the adapters
}


def _final_state(work: Path) -> dict[str, torch.Tensor]:
    last = json.loads((work / "train" / "last_checkpoint.json").read_text())
    step_dir = work / "train" / last["path"]
    state = {f"model/{k}": v for k, v in load_file(str(step_dir / "pretrained_model" / "model.safetensors")).items()}
    for path in sorted((step_dir / "training_state").glob("*.safetensors")):  # optimizer, EMA, raw weights
        if not path.name.startswith("rng_state"):
            state.update({f"{path.stem}/{k}": v for k, v in load_file(str(path)).items()})
    return state


def _curve(work: Path, name: str = "train/loss") -> list[str]:
    return (work / "live" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def references(params, tiny_run, tmp_path_factory):
    """The uninterrupted run of each variant that every resumed run must reproduce (made when asked)."""
    made: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in made:
            work = tmp_path_factory.mktemp(f"reference_{variant}")
            result = vla("train", "--params", str(write_train_params(params, tiny_run, work, **RUN,
                                                                     **VARIANTS[variant])))
            assert result.returncode == 0, result.stderr[-3000:]
            made[variant] = work
        return made[variant]

    return get


@pytest.fixture(scope="module")
def reference(references) -> Path:
    return references("full")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sigkill_at_random_step_then_resume_is_bit_identical(params, tiny_run, references, variant,
                                                             tmp_path) -> None:
    reference = references(variant)
    seed = replayable_seed()
    kill_step = random.Random(seed).randint(3, STEPS - 3)
    killed = f"killed before step {kill_step} (replay: VLA_TEST_SEED={seed})"
    params_path = write_train_params(params, tiny_run, tmp_path, **RUN, **VARIANTS[variant])
    run_killed_before_step([sys.executable, "-m", "vla_pipeline.cli", "train", "--params", str(params_path)], kill_step)
    last = json.loads((tmp_path / "train" / "last_checkpoint.json").read_text())
    assert last["step"] == (kill_step - 1) // 2 * 2, killed  # the newest checkpoint (save_every 2) before the kill

    result = vla("train", "--params", str(params_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout, killed
    final = _final_state(reference)
    assert ("ema" in variant) == any(k.startswith("ema/") for k in final)
    assert ("lora" in variant) == any(".lora_" in k for k in final if k.startswith("raw_weights/"))
    _assert_identical(final, _final_state(tmp_path))
    for name in ("train/loss", "train/lr", "val/loss"):  # the curves are rewound to the checkpoint, then continue
        assert _curve(tmp_path, name) == _curve(reference, name), f"{name}, {killed}"
    assert json.loads((tmp_path / "train" / "best_checkpoint.json").read_text()) == \
        json.loads((reference / "train" / "best_checkpoint.json").read_text())


def test_corrupt_newest_checkpoint_falls_back_to_previous(params, tiny_run, reference, tmp_path) -> None:
    import shutil

    shutil.copytree(reference / "train", tmp_path / "train")
    shutil.copytree(reference / "live", tmp_path / "live")
    newest = tmp_path / "train" / "checkpoints" / f"{STEPS:06d}"
    weights = newest / "pretrained_model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-written file
    (tmp_path / "train" / "checkpoints" / "000099.tmp").mkdir()  # a save killed before its rename
    result = vla("train", "--params", str(write_train_params(params, tiny_run, tmp_path, **RUN)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unusable" in result.stderr and "truncated" in result.stderr and "falling back" in result.stderr
    assert f"resuming from {tmp_path / 'train' / 'checkpoints' / f'{STEPS - 2:06d}'}" in result.stdout
    assert not (tmp_path / "train" / "checkpoints" / "000099.tmp").exists()
    assert list((tmp_path / "train" / "set_aside").glob("*/000099.tmp")), "the unfinished save is set aside, not deleted"
    assert list((tmp_path / "train" / "set_aside").glob(f"*/{STEPS:06d}")), "the corrupt checkpoint is kept"
    _assert_identical(_final_state(reference), _final_state(tmp_path))


def test_retention_keeps_last_best_and_manifests(reference) -> None:
    from vla_pipeline.checkpoint.io import verify_checkpoint

    train = reference / "train"
    best = json.loads((train / "best_checkpoint.json").read_text())
    kept = sorted(p.name for p in (train / "checkpoints").iterdir())
    expected = {f"{STEPS - 2:06d}", f"{STEPS:06d}", f"{best['step']:06d}"}
    assert set(kept) == expected, kept
    assert all(verify_checkpoint(train / "checkpoints" / name) is None for name in kept)
    val = [line.split("\t") for line in _curve(reference, "val/loss")[1:]]
    assert [int(s) for s, _ in val] == list(range(4, STEPS + 1, 4))
    assert best["val_loss"] == min(float(v) for _, v in val)  # best is the lowest logged validation loss


def test_another_config_starts_a_new_run(params, tiny_run, reference, tmp_path) -> None:
    import shutil

    shutil.copytree(reference / "train", tmp_path / "train")
    result = vla("train", "--params", str(write_train_params(params, tiny_run, tmp_path, **{**RUN, "steps": 6,
                                                                                             "decay_steps": 6})))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "another run" in result.stdout and "resuming" not in result.stdout
    kept = sorted(p.name for p in (tmp_path / "train" / "checkpoints").iterdir())
    assert kept[-1] == "000006" and f"{STEPS:06d}" not in kept


def test_resumed_stats_must_equal_frozen(tiny_run) -> None:
    from vla_pipeline.checkpoint.io import load_checkpoint
    from vla_pipeline.checkpoint.resume import check_resumed_stats
    from vla_pipeline.errors import TrainInputError

    step_dir = tiny_run.checkpoint.parent
    loaded = load_checkpoint(tiny_run.checkpoint)
    frozen = json.loads((tiny_run.norms / "stats.json").read_text())
    check_resumed_stats(step_dir, loaded.preprocessor, frozen)
    other = json.loads(json.dumps(frozen))
    other["features"]["action"]["q01"][0] -= 1.0
    with pytest.raises(TrainInputError, match="differ from the frozen stats"):
        check_resumed_stats(step_dir, loaded.preprocessor, other)
