"""One small logger interface with dvclive and Weights & Biases behind it. Nothing else in the
project calls dvclive or wandb directly.

W&B's mode comes from params (online | offline | disabled); an online run whose service cannot be
reached falls back to offline with a warning (``wandb sync`` uploads it later). Its API key comes
from the environment (WANDB_API_KEY) and is never logged or written. A resumed run continues the
same W&B run (its id is kept in the W&B directory, keyed by the run key) and rewinds dvclive's
curves to the checkpoint's step."""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import yaml

from vla_pipeline.errors import read_json_artifact

log = logging.getLogger(__name__)

RUN_IDS_FILE = "run_ids.json"
CURVES = ("train/loss", "val/loss", "train/lr", "train/grad_norm")
TIMING_PREFIX = "perf/"  # timings differ on every run: W&B only, so a repro never changes git-tracked files
MACHINE_KEYS = ("git", "hardware", "store", "wandb_dir")  # differ per machine: not in git-tracked files


@dataclass(frozen=True)
class TrackingConfig:
    live_dir: Path
    wandb_dir: Path
    wandb_project: str = "vla-pipeline"
    wandb_mode: str = "offline"  # offline | online | disabled
    run_key: str = ""  # a resumed run (same key) continues its W&B run
    job_type: str = "train"  # W&B job type; runs of other types (evaluate) always start a new W&B run
    resume_step: int | None = None  # None: a new run
    init_timeout: float = 60.0  # seconds W&B may take to reach its service before falling back to offline


class Tracker(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifact(self, name: str, path: Path | None, kind: str, metadata: dict | None = None) -> None: ...
    def log_image(self, name: str, path: Path) -> None: ...
    def log_video(self, name: str, path: Path, fps: int) -> None: ...
    def log_table(self, name: str, rows: list[dict], x: str, y: str) -> None: ...
    def log_summary(self, metrics: dict) -> None: ...
    def close(self) -> None: ...


def rewind_live_dir(live_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after ``step`` (a killed run logged past its last checkpoint), and
    the files a kill can leave half-written: a torn last row, an unreadable summary or params file
    (dvclive would fail to resume on them; the run writes both again)."""
    for tsv in (Path(live_dir) / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            continue
        col = rows[0].index("step")
        kept = rows[:1] + [r for r in rows[1:] if _is_complete(r, len(rows[0])) and int(float(r[col])) <= step]
        with open(tsv, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)
    for name, parse in (("metrics.json", json.loads), ("params.yaml", yaml.safe_load)):
        path = Path(live_dir) / name
        try:
            if path.is_file() and not isinstance(parse(path.read_text()), dict):
                raise ValueError(f"{path} is not a mapping")
        except (ValueError, yaml.YAMLError):
            path.unlink()


def _is_complete(row: list[str], width: int) -> bool:
    """A TSV row with every column, each a number (a kill mid-write leaves the last row short)."""
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return len(row) == width


def save_curves_plot(live_dir: Path, out: Path) -> Path | None:
    """One PNG of the logged curves (loss, validation loss, lr, grad norm) from dvclive's files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for name in CURVES:
        tsv = Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"
        if tsv.is_file():
            with open(tsv, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            series[name] = ([int(r["step"]) for r in rows], [float(r[name.split("/")[-1]]) for r in rows])
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3))
    for ax, (name, (x, y)) in zip(axes if len(series) > 1 else [axes], series.items(), strict=True):
        ax.plot(x, y)
        ax.set_title(name)
        ax.set_xlabel("step")
        if name != "train/lr":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics as one level of ``a/b/c`` keys (W&B's summary)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def check_wandb_online(timeout: float) -> str | None:
    """Why an online W&B run cannot start (no API key, service unreachable), or None."""
    import netrc
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    if not os.environ.get("WANDB_API_KEY"):
        try:
            logged_in = netrc.netrc().authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        if not logged_in:
            return "no API key (set WANDB_API_KEY in the environment, or run `wandb login`)"
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10)).close()
    except OSError as e:
        return f"{host}:{port} is unreachable ({e})"
    return None


DVCLIVE_SIGNAL_FILE = "DVCLIVE_STEP_COMPLETED"


class DvcLiveTracker:
    def __init__(self, live_dir: Path, resume_step: int | None):
        from dvclive import Live

        if resume_step is not None:
            rewind_live_dir(live_dir, resume_step)
        self.live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None,
                         resume=resume_step is not None)
        if resume_step is not None:  # dvclive resumes at its last step + 1: a finished run resumed (nothing
            self.live.step = resume_step  # left to train) must leave metrics.json as it was

    def log_config(self, config: dict) -> None:
        # the commit and the machine change with every commit and host; params.yaml here is git-tracked
        # (what `dvc exp show` lists), so they go to W&B and each checkpoint's versions.json instead
        self.live.log_params({k: v for k, v in config.items() if k not in MACHINE_KEYS})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.live.step = step
        for name, value in metrics.items():
            if not name.startswith(TIMING_PREFIX):
                self.live.log_metric(name, value)
        self.live.next_step()

    def log_artifact(self, name: str, path: Path | None, kind: str, metadata: dict | None = None) -> None:
        """Nothing to do: the files are DVC stage outputs, versioned by their content hash already."""

    def log_image(self, name: str, path: Path) -> None:
        """Into ``<live_dir>/plots/images/<name>.png``: the stage declares it, `dvc plots show` renders it."""
        self.live.log_image(f"{name}.png", str(path))

    def log_video(self, name: str, path: Path, fps: int) -> None:
        """Nothing to do: DVC plots cannot show a video; the MP4 is a stage output already."""

    def log_table(self, name: str, rows: list[dict], x: str, y: str) -> None:
        """A bar chart of ``y`` per ``x`` (``<live_dir>/plots/custom/<name>.json``; `dvc plots show`)."""
        self.live.log_plot(name, [{x: str(r[x]), y: r[y]} for r in rows], x=y, y=x,
                           template="bar_horizontal", title=f"{y} per {x}")

    def log_summary(self, metrics: dict) -> None:
        """Into ``<live_dir>/metrics.json`` beside the last logged values (train's DVC metrics)."""
        _merge(self.live.summary, metrics)
        self.live.make_summary()

    def close(self) -> None:
        try:
            self.live.end()
        except FileNotFoundError as e:
            # Live.end()'s last act removes the VS Code signal file that every experiment of a queue
            # (`dvc queue start --jobs N`) shares in the main repo's .dvc/tmp/exps/run; when another
            # experiment removed it between dvclive's exists() and remove(), nothing is lost
            if Path(e.filename or "").name != DVCLIVE_SIGNAL_FILE:
                raise


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


class WandbTracker:
    def __init__(self, cfg: TrackingConfig):
        Path(cfg.wandb_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        # artifact files are staged here until uploaded (`wandb sync` of an offline run needs them)
        os.environ.setdefault("WANDB_DATA_DIR", str(Path(cfg.wandb_dir) / "data"))
        run_id = self._run_id(cfg)
        mode = cfg.wandb_mode
        problem = check_wandb_online(cfg.init_timeout) if mode == "online" else None
        if problem is not None:  # decided before wandb.init: a failed online init can leave W&B hanging
            log.warning(f"W&B online: {problem}; logging offline to {cfg.wandb_dir} instead. Upload later with "
                        f"`wandb sync {cfg.wandb_dir}/wandb/offline-run-*`")
            mode = "offline"
        self.run = self._init(cfg, mode, run_id)

    @staticmethod
    def _run_id(cfg: TrackingConfig) -> str:
        """The W&B run id of this run key when resuming, else a new one (remembered for a later resume)."""
        import wandb

        path = Path(cfg.wandb_dir) / RUN_IDS_FILE
        ids = read_json_artifact(path, "train") if path.is_file() else {}
        if cfg.job_type != "train":
            return wandb.util.generate_id()
        if cfg.resume_step is None or cfg.run_key not in ids:
            ids[cfg.run_key] = wandb.util.generate_id()
            path.write_text(json.dumps(ids, indent=2))
        return ids[cfg.run_key]

    @staticmethod
    def _init(cfg: TrackingConfig, mode: str, run_id: str):
        import wandb

        return wandb.init(
            project=cfg.wandb_project, mode=mode, dir=str(cfg.wandb_dir), id=run_id, resume="allow",
            job_type=cfg.job_type, group=cfg.run_key[:64] or None,
            settings=wandb.Settings(console="off", x_disable_stats=True, init_timeout=cfg.init_timeout),
        )

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_artifact(self, name: str, path: Path | None, kind: str, metadata: dict | None = None) -> None:
        """An immutable W&B artifact (a file or directory, or only metadata such as a dataset reference)."""
        import wandb

        artifact = wandb.Artifact(name, type=kind, metadata=metadata or {})
        if path is not None and Path(path).is_dir():
            # a checkpoint (gigabytes at full size) is never modified in place: W&B reads it where it is at
            # upload time (offline: at `wandb sync`) instead of staging a copy in the store and its cache
            artifact.add_dir(str(path), skip_cache=True, policy="immutable")
        elif path is not None:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def log_image(self, name: str, path: Path) -> None:
        import wandb

        self.run.log({name: wandb.Image(str(path))})

    def log_video(self, name: str, path: Path, fps: int) -> None:
        import wandb

        self.run.log({name: wandb.Video(str(path), fps=fps, format="mp4")})

    def log_table(self, name: str, rows: list[dict], x: str, y: str) -> None:
        import wandb

        columns = list(rows[0]) if rows else [x, y]
        self.run.log({name: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def log_summary(self, metrics: dict) -> None:
        self.run.summary.update(flatten_metrics(metrics))

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

    def log_artifact(self, name: str, path: Path | None, kind: str, metadata: dict | None = None) -> None:
        for t in self.trackers:
            t.log_artifact(name, path, kind, metadata)

    def log_image(self, name: str, path: Path) -> None:
        for t in self.trackers:
            t.log_image(name, path)

    def log_video(self, name: str, path: Path, fps: int) -> None:
        for t in self.trackers:
            t.log_video(name, path, fps)

    def log_table(self, name: str, rows: list[dict], x: str, y: str) -> None:
        for t in self.trackers:
            t.log_table(name, rows, x, y)

    def log_summary(self, metrics: dict) -> None:
        for t in self.trackers:
            t.log_summary(metrics)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


class NullTracker(MultiTracker):
    """What processes other than the first of a multi-GPU run log: nothing."""

    def __init__(self):
        super().__init__([])


def make_tracker(cfg: TrackingConfig) -> MultiTracker:
    """dvclive, and W&B unless disabled. W&B that fails to start (online: refused; offline: its local
    service timed out, seen with two runs starting at once on a loaded machine) is tried once more with
    twice the timeout, then left out with a warning: the run goes on and dvclive still logs."""
    trackers: list[Tracker] = [DvcLiveTracker(cfg.live_dir, cfg.resume_step)]
    if cfg.wandb_mode != "disabled":
        for attempt in (cfg, replace(cfg, init_timeout=2 * cfg.init_timeout)):
            try:
                trackers.append(WandbTracker(attempt))
                break
            except Exception as e:  # noqa: BLE001 - W&B is an observer: never the reason a run fails
                problem = f"{type(e).__name__}: {str(e)[:200]}"
                _teardown_wandb()
        else:
            log.warning(f"W&B ({cfg.wandb_mode}) failed to start twice ({problem}); going on without W&B, "
                        f"dvclive still logs to {cfg.live_dir}")
    return MultiTracker(trackers)


def _teardown_wandb() -> None:
    """Stop a W&B service a failed start left behind, so the next start does not attach to it."""
    try:
        import wandb

        wandb.teardown()
    except Exception:  # noqa: BLE001, S110 - nothing more to clean
        pass
