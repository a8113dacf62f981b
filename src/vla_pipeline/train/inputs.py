"""What a training run reads, checked before anything is built: the dataset against the contract,
the validation report (same dataset, contract and exclusions), the frozen stats and split; then the
train split as LeRobot samples, a fixed validation subset, LeRobot's Pi0.5 config and processors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.data.augment import make_image_transforms
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.factory import make_episode_dataset
from vla_pipeline.data.frame_cache import load_frame_cache
from vla_pipeline.data.metadata import camera_shapes
from vla_pipeline.data.sampler import compute_batches_per_epoch
from vla_pipeline.data.tables import feature_names, load_info, require_camera_stream
from vla_pipeline.data.validation_report import load_report, require_same_exclusions
from vla_pipeline.errors import ConfigError, ContractError, TrainInputError
from vla_pipeline.model.config import compute_image_resolution, make_pi05_config, resolve_tokenizer
from vla_pipeline.model.processors import make_processors
from vla_pipeline.norms import load_norm_stats, make_processor_stats
from vla_pipeline.provenance import find_data_mismatch
from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.runtime import Runtime
from vla_pipeline.train.validation_loss import make_val_subset


def require_train_inputs(cfg: TrainConfig) -> tuple[dict, dict]:
    """Refuse to start on a dataset that does not match the contract, a failed or stale validation,
    or stats that belong to another dataset/contract; returns the frozen stats and the split."""
    contract, info = load_contract(cfg.contract_path), load_info(cfg.dataset_root)
    require_camera_stream(info, cfg.dataset_root)
    for key in (contract.action_key, contract.state_key):
        if key not in info["features"]:
            raise ContractError(f"contract '{contract.name}' expects key '{key}', the dataset has "
                                f"{sorted(info['features'])}")
        contract.select_indices(feature_names(info, key), key)  # names the joints that differ
    report = load_report(cfg.validation_report, cfg.dataset_root, cfg.contract_path)
    stats, split = load_norm_stats(cfg.norms_dir)
    require_same_exclusions(report, cfg.validation_report, stats["exclude_episodes"])  # carried: report -> stats
    mismatch = find_data_mismatch(stats, cfg.dataset_root, contract_path=cfg.contract_path, split=split)
    if mismatch is not None:
        raise TrainInputError({
            "split": f"the episode split in {cfg.norms_dir} is not the one its stats were computed on",
            "dataset": f"frozen stats in {cfg.norms_dir} were computed on another version of {cfg.dataset_root}",
            "contract": f"frozen stats were computed with another contract than {cfg.contract_path}",
        }[mismatch] + "; run `dvc repro norms`")
    return stats, split


@dataclass
class TrainInputs:
    dataset: object
    val_dataset: object
    pi05_config: object  # LeRobot's PI05Config: its optimizer_lr is the run's effective lr, the only one
    preprocessor: object
    postprocessor: object
    tokenizer: str
    split: dict[str, list[int]]  # saved in every checkpoint: what `vla evaluate` holds out


def make_inputs(cfg: TrainConfig, stats_doc: dict, split: dict[str, list[int]], runtime: Runtime | None = None
                ) -> TrainInputs:
    """The train split as LeRobot samples (augmented), a fixed validation subset, the policy config
    (with the effective lr: the configured one times the runtime's scale, computed here and nowhere
    else; checkpointing and compile) and its processors."""
    contract = load_contract(cfg.contract_path)
    cache = None if cfg.frame_cache_dir is None else load_frame_cache(
        cfg.frame_cache_dir, stats_doc["dataset_fingerprint"], compute_image_resolution(cfg.policy), cfg.store,
        rebuild_from=(cfg.dataset_root, cfg.contract_path))
    dataset = make_episode_dataset(cfg.dataset_root, contract, split["train"], cfg.policy.chunk_size, cache,
                                   augment=make_image_transforms(cfg.augment), augment_seed=cfg.augment.seed)
    world = runtime.world_size if runtime else 1
    if compute_batches_per_epoch(len(dataset), cfg.batch_size, world) < 1:
        raise ConfigError(f"train split has {len(dataset)} frames, fewer than train.batch_size={cfg.batch_size} "
                          f"x {world} process(es)")
    val = make_episode_dataset(cfg.dataset_root, contract, split["val"], cfg.policy.chunk_size,
                               cache) if split["val"] else None
    scale = runtime.lr_scale if runtime else 1.0
    pi05_config = make_pi05_config(
        cfg.policy, len(contract.joints), camera_shapes(cfg.dataset_root, contract),
        runtime.device if runtime else "cpu",
        optimizer_lr=cfg.lr * scale, optimizer_weight_decay=cfg.weight_decay, optimizer_grad_clip_norm=cfg.grad_clip_norm,
        scheduler_warmup_steps=cfg.warmup_steps, scheduler_decay_steps=cfg.decay_steps,
        scheduler_decay_lr=cfg.decay_lr * scale,
        gradient_checkpointing=runtime.gradient_checkpointing if runtime else False,
        compile_model=runtime.compile if runtime else False,
    )
    tokenizer = resolve_tokenizer(cfg.policy, Path(cfg.out_dir) / "tokenizer")
    pre, post = make_processors(pi05_config, make_processor_stats(stats_doc), tokenizer)
    return TrainInputs(dataset, make_val_subset(val, cfg.val_samples) if val else None, pi05_config, pre, post,
                       tokenizer, split)
