"""What an evaluation reads: the checkpoint, the dataset, the held-out split, stride, batch, noise
seed, device, media and tracking settings (the ``evaluate:`` section, or ``vla evaluate``'s flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla_pipeline.params import at_least, int_or_auto, param
from vla_pipeline.params.models import default
from vla_pipeline.store import WANDB_DIR, resolve_store


@dataclass(frozen=True)
class EvaluateConfig:
    """The defaults are params.yaml's (``params/models.py``)."""

    checkpoint: Path
    dataset_root: Path
    out_dir: Path
    norms_dir: Path | None = None  # take the split from here instead of the checkpoint's own split.json
    stride: int | None = default("evaluate.stride")  # replan every `stride` frames; None: the checkpoint's n_action_steps
    batch_size: int = default("evaluate.batch_size")
    noise_seed: int = default("evaluate.noise_seed")
    device: str = default("evaluate.device")
    num_workers: int | str = default("evaluate.num_workers")  # "auto": sampler.resolve_num_workers
    saturation_margin: float = default("evaluate.saturation_margin")  # fraction of a joint's range "at the limit"
    videos: bool = default("evaluate.videos")
    wandb_mode: str = default("evaluate.wandb.mode")
    wandb_project: str = default("evaluate.wandb.project")
    wandb_dir: Path | None = None  # None: out_dir/wandb
    frame_cache: Path | None = None  # read camera frames from this decoded-frame cache instead of the videos
    store: Path | None = None  # where a frame cache's manifest points (base.store); None: auto

    def __post_init__(self) -> None:
        if self.stride is not None:
            at_least(self.stride, 1, "evaluate.stride")
        at_least(self.batch_size, 1, "evaluate.batch_size")
        if self.num_workers != "auto":
            at_least(self.num_workers, 0, "evaluate.num_workers")

    @classmethod
    def from_params(cls, p: dict, checkpoint: Path, out_dir: Path) -> EvaluateConfig:
        stride = param(p, "evaluate.stride")
        store = resolve_store(param(p, "base.store"))
        wandb_dir = param(p, "evaluate.wandb.dir")
        return cls(
            checkpoint=Path(checkpoint), dataset_root=param(p, "dataset.root", Path), out_dir=Path(out_dir),
            stride=None if stride is None else param(p, "evaluate.stride", int),
            batch_size=param(p, "evaluate.batch_size", int), noise_seed=param(p, "evaluate.noise_seed", int),
            device=param(p, "evaluate.device", str), num_workers=param(p, "evaluate.num_workers", int_or_auto),
            saturation_margin=param(p, "evaluate.saturation_margin", float),
            videos=param(p, "evaluate.videos", bool), wandb_mode=param(p, "evaluate.wandb.mode", str),
            wandb_project=param(p, "evaluate.wandb.project", str), wandb_dir=Path(wandb_dir) if wandb_dir else store / WANDB_DIR,
            frame_cache=param(p, "frame_cache.dir", Path) if param(p, "frame_cache.enable", bool) else None,
            store=store,
        )
