"""A checkpoint is data, not code (issue 28, item 3): what the security probe did to the demo checkpoint,
done to a copy of the tiny run's, against the loaders themselves. Processor steps resolve only through
LeRobot's registry and an allow-list (a ``class`` would be imported and called); the manifest covers
every file (no unlisted file, no symbolic link, no path out of the directory) and has one shape; the
checkpoint id comes from the verified hashes of the policy's files."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_pipeline.checkpoint.io import (
    compute_checkpoint_id,
    load_checkpoint,
    verify_checkpoint,
    write_manifest,
)
from vla_pipeline.checkpoint.layout import CHECKPOINTS_DIR, PRETRAINED_DIR, read_run_state
from vla_pipeline.checkpoint.manifest import MAX_MANIFEST_BYTES
from vla_pipeline.checkpoint.processor_steps import ALLOWED_PROCESSOR_STEPS
from vla_pipeline.errors import CheckpointError

from conftest import vla

PRE = "policy_preprocessor.json"
POST = "policy_postprocessor.json"


@pytest.fixture
def step(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run's last checkpoint (a step directory) inside a run directory of its own."""
    dest = tmp_path / "run" / CHECKPOINTS_DIR / tiny_run.checkpoint.parent.name
    shutil.copytree(tiny_run.checkpoint.parent, dest)
    return dest


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def plant(pretrained: Path, config: str, step_entry: dict, index: int = 0) -> None:
    edit_json(pretrained / config, lambda doc: doc["steps"].insert(index, step_entry))


def wait_for(path: Path, seconds: float = 2.0) -> bool:
    """Whether ``path`` appears (a planted Popen runs its command in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def test_our_own_saves_verify_under_the_rules(tiny_run) -> None:
    """Every checkpoint the train stage left (step directories and their policy directories) passes."""
    steps = sorted((tiny_run.train / CHECKPOINTS_DIR).iterdir())
    assert steps
    for step_dir in steps:
        assert verify_checkpoint(step_dir) is None and verify_checkpoint(step_dir / PRETRAINED_DIR) is None
    for config in (PRE, POST):
        steps_saved = json.loads((tiny_run.checkpoint / config).read_text())["steps"]
        assert {s["registry_name"] for s in steps_saved} <= set(ALLOWED_PROCESSOR_STEPS)


# ----------------------------------------------------------------------------- processor steps
@pytest.mark.parametrize("callable_name", ["subprocess.Popen", "subprocess.run"])
def test_a_processor_step_naming_a_class_runs_nothing(step, tmp_path, callable_name) -> None:
    """The probe's step: LeRobot imports ``class`` and calls it with ``config`` (Popen(args=[...]) runs
    the command). The checkpoint is re-manifested after the edit, so only the processor check stops it."""
    planted = tmp_path / "planted"
    plant(step / PRETRAINED_DIR, PRE, {"class": callable_name, "config": {"args": ["touch", str(planted)]}})
    write_manifest(step)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(step)
    assert not wait_for(planted), "the planted command ran"
    message = str(e.value)
    assert f"{step / PRETRAINED_DIR / PRE}: step 0 names a class to import, '{callable_name}'" in message
    assert "one of: " + ", ".join(ALLOWED_PROCESSOR_STEPS) in message and "nothing was imported" in message


@pytest.mark.parametrize(("config", "entry", "index", "says"), [
    (POST, {"class": "subprocess.Popen", "config": {"args": ["true"]}}, 1, "step 1 names a class to import"),
    (PRE, {"registry_name": "device_processor", "class": "os.system"}, 0, "step 0 names a class to import, 'os.system'"),
    (PRE, {"registry_name": "smolvla_new_line_processor", "config": {}}, 2, "step 2 is 'smolvla_new_line_processor', not an allowed step"),
    (PRE, ["to_batch_processor"], 0, "step 0 is a JSON list, not an object"),
    (PRE, {"config": {}}, 0, "step 0 has no 'registry_name'"),
    (POST, {"registry_name": "device_processor", "config": ["cpu"]}, 0, "step 0 (device_processor) has a config that is not an object"),
    (POST, {"registry_name": "unnormalizer_processor", "config": {}, "state_file": "../../outside.safetensors"}, 0,
     "step 0 (unnormalizer_processor) has a state_file that is not a file name: '../../outside.safetensors'"),
])
def test_processor_configs_are_checked_before_lerobot_sees_them(step, config, entry, index, says) -> None:
    plant(step / PRETRAINED_DIR, config, entry, index)
    write_manifest(step)
    for where in (step, step / PRETRAINED_DIR):
        with pytest.raises(CheckpointError, match=r"^refusing to load this checkpoint: ") as e:
            load_checkpoint(where)
        assert f"{step / PRETRAINED_DIR / config}: {says}" in str(e.value)
    assert says in verify_checkpoint(step)


def test_the_loader_guard_refuses_a_class_even_when_verification_is_bypassed(step, tmp_path) -> None:
    """The guard on LeRobot's config reading (what ``load_checkpoint`` and ``vla lerobot`` install) holds
    on its own: a config swapped after verification still builds nothing it does not allow."""
    from lerobot.processor import PolicyProcessorPipeline

    from vla_pipeline.checkpoint.processor_steps import install_processor_guard

    planted = tmp_path / "planted"
    plant(step / PRETRAINED_DIR, PRE, {"class": "subprocess.Popen", "config": {"args": ["touch", str(planted)]}})
    install_processor_guard()
    # LeRobot's from_pretrained reads the config through _load_config first (called directly: `vla lerobot`'s
    # wrapper around from_pretrained, installed by other tests in this process, would verify the manifest first)
    with pytest.raises(CheckpointError, match="step 0 names a class to import"):
        PolicyProcessorPipeline._load_config(str(step / PRETRAINED_DIR), PRE, {})
    (step / PRETRAINED_DIR / "big.json").write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(CheckpointError, match="larger than the 1048576 bytes"):
        PolicyProcessorPipeline._load_config(str(step / PRETRAINED_DIR), "big.json", {})
    assert not wait_for(planted)


def test_vla_evaluate_refuses_a_planted_step_without_running_it(step, tiny_run, tmp_path) -> None:
    planted = tmp_path / "planted"
    plant(step / PRETRAINED_DIR, PRE, {"class": "subprocess.Popen", "config": {"args": ["touch", str(planted)]}})
    write_manifest(step)
    out = vla("evaluate", str(step), "--dataset", str(tiny_run.dataset), "--out", str(tmp_path / "eval"),
              "--wandb", "disabled", "--no-videos")
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "names a class to import, 'subprocess.Popen'" in out.stderr and "Traceback" not in out.stderr
    assert not wait_for(planted)


# ----------------------------------------------------------------------------- every file in the manifest
def _zero_weights(pretrained: Path) -> None:
    weights = pretrained / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(weights), metadata={"format": "pt"})


def test_an_emptied_policy_manifest_does_not_pass_zeroed_weights(step) -> None:
    """The probe: ``pretrained_model/manifest.json`` replaced by ``{}``, the weights zeroed, the step
    manifest untouched. It loaded (nothing listed, nothing checked) under the unchanged checkpoint id."""
    from vla_pipeline.deploy.policy import DeployedPolicy

    pretrained = step / PRETRAINED_DIR
    (pretrained / "manifest.json").write_text("{}")
    _zero_weights(pretrained)
    for load in (lambda: load_checkpoint(step), lambda: DeployedPolicy.load(step)):
        with pytest.raises(CheckpointError) as e:
            load()
        assert f"{pretrained / 'config.json'}, " in str(e.value) and f"not in {pretrained / 'manifest.json'}" in str(e.value)
    with pytest.raises(CheckpointError, match="refusing to identify this checkpoint"):
        compute_checkpoint_id(step)
    assert f"{pretrained / 'manifest.json'} has 2 bytes" in verify_checkpoint(step)  # resume: the step manifest disagrees


def test_the_checkpoint_id_is_the_policy_files_hashes(step, tmp_path) -> None:
    """The same id from the loaded checkpoint, its step dir, its pretrained_model dir and a bare copy of
    it: sha256 over ``sha256sum``'s lines of the policy files. Other weights, another id; the training
    state (not the policy) does not enter it."""
    pretrained = step / PRETRAINED_DIR
    files = sorted(p.relative_to(pretrained).as_posix() for p in pretrained.rglob("*") if p.is_file()
                   and p.name != "manifest.json")
    assert "model.safetensors" in files and "tokenizer" in {f.split("/")[0] for f in files}
    lines = "".join(f"{hashlib.sha256((pretrained / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    expected = hashlib.sha256(lines.encode()).hexdigest()
    bare = tmp_path / "bare" / PRETRAINED_DIR
    shutil.copytree(pretrained, bare)
    assert compute_checkpoint_id(load_checkpoint(step)) == expected
    assert compute_checkpoint_id(step) == compute_checkpoint_id(pretrained) == compute_checkpoint_id(bare) == expected
    (step / "training_state" / "run_state.json").write_text('{"run_key": "other", "step": 1}')
    write_manifest(step)
    assert compute_checkpoint_id(step) == expected
    _zero_weights(pretrained)
    write_manifest(step)  # a consistent checkpoint with other weights
    zeroed = load_checkpoint(step)
    assert all(float(t.abs().sum()) == 0 for t in zeroed.policy.state_dict().values())
    assert compute_checkpoint_id(zeroed) == compute_checkpoint_id(step) != expected


def _symlink_file(pretrained: Path, outside: Path) -> Path:
    shutil.copyfile(pretrained / "norm_stats.json", outside)  # the same bytes: only the link differs
    (pretrained / "norm_stats.json").unlink()
    (pretrained / "norm_stats.json").symlink_to(outside)
    return pretrained / "norm_stats.json"


def _symlink_dir(pretrained: Path, outside: Path) -> Path:
    shutil.copytree(pretrained / "tokenizer", outside)
    shutil.rmtree(pretrained / "tokenizer")
    (pretrained / "tokenizer").symlink_to(outside, target_is_directory=True)
    return pretrained / "tokenizer"


@pytest.mark.parametrize("make_link", [_symlink_file, _symlink_dir])
def test_a_symbolic_link_out_of_the_checkpoint_is_refused(step, tmp_path, make_link) -> None:
    link = make_link(step / PRETRAINED_DIR, tmp_path / "outside")
    for where in (step, step / PRETRAINED_DIR):
        with pytest.raises(CheckpointError, match=f"^refusing to load this checkpoint: {link} is a symbolic link "
                                                  f"\\(to {tmp_path / 'outside'}\\)"):
            load_checkpoint(where)
    assert "is a symbolic link" in verify_checkpoint(step)
    with pytest.raises(CheckpointError, match="cannot write the manifest"):
        write_manifest(step)


def test_a_linked_pretrained_model_directory_is_refused(step, tmp_path) -> None:
    shutil.move(step / PRETRAINED_DIR, tmp_path / "elsewhere")
    (step / PRETRAINED_DIR).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        load_checkpoint(step)
    assert "is a symbolic link" in verify_checkpoint(step)


@pytest.mark.parametrize("name", ["extra.json", "tokenizer/extra_tokens.json", "sub/dir/readme.txt"])
def test_a_file_added_after_the_save_is_refused_by_name(step, name) -> None:
    extra = step / PRETRAINED_DIR / name
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text("{}")
    for where in (step, step / PRETRAINED_DIR):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(where)
        assert str(e.value) == (
            f"refusing to load this checkpoint: {extra} is not in {step / PRETRAINED_DIR / 'manifest.json'}: added "
            f"after the checkpoint was saved. Remove what was added, or save the checkpoint again; a checkpoint loads "
            f"only the files its manifest lists")
    assert f"{extra} is not in {step / 'manifest.json'}" in verify_checkpoint(step)
    extra.unlink()
    assert verify_checkpoint(step) is None


# ----------------------------------------------------------------------------- malformed manifests
def _entry(pretrained: Path, **change) -> bytes:
    manifest = json.loads((pretrained / "manifest.json").read_text())
    manifest["model.safetensors"] = {**manifest["model.safetensors"], **change}
    return json.dumps(manifest).encode()


def _with_entry(name: str, entry: dict):
    def make(pretrained: Path) -> bytes:
        manifest = json.loads((pretrained / "manifest.json").read_text())
        return json.dumps({**manifest, name: entry}).encode()
    return make


def _outside(pretrained: Path) -> dict:
    """A file beside the policy directory, listed with its true size and hash."""
    (pretrained.parent / "outside.bin").write_bytes(b"outside")
    return {"size": 7, "sha256": hashlib.sha256(b"outside").hexdigest()}


MALFORMED = {
    "a-list": (lambda p: b"[]", "is not a manifest: a JSON list, not an object"),
    "a-string": (lambda p: b'"manifest"', "is not a manifest: a JSON str"),
    "not-json": (lambda p: b"{ torn", "is not valid JSON"),
    "not-utf8": (lambda p: b"\xff\xfe{}", "is not valid JSON"),
    "too-deep": (lambda p: b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    "too-large": (lambda p: b"{" + b" " * MAX_MANIFEST_BYTES + b"}", f"larger than the {MAX_MANIFEST_BYTES} bytes"),
    "entry-a-string": (lambda p: _with_entry("model.safetensors", "abc")(p), "entry 'model.safetensors' is 'abc'"),
    "no-sha256": (lambda p: json.dumps({"model.safetensors": {"size": 3}}).encode(), "entry 'model.safetensors' is"),
    "size-a-string": (lambda p: _entry(p, size=str(json.loads((p / "manifest.json").read_text())["model.safetensors"]["size"])),
                      "entry 'model.safetensors' is {'size': '"),
    "size-a-bool": (lambda p: _entry(p, size=True), "entry 'model.safetensors' is {'size': True"),
    "short-sha256": (lambda p: _entry(p, sha256="abc"), "'sha256': 'abc'}, not {\"size\": <bytes>, \"sha256\": <64 hex digits>}"),
    "extra-key": (lambda p: _entry(p, mode=420), "'mode': 420"),
    "dot-dot": (lambda p: _with_entry("../outside.bin", _outside(p))(p), "entry '../outside.bin' is not a relative path"),
    "absolute": (lambda p: _with_entry(str(p.parent / "outside.bin"), _outside(p))(p), "is not a relative path inside"),
    "lists-itself": (lambda p: _with_entry("manifest.json", {"size": 2, "sha256": "0" * 64})(p), "lists the manifest itself"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_clear_error(step, case) -> None:
    pretrained = step / PRETRAINED_DIR
    make, says = MALFORMED[case]
    (pretrained / "manifest.json").write_bytes(make(pretrained))
    with pytest.raises(CheckpointError, match=r"^refusing to load this checkpoint: ") as e:
        load_checkpoint(pretrained)
    assert says in str(e.value) and str(pretrained / "manifest.json") in str(e.value)
    assert says in verify_checkpoint(pretrained)
    with pytest.raises(CheckpointError):
        compute_checkpoint_id(pretrained)


@pytest.mark.parametrize("case", ["a-list", "no-sha256", "dot-dot"])
def test_vla_evaluate_exits_1_without_a_traceback_on_a_malformed_manifest(step, tiny_run, tmp_path, case) -> None:
    make, says = MALFORMED[case]
    (step / "manifest.json").write_bytes(make(step))
    (step / PRETRAINED_DIR / "manifest.json").write_bytes(make(step / PRETRAINED_DIR))
    out = vla("evaluate", str(step), "--dataset", str(tiny_run.dataset), "--out", str(tmp_path / "eval"),
              "--wandb", "disabled", "--no-videos")
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert says in out.stderr and "Traceback" not in out.stderr


def test_the_step_manifest_and_the_policy_manifest_must_agree(step) -> None:
    """Resume reads the step manifest, a deployment the policy's: both are complete and list the same."""
    inner = step / PRETRAINED_DIR / "manifest.json"
    manifest = json.loads(inner.read_text())
    manifest.pop("versions.json")
    (step / PRETRAINED_DIR / "versions.json").unlink()
    inner.write_text(json.dumps(manifest, indent=1))
    assert verify_checkpoint(step / PRETRAINED_DIR) is None  # the policy directory alone is consistent
    outer = json.loads((step / "manifest.json").read_text())
    outer.pop(f"{PRETRAINED_DIR}/versions.json")
    outer[f"{PRETRAINED_DIR}/manifest.json"] = {"size": inner.stat().st_size,
                                                "sha256": hashlib.sha256(inner.read_bytes()).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(outer, indent=1))
    assert verify_checkpoint(step) is None
    manifest["versions.json"] = {"size": 1, "sha256": "0" * 64}  # the policy manifest lists a file the step does not
    inner.write_text(json.dumps(manifest, indent=1))
    outer[f"{PRETRAINED_DIR}/manifest.json"] = {"size": inner.stat().st_size,
                                                "sha256": hashlib.sha256(inner.read_bytes()).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(outer, indent=1))
    assert "does not list what" in verify_checkpoint(step) and "['versions.json']" in verify_checkpoint(step)


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("alteration", ["planted-class", "unlisted-file", "symlink"])
def test_resume_sets_aside_a_checkpoint_that_breaks_the_rules(step, tmp_path, capsys, alteration) -> None:
    from vla_pipeline.checkpoint.resume import plan_resume, set_aside

    planted = tmp_path / "planted"
    if alteration == "planted-class":
        plant(step / PRETRAINED_DIR, PRE, {"class": "subprocess.Popen", "config": {"args": ["touch", str(planted)]}})
        write_manifest(step)
        reason = "names a class to import"
    elif alteration == "unlisted-file":
        (step / "training_state" / "notes.txt").write_text("added")
        reason = "notes.txt is not in"
    else:
        _symlink_file(step / PRETRAINED_DIR, tmp_path / "outside")
        reason = "is a symbolic link"
    run_dir = step.parent.parent
    plan = plan_resume(run_dir, read_run_state(step)["run_key"], "auto")
    assert plan.checkpoint is None and plan.discard == [step]
    err = capsys.readouterr().err
    assert f"checkpoint {step} is unusable: " in err and reason in err and "it is set aside" in err
    (moved,) = set_aside(run_dir, plan.discard)
    assert moved.is_dir() and not step.exists() and not wait_for(planted, 0.5)
