"""Resume, piece by piece, without training: what the run key depends on (and what it ignores), the
source hash, the checkpoints a resume considers, which one it continues from and what it discards,
saving and restoring each process's training state and RNG, and the check that resumed stats equal
the frozen ones. The policy here is a small ``torch.nn.Module``: load_state / load_policy_weights
are generic over modules. tests/e2e/test_resume.py kills and resumes real runs."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.processor import NormalizerProcessorStep, PolicyProcessorPipeline, UnnormalizerProcessorStep
from lerobot.utils.constants import ACTION, OBS_STATE
from lerobot.utils.random_utils import deserialize_rng_state, serialize_rng_state
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import write_manifest
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINTS_DIR,
    LAST_FILE,
    RUN_STATE_FILE,
    SET_ASIDE_DIR,
    TRAINING_STATE_DIR,
    list_checkpoints,
    read_run_state,
    write_pointer,
)
from vla_pipeline.checkpoint.resume import (
    check_resumed_stats,
    load_weights,
    plan_resume,
    read_rng,
    read_train_state,
    save_train_state,
    set_aside,
    trainable_weights,
)
from vla_pipeline.errors import CheckpointError, TrainInputError
from vla_pipeline.norms import make_processor_stats
from vla_pipeline.provenance import (
    PACKAGE_ROOT,
    RUN_KEY_IGNORED_KEYS,
    TRAIN_ENTRY,
    compute_code_identity,
    compute_run_key,
)

STATS = {"features": {ACTION: {"mean": [1.0]}}, "dataset_fingerprint": "abc", "n_train_frames": 10}
VERSIONS = {"torch": "2.7.1"}


# ----------------------------------------------------------------------------- run key
def test_run_key_ignores_bookkeeping_but_not_what_the_run_computes(tmp_path) -> None:
    config = {"lr": 1e-4, "steps": 100, "out_dir": tmp_path / "a", "dataset_root": tmp_path}  # Paths as strings
    key = compute_run_key(config, STATS, VERSIONS)
    assert len(key) == 64 and key == compute_run_key(dict(reversed(config.items())), STATS, VERSIONS)
    for name in sorted(RUN_KEY_IGNORED_KEYS):  # intervals, directories, W&B settings: the same run
        assert compute_run_key({**config, name: "changed"}, STATS, VERSIONS) == key, name
    assert compute_run_key(config, {**STATS, "n_train_frames": 11}, VERSIONS) == key  # not part of the identity
    others = [
        compute_run_key({**config, "lr": 2e-4}, STATS, VERSIONS),
        compute_run_key({**config, "seed": 1}, STATS, VERSIONS),
        compute_run_key(config, {**STATS, "features": {ACTION: {"mean": [2.0]}}}, VERSIONS),
        compute_run_key(config, {**STATS, "dataset_fingerprint": "abd"}, VERSIONS),
        compute_run_key(config, STATS, {"torch": "2.7.2"}),
    ]
    assert len({key, *others}) == 6


def test_run_key_includes_the_code_train_runs(monkeypatch) -> None:
    key = compute_run_key({}, STATS, VERSIONS)
    seen = []
    monkeypatch.setattr("vla_pipeline.provenance.compute_code_identity", lambda entry: seen.append(entry) or "other")
    assert compute_run_key({}, STATS, VERSIONS) != key
    assert seen == [TRAIN_ENTRY]


def _package(tmp_path: Path) -> Path:
    """A package ``pkg``: ``entry`` imports ``used`` (at the top) and ``lazy`` (inside a function); ``unused``
    and ``sub/other`` are imported by nobody."""
    package = tmp_path / "vla_pipeline"
    (package / "sub").mkdir(parents=True)
    files = {"__init__.py": "", "entry.py": "from vla_pipeline.used import x\n\ndef f():\n    import vla_pipeline.lazy\n",
             "used.py": "x = 1\n", "lazy.py": "y = 2\n", "unused.py": "z = 3\n", "sub/__init__.py": "",
             "sub/other.py": "w = 4\n"}
    for rel, text in files.items():
        (package / rel).write_text(text)
    return package


def test_code_identity_covers_exactly_the_files_the_entry_imports(tmp_path) -> None:
    package = _package(tmp_path)
    identity = lambda: compute_code_identity("vla_pipeline.entry", package)  # noqa: E731
    expected = hashlib.sha256(b"".join(f"{name}".encode() + b"\0" + (package / name).read_bytes()
                                       for name in ("__init__.py", "entry.py", "lazy.py", "used.py"))).hexdigest()
    assert identity() == expected
    for untouched in ("unused.py", "sub/other.py"):  # a docstring edit in a module train never imports
        (package / untouched).write_text('"""edited"""\nz = 3\n')
        assert identity() == expected
    for imported in ("entry.py", "used.py", "lazy.py"):  # any edit of what it runs (a lazy import too): another run
        before = identity()
        (package / imported).write_text((package / imported).read_text() + "# edited\n")
        assert identity() != before


def test_the_run_key_ignores_an_edit_to_a_module_train_does_not_import(tmp_path, monkeypatch) -> None:
    """The real package, copied: a docstring edit in deploy/ (which train never imports) keeps the run
    key; one in train/optim.py changes it."""
    copy = tmp_path / "vla_pipeline"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr("vla_pipeline.provenance.PACKAGE_ROOT", copy)
    key = compute_run_key({}, STATS, VERSIONS)
    server = copy / "deploy" / "server.py"
    server.write_text('"""An edited docstring."""\n' + server.read_text())
    assert compute_run_key({}, STATS, VERSIONS) == key
    optim = copy / "train" / "optim.py"
    optim.write_text(optim.read_text() + "\n# an edit train runs\n")
    assert compute_run_key({}, STATS, VERSIONS) != key


# ----------------------------------------------------------------------------- checkpoints on disk
def _checkpoint(run_dir: Path, step: int, run_key: str = "k", manifest: bool = True) -> Path:
    step_dir = run_dir / CHECKPOINTS_DIR / f"{step:06d}"
    (step_dir / TRAINING_STATE_DIR).mkdir(parents=True)
    (step_dir / TRAINING_STATE_DIR / RUN_STATE_FILE).write_text(json.dumps({"run_key": run_key, "step": step}))
    if manifest:
        write_manifest(step_dir)
    return step_dir


def test_list_checkpoints_is_the_step_directories_newest_first(tmp_path) -> None:
    assert list_checkpoints(tmp_path) == []  # no checkpoints directory yet
    root = tmp_path / CHECKPOINTS_DIR
    for name in ("99", "100", "000150", "000200.tmp", "old", "000300.old"):
        (root / name).mkdir(parents=True)
    (root / "000400").write_text("a file, not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["000150", "100", "99"]


def test_read_run_state(tmp_path) -> None:
    assert read_run_state(_checkpoint(tmp_path, 5, "key5")) == {"run_key": "key5", "step": 5}


def test_resume_continues_the_newest_complete_checkpoint_of_this_run(tmp_path, capsys) -> None:
    old, new = _checkpoint(tmp_path, 100), _checkpoint(tmp_path, 200)
    leftover = tmp_path / CHECKPOINTS_DIR / "000300.tmp"
    leftover.mkdir()
    plan = plan_resume(tmp_path, "k", "auto")
    assert plan.checkpoint == new and plan.discard == [leftover]
    assert capsys.readouterr() == ("", "")
    assert old.is_dir()


def test_resume_falls_back_past_unusable_checkpoints(tmp_path, capsys) -> None:
    good = _checkpoint(tmp_path, 100)
    torn = _checkpoint(tmp_path, 200, manifest=False)  # killed while saving: no manifest
    flipped = _checkpoint(tmp_path, 300)
    (flipped / TRAINING_STATE_DIR / RUN_STATE_FILE).write_text('{"run_key": "x", "step": 300}')  # same size
    plan = plan_resume(tmp_path, "k", "auto")
    assert plan.checkpoint == good and plan.discard == [flipped, torn]
    err = capsys.readouterr().err
    assert f"WARNING: checkpoint {flipped} is unusable: " in err and "does not match its sha256" in err
    assert f"WARNING: checkpoint {torn} is unusable: {torn} has no manifest.json" in err
    assert err.count("it is set aside; falling back to the previous one") == 2


def test_when_every_checkpoint_is_unusable_none_is_deleted(tmp_path, capsys) -> None:
    """Both checkpoints corrupt: a new run starts, saying so once (not 'falling back' to nothing), and both
    are moved aside whole, not deleted."""
    older, newer = _checkpoint(tmp_path, 100), _checkpoint(tmp_path, 200)
    for step_dir in (older, newer):
        (step_dir / TRAINING_STATE_DIR / RUN_STATE_FILE).write_text('{"run_key": "x", "step": 999}')
    plan = plan_resume(tmp_path, "k", "auto")
    err = capsys.readouterr().err
    assert plan.checkpoint is None and plan.discard == [newer, older]
    assert err.count("falling back to the previous one") == 1 and "no usable checkpoint is left: a new run starts" in err
    before = {p.relative_to(tmp_path / CHECKPOINTS_DIR): p.read_bytes() for p in (tmp_path / CHECKPOINTS_DIR).rglob("*")
              if p.is_file()}
    moved = set_aside(tmp_path, plan.discard)
    assert not list_checkpoints(tmp_path) and [m.parent.parent.name for m in moved] == [SET_ASIDE_DIR] * 2
    after = {p.relative_to(m.parent): p.read_bytes() for m in moved for p in m.rglob("*") if p.is_file()}
    assert after == before  # every byte kept
    assert capsys.readouterr().out.count("set aside ") == 2


def test_checkpoints_of_another_run_are_set_aside_with_how_to_start_from_them(tmp_path, capsys) -> None:
    steps = [_checkpoint(tmp_path, 200, "other"), _checkpoint(tmp_path, 100, "k")]
    plan = plan_resume(tmp_path, "k", "auto")
    assert plan.checkpoint is None and plan.discard == steps  # the newest decides: the older one is not resumed
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path} holds checkpoints of another run (config, data, code or versions differ); "
                          f"starting a new run, they are set aside. To go on from that run's weights")
    pretrained = out.split("policy.pretrained: ")[1].strip()
    set_aside(tmp_path, plan.discard)
    assert Path(pretrained).parent.name == "000200" and Path(pretrained).parent.is_dir()  # the path it names exists


def test_resume_never_and_nothing_to_resume(tmp_path, capsys) -> None:
    assert plan_resume(tmp_path, "k", "auto").checkpoint is None and capsys.readouterr().out == ""
    steps = [_checkpoint(tmp_path, 200), _checkpoint(tmp_path, 100)]
    leftover = tmp_path / CHECKPOINTS_DIR / "000300.tmp"
    leftover.mkdir()
    plan = plan_resume(tmp_path, "k", "never")
    assert plan.checkpoint is None and plan.discard == [leftover, *steps]
    assert capsys.readouterr().out == (f"train.resume=never: starting a new run; the 2 checkpoint(s) in {tmp_path} are "
                                       f"set aside\n")
    torn = [_checkpoint(tmp_path / "b", 100, manifest=False)]
    assert plan_resume(tmp_path / "b", "k", "auto").discard == torn  # no usable checkpoint: start anew


def test_set_aside_moves_the_pointers_out_with_the_last_checkpoint(tmp_path) -> None:
    a, b = _checkpoint(tmp_path, 100), _checkpoint(tmp_path, 200)
    for name in (LAST_FILE, BEST_FILE):
        write_pointer(tmp_path, name, b)
    set_aside(tmp_path, [b, tmp_path / "never-existed"])
    assert not b.exists() and (tmp_path / LAST_FILE).is_file() and (tmp_path / BEST_FILE).is_file()
    (moved,) = set_aside(tmp_path, [a])
    assert not (tmp_path / LAST_FILE).exists() and not (tmp_path / BEST_FILE).exists() and moved.is_dir()
    set_aside(tmp_path, [])  # nothing left, no pointers: nothing to do


# ----------------------------------------------------------------------------- training state
class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)


def _optimizer_and_scheduler(model: torch.nn.Module):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _state(model: torch.nn.Module, optimizer, scheduler, step: int, ema: dict | None = None) -> dict:
    """What ``Trainer.state_dict()`` returns, for a small module."""
    return {"step": step, "best": {"step": step, "val_loss": 0.5}, "weights": trainable_weights(model),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "ema": ema,
            "rng": serialize_rng_state()}


def _apply(state: dict, model: torch.nn.Module, optimizer, scheduler) -> None:
    """What ``Trainer.load_state_dict`` does, for a small module."""
    load_weights(model, state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    deserialize_rng_state(state["rng"])


def _save(step_dir: Path, step: int, rank: int, model: torch.nn.Module) -> tuple:
    """Train one step, save this rank's state (and the weights), return the draws that follow."""
    optimizer, scheduler = _optimizer_and_scheduler(model)
    model.linear.weight.sum().backward()
    optimizer.step()
    scheduler.step()
    (step_dir / "pretrained_model").mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), step_dir / "pretrained_model" / "model.safetensors")
    save_train_state(step_dir, _state(model, optimizer, scheduler, step), {"run_key": "k", "sampler": 7}, rank)
    return _draws()


def _read(step_dir: Path, model: torch.nn.Module, rank: int = 0, **kwargs) -> tuple[dict, object, object]:
    optimizer, scheduler = _optimizer_and_scheduler(model)
    return read_train_state(step_dir, _state(model, optimizer, scheduler, 0), rank, **kwargs), optimizer, scheduler


def test_rank_zero_saves_training_state_and_run_state_and_read_train_state_restores_them(tmp_path) -> None:
    torch.manual_seed(0)
    model = Tiny()
    after = _save(tmp_path, 12, 0, model)
    assert read_run_state(tmp_path) == {"run_key": "k", "sampler": 7}
    text = (tmp_path / TRAINING_STATE_DIR / RUN_STATE_FILE).read_text()
    assert text == json.dumps({"run_key": "k", "sampler": 7}, indent=2)  # readable
    fresh = Tiny()
    _draws()
    state, optimizer, scheduler = _read(tmp_path, fresh)
    assert state["step"] == 12 and state["weights"] is None  # the weights come from pretrained_model
    _apply(state, fresh, optimizer, scheduler)
    assert torch.equal(fresh.linear.weight, model.linear.weight) and scheduler.last_epoch == 1
    assert optimizer.state_dict()["state"][0]["step"] == 1
    assert _draws() == after  # the RNG streams continue where they were saved


def test_the_files_are_lerobots_own_byte_for_byte(tmp_path) -> None:
    """save_train_state writes exactly what LeRobot's save_training_state writes for the same optimizer,
    scheduler, step and RNG (existing checkpoints stay readable, LeRobot reads ours)."""
    from lerobot.utils.train_utils import save_training_state

    torch.manual_seed(3)
    model = Tiny()
    optimizer, scheduler = _optimizer_and_scheduler(model)
    model.linear.weight.sum().backward()
    optimizer.step()
    scheduler.step()
    rng = torch.random.get_rng_state()
    save_training_state(tmp_path / "lerobot", 7, optimizer, scheduler)
    torch.random.set_rng_state(rng)
    save_train_state(tmp_path / "ours", _state(model, optimizer, scheduler, 7), {}, 0)
    theirs = {p.name: p.read_bytes() for p in (tmp_path / "lerobot" / TRAINING_STATE_DIR).iterdir()}
    ours = {p.name: p.read_bytes() for p in (tmp_path / "ours" / TRAINING_STATE_DIR).iterdir()}
    assert set(ours) - set(theirs) == {RUN_STATE_FILE} and len(theirs) == 5
    assert all(ours[name] == theirs[name] for name in theirs)


def test_other_ranks_save_and_restore_only_their_rng(tmp_path) -> None:
    torch.manual_seed(1)
    after = _save(tmp_path, 3, 2, Tiny())
    assert sorted(p.name for p in (tmp_path / TRAINING_STATE_DIR).iterdir()) == ["rng_state_rank2.safetensors"]
    _draws()
    deserialize_rng_state(read_rng(tmp_path, 2))
    assert _draws() == after
    with pytest.raises(FileNotFoundError):
        read_rng(tmp_path, 0)  # rank 0's RNG lives in LeRobot's training state, which rank 2 did not write


def test_other_ranks_save_beside_rank_zero_in_any_order(tmp_path) -> None:
    _save(tmp_path / "a", 3, 0, Tiny())
    _save(tmp_path / "a", 3, 1, Tiny())  # rank 0 made training_state/ first
    assert (tmp_path / "a" / TRAINING_STATE_DIR / "rng_state_rank1.safetensors").is_file()
    model = Tiny()
    save_train_state(tmp_path / "b" / "000003.tmp", _state(model, *_optimizer_and_scheduler(model), 3), {}, 1)
    assert (tmp_path / "b" / "000003.tmp" / TRAINING_STATE_DIR / "rng_state_rank1.safetensors").is_file()


def test_an_unreadable_training_state_is_a_checkpoint_error(tmp_path) -> None:
    _save(tmp_path, 5, 0, Tiny())
    (tmp_path / TRAINING_STATE_DIR / RUN_STATE_FILE).write_text("{ torn")
    with pytest.raises(CheckpointError) as e:
        _read(tmp_path, Tiny())
    assert str(e.value).startswith(f"{tmp_path}: cannot load the training state (ArtifactError: ")
    assert "run_state.json is torn" in str(e.value) and isinstance(e.value.__cause__.__cause__, json.JSONDecodeError)


def test_weights_that_do_not_fit_are_refused_as_they_are(tmp_path) -> None:
    _save(tmp_path, 5, 0, Tiny())
    other = torch.nn.Linear(2, 2)  # no "linear." prefix: every key is missing and unexpected
    state, _, _ = _read(tmp_path, other)
    with pytest.raises(CheckpointError, match="2 missing keys") as e:
        load_weights(other, state)
    assert "cannot load the training state" not in str(e.value)  # the strict loader's own message


def test_raw_weights_and_the_ema_round_trip_and_other_trainable_parameters_are_refused(tmp_path) -> None:
    """training_state/raw_weights.safetensors and ema.safetensors must hold exactly what this run trains: a
    checkpoint saved with another train.freeze / train.peft is refused, and one without the file names the
    settings."""
    model = Tiny()
    optimizer, scheduler = _optimizer_and_scheduler(model)
    ema = {"decay": 0.9, "shadow": {n: p.detach() * 2 for n, p in model.named_parameters()}}
    save_train_state(tmp_path, _state(model, optimizer, scheduler, 1, ema), {}, 0, raw=True)
    assert load_file(tmp_path / TRAINING_STATE_DIR / "ema.safetensors").keys() == ema["shadow"].keys()
    raw = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.linear.weight.zero_()
    state = read_train_state(tmp_path, _state(model, optimizer, scheduler, 0, ema), 0, raw=True, wrapped=True)
    assert state["model"] is None and all(torch.equal(state["ema"]["shadow"][n], 2 * raw[n]) for n in raw)
    load_weights(model, state)
    assert torch.equal(model.linear.weight, raw["linear.weight"])  # put back
    model.linear.bias.requires_grad_(False)  # another freeze
    with pytest.raises(CheckpointError, match=r"1 differ, e.g. \['linear.bias'\]"):
        read_train_state(tmp_path, _state(model, optimizer, scheduler, 0, ema), 0, raw=True, wrapped=True)
    with pytest.raises(CheckpointError, match=r"1 differ, e.g. \['linear.bias'\]"):
        load_weights(model, {"weights": raw})
    model.linear.bias.requires_grad_(True)
    (tmp_path / TRAINING_STATE_DIR / "ema.safetensors").unlink()  # saved without train.ema
    with pytest.raises(CheckpointError, match="train.ema / train.peft"):
        read_train_state(tmp_path, _state(model, optimizer, scheduler, 0, ema), 0, raw=True, wrapped=True)


# ----------------------------------------------------------------------------- resumed stats
FEATURES = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(2,)),
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(2,))}
NORM_MAP = {FeatureType.ACTION: NormalizationMode.QUANTILES, FeatureType.STATE: NormalizationMode.QUANTILES}


def _stats_doc(shift: float = 0.0) -> dict:
    one = {"mean": [0.0, 1.0], "std": [1.0, 2.0], "min": [-3.0, -4.0], "max": [3.0, 4.0], "q01": [-2.0 + shift, -3.0],
           "q10": [-1.0, -2.0], "q50": [0.0, 0.0], "q90": [1.0, 2.0], "q99": [2.0, 3.0], "count": [5, 5],
           "constant": [False, False]}
    return {"features": {ACTION: one, OBS_STATE: json.loads(json.dumps(one))}}


def _pipelines(doc: dict):
    stats = make_processor_stats(doc)
    pre = PolicyProcessorPipeline(steps=[NormalizerProcessorStep(features=FEATURES, norm_map=NORM_MAP, stats=stats)],
                                  name="policy_preprocessor")
    post = PolicyProcessorPipeline(steps=[UnnormalizerProcessorStep(features={ACTION: FEATURES[ACTION]},
                                                                    norm_map=NORM_MAP, stats=stats)],
                                   name="policy_postprocessor")
    return pre, post


def _saved_step(tmp_path: Path, doc: dict) -> Path:
    pre, post = _pipelines(doc)
    for pipeline in (pre, post):
        pipeline.save_pretrained(tmp_path / "pretrained_model")
    return tmp_path


def test_resumed_stats_must_equal_the_frozen_ones_in_every_source(tmp_path) -> None:
    doc = _stats_doc()
    step_dir = _saved_step(tmp_path, doc)
    saved = sorted((step_dir / "pretrained_model").glob("*normalizer_processor.safetensors"))
    assert [p.name for p in saved] == ["policy_postprocessor_step_0_unnormalizer_processor.safetensors",
                                       "policy_preprocessor_step_0_normalizer_processor.safetensors"]
    live, _ = _pipelines(doc)
    check_resumed_stats(step_dir, live, doc)
    with pytest.raises(TrainInputError) as e:
        check_resumed_stats(step_dir, live, _stats_doc(shift=0.5))  # frozen stats changed since the save
    assert str(e.value) == (f"after resuming from {step_dir}: the stats of {saved[0]} differ from the frozen stats; "
                            f"run with train.resume=never, or restore the norms stage's output")
    other_live, _ = _pipelines(_stats_doc(shift=0.5))
    with pytest.raises(TrainInputError, match="the stats of live preprocessor differ"):
        check_resumed_stats(step_dir, other_live, doc)


def test_a_saved_normalizer_with_other_keys_differs(tmp_path) -> None:
    doc = _stats_doc()
    step_dir = _saved_step(tmp_path, doc)
    path = step_dir / "pretrained_model" / "policy_preprocessor_step_0_normalizer_processor.safetensors"
    tensors = load_file(path)
    save_file({**tensors, "action.extra": torch.zeros(2)}, path)
    live, _ = _pipelines(doc)
    with pytest.raises(TrainInputError, match=f"the stats of {path} differ"):
        check_resumed_stats(step_dir, live, doc)
    shutil.rmtree(step_dir / "pretrained_model")
    check_resumed_stats(step_dir, live, doc)  # no saved processors: the live one alone is compared
