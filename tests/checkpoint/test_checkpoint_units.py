"""Checkpoint files without a training run: the self-describing ``pretrained_model`` layout of a
tiny, untrained Pi0.5 (LeRobot's own classes at the params.yaml tiny size), its manifest and every
way verification refuses a damaged one, the strict weight loader, and the last/best pointers.
tests/checkpoint/test_checkpoint.py does the same on a trained checkpoint, in fresh processes."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import (
    load_checkpoint,
    load_policy_weights,
    load_state_strict,
    require_verified,
    save_pretrained_model,
    verify_checkpoint,
    write_manifest,
)
from vla_pipeline.checkpoint.layout import (
    BEST_FILE,
    CHECKPOINT_MANIFEST_FILE,
    LAST_FILE,
    PRETRAINED_DIR,
    find_last,
    read_pointer,
    write_pointer,
)
from vla_pipeline.errors import CheckpointError
from vla_pipeline.provenance import collect_versions

from conftest import CONTRACT, REPO

JOINTS = 6
STATS = {"features": {key: {"mean": [0.0] * JOINTS, "std": [1.0] * JOINTS, "min": [0.0] * JOINTS,
                            "max": [1.0] * JOINTS, "q01": [0.0] * JOINTS, "q10": [0.1] * JOINTS,
                            "q50": [0.5] * JOINTS, "q90": [0.9] * JOINTS, "q99": [1.0] * JOINTS}
                      for key in ("action", "observation.state")}}
SPLIT = {"train": [0, 2], "val": [1]}


def _tiny(tokenizer_dir: Path):
    """An untrained tiny Pi0.5 with LeRobot's processors, the frozen STATS and the local tokenizer."""
    from vla_pipeline.model.build import make_pi05_policy
    from vla_pipeline.model.config import PolicyConfig, make_pi05_config, resolve_tokenizer
    from vla_pipeline.model.processors import make_processors
    from vla_pipeline.norms import make_processor_stats

    cfg = PolicyConfig.from_params(yaml.safe_load((REPO / "params.yaml").read_text())["policy"])
    config = make_pi05_config(cfg, JOINTS, {"observation.images.front": (3, 32, 40)}, "cpu")
    tokenizer = resolve_tokenizer(cfg, tokenizer_dir)
    pre, post = make_processors(config, make_processor_stats(STATS), tokenizer)
    torch.manual_seed(0)
    return make_pi05_policy(config, cfg.dims), pre, post, cfg.dims, tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module, str]:
    """A checkpoint step directory as the checkpointer leaves it (pretrained_model, then the manifest)."""
    work = tmp_path_factory.mktemp("ckpt")
    policy, pre, post, dims, tokenizer = _tiny(work / "tokenizer")
    step = work / "000004"
    out = save_pretrained_model(step, policy, pre, post, dims=dims, tokenizer=tokenizer, contract_path=CONTRACT,
                                norm_stats=STATS, split=SPLIT, train_config={"lr": 0.1, "out_dir": work},
                                provenance={"git_commit": "abc", "torch": "provenance wins"})
    assert out == step / PRETRAINED_DIR
    write_manifest(step)
    return step, policy, tokenizer


def indented(path: Path, spaces: int) -> bool:
    """The file is JSON pretty-printed with ``spaces`` of indentation (readable and diffable)."""
    text = path.read_text()
    return text == json.dumps(json.loads(text), indent=spaces)


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    shutil.copytree(saved[0], tmp_path / "step")
    return tmp_path / "step"


def test_the_pretrained_model_describes_itself(saved) -> None:
    step, _, tokenizer = saved
    out = step / PRETRAINED_DIR
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "contract.yaml", "manifest.json", "model.safetensors", "norm_stats.json",
        "policy_postprocessor.json", "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
        "policy_preprocessor.json", "policy_preprocessor_step_2_normalizer_processor.safetensors", "split.json",
        "tokenizer", "train_config.json", "versions.json", "vla_model_dims.json"]
    assert (out / "contract.yaml").read_bytes() == CONTRACT.read_bytes()
    assert json.loads((out / "norm_stats.json").read_text()) == STATS
    assert json.loads((out / "split.json").read_text()) == SPLIT
    assert json.loads((out / "train_config.json").read_text()) == {"lr": 0.1, "out_dir": str(step.parent)}
    assert json.loads((out / "versions.json").read_text()) == {**collect_versions(), "git_commit": "abc",
                                                                "torch": "provenance wins"}
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == sorted(p.name for p in Path(tokenizer).iterdir())
    assert all(indented(out / name, 2) for name in ("norm_stats.json", "split.json", "train_config.json",
                                                    "versions.json"))


def test_a_hub_tokenizer_is_not_copied(saved, tmp_path) -> None:
    policy, pre, post, dims, _ = _tiny(tmp_path / "tok")
    out = save_pretrained_model(tmp_path / "s", policy, pre, post, dims=dims, tokenizer="google/paligemma-3b-pt-224",
                                contract_path=CONTRACT, norm_stats=STATS, split=SPLIT, train_config={}, provenance={})
    assert not (out / "tokenizer").exists() and (out / "config.json").is_file()


def test_versions_are_the_installed_packages() -> None:
    import lerobot
    import transformers

    import vla_pipeline

    assert collect_versions() == {
        "vla_pipeline": vla_pipeline.__version__, "lerobot": lerobot.__version__,
        "transformers": transformers.__version__, "torch": str(torch.__version__), "cuda": torch.version.cuda,
        "hip": torch.version.hip, "python": platform.python_version()}


def test_load_checkpoint_gives_the_saved_policy_and_its_processors(saved) -> None:
    step, policy, _ = saved
    for where in (step, step / PRETRAINED_DIR):
        ckpt = load_checkpoint(where)
        assert ckpt.directory == step / PRETRAINED_DIR
        assert ckpt.policy.training is False and ckpt.policy.config.device == "cpu"
        mine, theirs = ckpt.policy.state_dict(), policy.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        assert (ckpt.train_config, ckpt.norm_stats, ckpt.split) == (
            {"lr": 0.1, "out_dir": str(step.parent)}, STATS, SPLIT)
        tokenizer_step = next(s for s in ckpt.preprocessor.steps if type(s).__name__ == "TokenizerProcessorStep")
        assert tokenizer_step.tokenizer_name == str(step / PRETRAINED_DIR / "tokenizer")  # its own copy
        # the postprocessor takes the policy's action tensor: unnormalized from [-1, 1] to [q01, q99] = [0, 1]
        assert torch.equal(ckpt.postprocessor(torch.zeros(1, JOINTS)), torch.full((1, JOINTS), 0.5))


def test_a_checkpoint_from_before_splits_were_saved(copy) -> None:
    (copy / PRETRAINED_DIR / "split.json").unlink()
    write_manifest(copy)
    assert load_checkpoint(copy).split is None


def test_a_checkpoint_without_its_tokenizer_copy_uses_the_one_it_was_trained_with(saved, copy) -> None:
    shutil.rmtree(copy / PRETRAINED_DIR / "tokenizer")
    write_manifest(copy)
    ckpt = load_checkpoint(copy)
    tokenizer_step = next(s for s in ckpt.preprocessor.steps if type(s).__name__ == "TokenizerProcessorStep")
    assert tokenizer_step.tokenizer_name == saved[2]


def test_load_checkpoint_refuses_what_is_no_checkpoint_or_damaged(copy, tmp_path) -> None:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nothing")
    assert str(e.value) == f"{tmp_path / 'nothing'} is not a pretrained_model directory (no config.json)"
    (copy / PRETRAINED_DIR / "train_config.json").write_text('{"lr": 0.2, "out_dir": "x"}')
    with pytest.raises(CheckpointError, match=r"^refusing to load this checkpoint: .*train_config.json (has|does)"):
        load_checkpoint(copy)


# ----------------------------------------------------------------------------- manifest and verification
def test_manifest_has_every_file_and_the_policy_directory_its_own(copy) -> None:
    write_manifest(copy)  # again, as the checkpointer does: the same manifests
    outer = json.loads((copy / CHECKPOINT_MANIFEST_FILE).read_text())
    inner = json.loads((copy / PRETRAINED_DIR / CHECKPOINT_MANIFEST_FILE).read_text())
    files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and p.name != CHECKPOINT_MANIFEST_FILE)
    assert list(outer) == sorted([*files, f"{PRETRAINED_DIR}/{CHECKPOINT_MANIFEST_FILE}"])
    weights = copy / PRETRAINED_DIR / "model.safetensors"
    entry = {"size": weights.stat().st_size, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert outer[f"{PRETRAINED_DIR}/model.safetensors"] == inner["model.safetensors"] == entry
    assert set(inner) == {f[len(PRETRAINED_DIR) + 1:] for f in files if f.startswith(f"{PRETRAINED_DIR}/")}
    manifest = copy / PRETRAINED_DIR / CHECKPOINT_MANIFEST_FILE
    assert outer[f"{PRETRAINED_DIR}/{CHECKPOINT_MANIFEST_FILE}"] == {"size": manifest.stat().st_size,
                                                         "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    assert not list(copy.rglob("*.tmp"))
    assert indented(copy / CHECKPOINT_MANIFEST_FILE, 1) and indented(manifest, 1)
    assert verify_checkpoint(copy) is None and verify_checkpoint(copy / PRETRAINED_DIR) is None


def test_a_directory_without_a_policy_gets_one_manifest(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"\0" * 10)
    write_manifest(tmp_path)
    assert json.loads((tmp_path / CHECKPOINT_MANIFEST_FILE).read_text()) == {
        "a.txt": {"size": 1, "sha256": hashlib.sha256(b"a").hexdigest()},
        "sub/b.bin": {"size": 10, "sha256": hashlib.sha256(b"\0" * 10).hexdigest()}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", CHECKPOINT_MANIFEST_FILE, "sub"]


def test_verification_names_what_is_wrong(tmp_path) -> None:
    (tmp_path / "w.bin").write_bytes(b"abcd")
    assert verify_checkpoint(tmp_path) == f"{tmp_path} has no manifest.json (a save that did not finish)"
    write_manifest(tmp_path)
    assert verify_checkpoint(str(tmp_path)) is None
    (tmp_path / "w.bin").write_bytes(b"abcx")
    assert verify_checkpoint(tmp_path) == f"{tmp_path / 'w.bin'} does not match its sha256 in the manifest (corrupt)"
    (tmp_path / "w.bin").write_bytes(b"ab")
    assert verify_checkpoint(tmp_path) == (f"{tmp_path / 'w.bin'} has 2 bytes, the manifest says 4 (truncated?)")
    (tmp_path / "w.bin").unlink()
    assert verify_checkpoint(tmp_path) == f"{tmp_path / 'w.bin'} is missing"
    (tmp_path / CHECKPOINT_MANIFEST_FILE).write_text("{ torn")
    assert verify_checkpoint(tmp_path) == f"{tmp_path / CHECKPOINT_MANIFEST_FILE} is not valid JSON"
    with pytest.raises(CheckpointError) as e:
        require_verified(tmp_path, "resume")
    assert str(e.value) == (
        f"refusing to resume: {tmp_path / CHECKPOINT_MANIFEST_FILE} is not valid JSON. The checkpoint was damaged after it was "
        f"saved (disk, copy or edit); restore it (`dvc checkout artifacts/train`, or copy it again) or pick another "
        f"checkpoint")


def test_a_file_larger_than_one_read_block_is_hashed_whole(tmp_path) -> None:
    data = bytes(range(256)) * (5 << 14)  # 5 MiB: two 4 MiB blocks
    (tmp_path / "big.bin").write_bytes(data)
    write_manifest(tmp_path)
    assert json.loads((tmp_path / CHECKPOINT_MANIFEST_FILE).read_text())["big.bin"]["sha256"] == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- strict weights
class Tied(torch.nn.Module):
    """An embedding whose output head shares its weight (as PaliGemma's lm_head does)."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(4, width)
        self.head = torch.nn.Linear(width, 4, bias=False)
        self.head.weight = self.embed.weight
        self.norm = torch.nn.LayerNorm(width)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What safetensors keeps of a model: a tied weight once."""
    return {k: v.clone() for k, v in model.state_dict().items() if k != "head.weight"}


def test_a_tied_weight_stored_once_loads(tmp_path) -> None:
    torch.manual_seed(0)
    source, target = Tied(), Tied()
    assert load_state_strict(target, _state(source), "src") == {"loaded": 3, "missing": 0, "unexpected": 0}
    assert torch.equal(target.head.weight, source.embed.weight)
    save_file(_state(source), tmp_path / "model.safetensors")
    assert load_policy_weights(Tied(), tmp_path)["loaded"] == 3


def test_missing_unexpected_and_misshaped_tensors_are_refused(tmp_path) -> None:
    state = _state(Tied())
    missing = {k: v for k, v in state.items() if k != "norm.bias"}
    with pytest.raises(CheckpointError) as e:
        load_state_strict(Tied(), missing, "ckpt")
    assert str(e.value) == ("ckpt: 2 tensors loaded, 1 missing keys (e.g. ['norm.bias']), 0 unexpected keys (e.g. []); "
                            "the checkpoint does not match the model")
    with pytest.raises(CheckpointError, match=r"^ckpt: 3 tensors loaded, 0 missing keys \(e.g. \[\]\), 1 unexpected "
                                              r"keys \(e.g. \['extra'\]\)"):
        load_state_strict(Tied(), {**state, "extra": torch.zeros(1)}, "ckpt")
    with pytest.raises(CheckpointError) as e:
        load_state_strict(Tied(), _state(Tied(width=5)), Path("w.safetensors"))
    assert str(e.value).startswith(  # the last line of torch's message
        "w.safetensors: tensors do not fit the model (size mismatch for norm.bias: copying a param with shape "
        "torch.Size([5]) from checkpoint, the shape in current model is torch.Size([3]).)")
    assert str(e.value).endswith("); the checkpoint was made for another model size or action dimension")
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(CheckpointError) as e:
        load_policy_weights(Tied(), tmp_path)
    assert str(e.value) == f"{tmp_path / 'model.safetensors'} not found: the checkpoint has no weights"


def test_the_message_shows_three_keys_of_each_kind(tmp_path) -> None:
    model = torch.nn.Sequential(*(torch.nn.Linear(1, 1, bias=False) for _ in range(5)))
    extra = {f"x{i}": torch.zeros(1) for i in range(5)}
    save_file(extra, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_policy_weights(model, tmp_path)
    assert str(e.value) == (
        f"{tmp_path / 'model.safetensors'}: 0 tensors loaded, 5 missing keys (e.g. ['0.weight', '1.weight', "
        f"'2.weight']), 5 unexpected keys (e.g. ['x0', 'x1', 'x2']); the checkpoint does not match the model")


def test_an_untied_copy_does_not_excuse_a_missing_key() -> None:
    class TwoLinears(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False)

    state = {"a.weight": torch.ones(2, 2)}  # b.weight is not tied to a.weight: it is missing
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. \['b.weight'\]\)"):
        load_state_strict(TwoLinears(), state, "x")


# ----------------------------------------------------------------------------- pointers
def test_pointers_name_the_step_directory_relative_to_the_run(tmp_path) -> None:
    step = tmp_path / "checkpoints" / "000010"
    write_pointer(tmp_path, LAST_FILE, step, step=10, val_loss=0.5)
    assert (tmp_path / LAST_FILE).read_text() == json.dumps(
        {"path": "checkpoints/000010", "step": 10, "val_loss": 0.5}, indent=2) + "\n"
    assert read_pointer(tmp_path, LAST_FILE) == {"path": "checkpoints/000010", "step": 10, "val_loss": 0.5}
    assert read_pointer(tmp_path, BEST_FILE) is None
    assert find_last(tmp_path) == step / PRETRAINED_DIR
    write_pointer(str(tmp_path), BEST_FILE, tmp_path / "checkpoints" / "000004")
    assert find_last(tmp_path, BEST_FILE) == tmp_path / "checkpoints" / "000004" / PRETRAINED_DIR
    assert not list(tmp_path.glob("*.tmp"))


def test_a_run_without_a_finished_checkpoint_has_no_last(tmp_path) -> None:
    with pytest.raises(CheckpointError) as e:
        find_last(tmp_path)
    assert str(e.value) == (f"{tmp_path / LAST_FILE} not found: no finished checkpoint in {tmp_path}; run the train "
                            f"stage first")
    with pytest.raises(CheckpointError, match=BEST_FILE):
        find_last(tmp_path, BEST_FILE)


def test_weights_load_from_the_saved_file(saved, tmp_path) -> None:
    step, policy, _ = saved
    state = load_file(str(step / PRETRAINED_DIR / "model.safetensors"))
    assert all(torch.equal(state[k], policy.state_dict()[k]) for k in state)
