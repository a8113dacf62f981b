"""Same raw dataset + params + seed => bit-identical training batches in separate processes, with
and without augmentation; another augmentation seed changes the images and nothing else; the
dataset's own meta/stats.json never reaches a batch."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, make_train_config
from procs import run_bounded

SCRIPT = """
import json, sys
from pathlib import Path
import torch, yaml
from safetensors.torch import save_file
from vla_pipeline.train.runtime import seed_everything
from vla_pipeline.data.sampler import make_loader
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.inputs import make_inputs, require_train_inputs

a = json.loads(sys.argv[1])
params = yaml.safe_load(Path(a["params"]).read_text())
params["train"]["augment"].update(enable=a["augment"], seed=a["augment_seed"])
cfg = TrainConfig.from_params(params, **{k: Path(v) for k, v in a["paths"].items()}, batch_size=4,
                              num_workers=a["workers"], wandb_mode="disabled", frame_cache_dir=None)
stats, split = require_train_inputs(cfg)
seed_everything(cfg.seed)
inputs = make_inputs(cfg, stats, split)
batches = make_loader(inputs.dataset, cfg.batch_size, cfg.seed, cfg.num_workers)
out = {}
for i in range(2):
    for k, v in inputs.preprocessor(next(batches)).items():
        if isinstance(v, torch.Tensor):
            out[f"{i}/{k}"] = v.contiguous()
save_file(out, a["out"])
"""


def _batches(tiny_run, tmp_path: Path, name: str, augment: bool, augment_seed: int = 0, workers: int = 0) -> dict:
    out = tmp_path / f"{name}.safetensors"
    paths = {"dataset_root": tiny_run.dataset, "norms_dir": tiny_run.norms, "validation_report": tiny_run.report,
             "out_dir": tmp_path / name, "live_dir": tmp_path / name / "live", "wandb_dir": tmp_path / name / "wb"}
    args = {"params": str(REPO / "params.yaml"), "augment": augment, "augment_seed": augment_seed,
            "workers": workers, "out": str(out), "paths": {k: str(v) for k, v in paths.items()}}
    result = run_bounded([sys.executable, "-c", SCRIPT, json.dumps(args)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(out))


def _assert_equal(a: dict, b: dict, keys) -> None:
    for k in keys:
        assert torch.equal(a[k], b[k]), k


def _images(batch: dict) -> list[str]:
    return [k for k in batch if ".images." in k]


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_batches_identical_across_processes_without_augmentation(tiny_run, tmp_path) -> None:
    a = _batches(tiny_run, tmp_path, "a", augment=False)
    b = _batches(tiny_run, tmp_path, "b", augment=False, workers=1)
    assert set(a) == set(b)
    expected = {"observation.state", "action", "action_is_pad", "observation.language.tokens",
                "observation.language.attention_mask", "observation.images.front", "observation.images.wrist"}
    assert expected <= {k.split("/", 1)[1] for k in a}
    _assert_equal(a, b, a)


@pytest.mark.slow  # tens of seconds: real processes or trainings (make test runs it)
def test_augmentation_is_seeded_and_changes_only_images(tiny_run, tmp_path) -> None:
    plain = _batches(tiny_run, tmp_path, "plain", augment=False)
    a = _batches(tiny_run, tmp_path, "a", augment=True, augment_seed=0)
    b = _batches(tiny_run, tmp_path, "b", augment=True, augment_seed=0, workers=1)
    c = _batches(tiny_run, tmp_path, "c", augment=True, augment_seed=1)
    _assert_equal(a, b, a)  # same seed, other process and worker count: bit-identical
    others = [k for k in a if k not in _images(a)]
    _assert_equal(a, c, others)  # another seed: state, actions, padding, tokens unchanged
    _assert_equal(a, plain, others)
    for k in _images(a):
        assert not torch.equal(a[k], c[k]), k  # ... but other images
        assert not torch.equal(a[k], plain[k]), k


def test_meta_stats_json_never_reaches_a_batch(params, tiny_run, tmp_path) -> None:
    from vla_pipeline.data.sampler import make_loader
    from vla_pipeline.norms import load_split
    from vla_pipeline.train.inputs import make_inputs

    copy = tmp_path / "ds"
    shutil.copytree(tiny_run.dataset, copy)
    stats = json.loads((copy / "meta" / "stats.json").read_text())
    for feature in stats.values():
        for key, value in feature.items():
            feature[key] = (torch.tensor(value, dtype=torch.float64) * 0 + 1e6).tolist()
    (copy / "meta" / "stats.json").write_text(json.dumps(stats))
    frozen = json.loads((tiny_run.norms / "stats.json").read_text())
    batches = []
    for root in (tiny_run.dataset, copy):
        cfg = make_train_config(params, root, tmp_path / root.name, norms_dir=tiny_run.norms)
        inputs = make_inputs(cfg, frozen, load_split(tiny_run.norms))
        batches.append(inputs.preprocessor(next(make_loader(inputs.dataset, cfg.batch_size, cfg.seed, 0))))
    for k, v in batches[0].items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, batches[1][k]), k


@pytest.mark.parametrize("bad", ["crop_scale", "max_num_transforms"])
def test_augment_params_are_validated(params, bad) -> None:
    from vla_pipeline.data.augment import AugmentConfig
    from vla_pipeline.errors import ConfigError

    p = {**params["train"]["augment"], bad: 0.1 if bad == "crop_scale" else 0}
    with pytest.raises(ConfigError, match=bad):
        AugmentConfig.from_params(p)
