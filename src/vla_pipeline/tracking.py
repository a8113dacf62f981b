"""One small logger interface with dvclive and Weights & Biases behind it. Nothing else in the
project calls dvclive or wandb directly. W&B is offline unless params say otherwise; its API key
comes from the environment (WANDB_API_KEY) and is never logged or written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class TrackingConfig:
    live_dir: Path
    wandb_dir: Path
    wandb_project: str = "vla-pipeline"
    wandb_mode: str = "offline"  # offline | online | disabled
    run_name: str | None = None


class Tracker(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, name: str, path: Path, kind: str) -> None: ...
    def close(self) -> None: ...


class DvcLiveTracker:
    def __init__(self, live_dir: Path):
        from dvclive import Live

        self.live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)

    def log_config(self, config: dict) -> None:
        self.live.log_params(config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def log_artifact(self, name: str, path: Path, kind: str) -> None:
        """Nothing to do: the file is a DVC stage output, versioned by its content hash already."""

    def close(self) -> None:
        self.live.end()


class WandbTracker:
    def __init__(self, cfg: TrackingConfig):
        import wandb

        Path(cfg.wandb_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.wandb_project, mode=cfg.wandb_mode, dir=str(cfg.wandb_dir), name=cfg.run_name,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_artifact(self, name: str, path: Path, kind: str) -> None:
        """An immutable W&B artifact (versioned by content; offline runs sync it later)."""
        import wandb

        artifact = wandb.Artifact(name, type=kind)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        import wandb

        self.run.finish()
        # stop W&B's service process too: otherwise its address stays in os.environ
        # (WANDB_SERVICE) and a child process (a `dvc repro` from here) tries to attach to it
        wandb.teardown()


class MultiTracker:
    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_config(self, config: dict) -> None:
        for t in self.trackers:
            t.log_config(config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, name: str, path: Path, kind: str) -> None:
        for t in self.trackers:
            t.log_artifact(name, path, kind)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def make_tracker(cfg: TrackingConfig) -> Tracker:
    trackers: list[Tracker] = [DvcLiveTracker(cfg.live_dir)]
    if cfg.wandb_mode != "disabled":
        trackers.append(WandbTracker(cfg))
    return MultiTracker(trackers)
