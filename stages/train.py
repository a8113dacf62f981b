"""DVC stage `train`: fine-tune Pi0.5 with the frozen stats and write checkpoints."""

from pathlib import Path

from vla_pipeline.policy import PolicyConfig
from vla_pipeline.train import TrainConfig, train

from _params import load_params, run

SCALARS = ("steps", "batch_size", "lr", "warmup_steps", "decay_steps", "decay_lr", "weight_decay",
           "grad_clip_norm", "num_workers", "log_every", "save_every", "device")


def main() -> None:
    p = load_params()
    t = p["train"]
    cfg = TrainConfig(
        dataset_root=Path(p["base"]["dataset_root"]),
        contract_path=Path(p["base"]["contract"]),
        norms_dir=Path(p["norms"]["out_dir"]),
        validation_report=Path(p["validate"]["report"]),
        out_dir=Path(t["out_dir"]),
        live_dir=Path(t["live_dir"]),
        policy=PolicyConfig.from_params(p["policy"]),
        seed=int(p["base"]["seed"]),
        wandb_project=t["wandb"]["project"],
        wandb_mode=t["wandb"]["mode"],
        **{k: t[k] for k in SCALARS},
    )
    print(f"final checkpoint: {train(cfg)}")


if __name__ == "__main__":
    run(main)
