"""Full-size rehearsal of `dvc repro` on this machine (issue 30): every stage, a kill and a resume of
train, evaluate and one chunk from `vla serve`, with what each step costs. Not part of `make test`.

    python benchmarks/full_size_rehearsal.py [--work DIR] [--size full|tiny] [--steps N] [--keep]
                                             [--set KEY=VALUE ...]

``--size full`` (the lead's run, on a quiet machine: about 40 min, about 15 GB of RAM, and the disk
the checkpoints' copies need; the script warns when the free space looks short) rehearses
full-size Pi0.5 (random init, no hub) in bfloat16 with the LoRA preset ``expert`` at batch 1;
``--size tiny`` runs the repo's tiny policy through the same steps (a smoke test of this driver, a
few minutes). ``--set KEY=VALUE`` (repeatable; VALUE is YAML) overrides a params key after the
presets, e.g. ``--set preflight.memory_gib=64``.

What it does:

1. A scratch dir (``mkdtemp`` under ``--work``, default /var/tmp; only that dir is ever deleted):
   ``git clone`` of this repository's HEAD (uncommitted changes are NOT rehearsed: the script says
   when the workspace is dirty), ``shared`` linked to the repo's ``../shared``, a fresh store
   (``VLA_STORE=<work>/store``), ``WANDB_MODE=offline``, ``HF_HUB_OFFLINE=1``, the repo's
   ``.venv/bin`` first on PATH and ``PYTHONPATH=<clone>/src`` (checked: the clone's package wins over
   the venv's editable install).
2. The clone's params.yaml: the demo dataset with 224x224 cameras, 6 episodes of 40-60 frames, the
   shortest one held out (``norms.val_episodes``: evaluate has no key that limits its frames, so the
   held-out set is made small), evaluate's stride = ``policy.chunk_size`` (the largest allowed),
   ``train.steps`` = ``--steps`` with a save and a validation every ``steps // 2``, ``keep_last: 1``,
   ``val_samples: 2``, batch 1, ``preflight.probe: true``; the frame cache at the policy's resolution.
3. ``dvc repro -s <stage>`` for demo_data, validate, norms, frame_cache, preflight; train is
   interrupted with SIGINT to its process group (Ctrl-C; SIGKILL only if it has not exited 120 s
   later) as soon as the store holds its first complete checkpoint (a step dir, not ``.tmp``, that
   ``last_checkpoint.json`` names), then ``dvc repro -s train`` again must print ``resuming from``;
   then evaluate@best, evaluate@last, and two observation -> chunk round trips through `vla serve`
   on ``artifacts/train`` (``benchmarks/serve_latency.py``'s gRPC client).

What it measures, per step:

- wall: ``time.perf_counter`` around the subprocess.
- peak RSS: (a) of one process: ``ru_maxrss`` of ``os.wait4`` on the step's process, which Linux
  takes as the maximum over that process and every descendant it reaped (what GNU time's ``%M``
  prints; a process killed before its parent reaped it is missing from it); (b) of the process
  group: the largest sum of ``VmRSS`` over the group's processes, polled every 0.2 s (a lower
  bound; shared pages count once per process).
- DVC's own time: wall minus the lifetimes of the ``python stages/*.py`` processes (start from
  /proc's ``starttime``, end = last poll that saw them: within 0.2 s).
- hashing / saving / loading / copying: the depth-0 spans the library appends to ``VLA_PHASE_LOG``
  (one file per step), summed by kind; '—' when the library logged none.
- imports: a fresh process importing each stage script as a module (its module-level imports, not
  its main; imports made lazily inside the stage count as compute), timed once per script before
  the run after one warm-up, counted once per stage process (a forked child shares its parent's);
  serve: twice ``vla_pipeline.cli`` and the server module (client and server).
- compute: wall - DVC - spans - imports (marked * when no spans were logged: it then includes them).
- bytes: the store, ``artifacts/`` and ``.dvc/cache`` walked before and after the step; blocks on
  disk (st_blocks * 512), each inode once per tree, and once over the union of the three; the net
  change is reported.

At the end, per checkpoint the store keeps: the bytes its files need (st_size, each inode once) vs
the bytes on disk of those files and of every copy of their content (same size and md5) in the
store, ``artifacts/`` and ``.dvc/cache`` (each inode once; files of the other kept checkpoints are
not copies), with where the copies are. Acceptance (issue 30): at most 1.1x, PASS/FAIL. Also the link counts of the published
``model.safetensors`` files. Output: a Markdown table, printed and written to
``<work>/rehearsal.md``, and every number in ``<work>/rehearsal.json`` (machine, date, command
line, commit). Without ``--keep`` the scratch dir is deleted at the end (the two files are first
copied beside it); on a failure it is kept, and the failing step's last 40 lines are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("hashing", "saving", "loading", "copying")
PLACES = ("store", "artifacts", "dvc cache")
POLL_S = 0.2
KILL_GRACE_S = 120
LIMIT_RATIO = 1.1
PREP_STAGES = ("demo_data", "validate", "norms", "frame_cache", "preflight")
EVAL_STAGES = ("evaluate@best", "evaluate@last")
IMPORTED_STAGES = ("demo_data", "validate", "norms", "frame_cache", "preflight", "train", "evaluate")


# ---------------------------------------------------------------- bytes, each inode once

def walk_inodes(root: Path) -> dict[tuple[int, int], tuple[os.stat_result, Path]]:
    """Every regular file under ``root`` (links not followed), keyed by (st_dev, st_ino): each inode once."""
    out: dict[tuple[int, int], tuple[os.stat_result, Path]] = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = Path(base) / name
            try:
                st = path.lstat()
            except FileNotFoundError:  # removed while walking
                continue
            if path.is_symlink() or not path.is_file():
                continue
            out.setdefault((st.st_dev, st.st_ino), (st, path))
    return out


def disk_bytes(inodes: dict) -> int:
    """Bytes on disk: allocated blocks of each inode, once."""
    return sum(st.st_blocks * 512 for st, _ in inodes.values())


def size_bytes(inodes: dict) -> int:
    """Bytes the files need: their sizes, each inode once."""
    return sum(st.st_size for st, _ in inodes.values())


def usage(places: dict[str, Path]) -> dict[str, int]:
    """Bytes on disk per place and over all of them together ('all'), each inode once in each."""
    union: dict = {}
    out = {}
    for name, root in places.items():
        inodes = walk_inodes(root)
        out[name] = disk_bytes(inodes)
        union.update(inodes)
    out["all"] = disk_bytes(union)
    return out


def md5_of(path: Path, cache: dict, key) -> str:
    if key not in cache:
        h = hashlib.md5()  # noqa: S324  (content identity, as DVC's cache names files)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                h.update(block)
        cache[key] = h.hexdigest()
    return cache[key]


def copy_place(path: Path, places: dict[str, Path]) -> str:
    """``<place>/<first directory>`` of a copy (e.g. ``store/wandb``), for the breakdown."""
    for name, root in places.items():
        if path.is_relative_to(root):
            return "/".join([name, *path.relative_to(root).parts[:1]])
    return "elsewhere"


def checkpoint_footprint(ckpt: Path, union: dict, others: set, md5s: dict, places: dict[str, Path]) -> dict:
    """The bytes ``ckpt``'s files need vs the bytes on disk of them and of every copy of their content in
    ``union`` (inode -> (stat, path)), leaving out the inodes in ``others`` (other checkpoints' files)."""
    own = walk_inodes(ckpt)
    by_size: dict[int, list] = {}
    for key, (st, path) in union.items():
        if key not in own and key not in others:
            by_size.setdefault(st.st_size, []).append((key, st, path))
    held = dict(own)
    for key, (st, path) in own.items():
        for other, ost, opath in by_size.get(st.st_size, []):
            if other not in held and md5_of(opath, md5s, other) == md5_of(path, md5s, key):
                held[other] = (ost, opath)
    need, disk, sizes = size_bytes(own), disk_bytes(held), size_bytes(held)
    where: dict[str, int] = {}
    for key, (st, path) in held.items():
        if key not in own:
            label = copy_place(path, places)
            where[label] = where.get(label, 0) + st.st_blocks * 512
    return {"checkpoint": str(ckpt), "files": len(own), "needed_bytes": need, "disk_bytes": disk,
            "copies": len(held) - len(own), "copies_size_bytes": sizes - need, "copies_disk_bytes_by_place": where,
            "ratio": round(disk / need, 4) if need else None,
            "size_ratio": round(sizes / need, 4) if need else None}  # without the blocks' rounding


def checkpoints_report(store: Path, places: dict[str, Path]) -> list[dict]:
    """``checkpoint_footprint`` of every step directory the store keeps."""
    kept = sorted(p for p in store.glob("runs/*/checkpoints/*") if p.is_dir() and p.name.isdigit())
    union: dict = {}
    for root in places.values():
        union.update(walk_inodes(root))
    files = {p: set(walk_inodes(p)) for p in kept}
    md5s: dict = {}
    out = []
    for ckpt in kept:
        others = set().union(*(v for k, v in files.items() if k != ckpt))
        out.append(checkpoint_footprint(ckpt, union, others, md5s, places))
    return out


def published_links(artifacts: Path) -> dict[str, int]:
    """Link count of each published model.safetensors (3: store, artifacts and DVC cache share one copy)."""
    return {str(p.relative_to(artifacts.parent)): p.stat().st_nlink
            for p in sorted(artifacts.glob("train/**/model.safetensors"))}


# ---------------------------------------------------------------- the process group

def read_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent, process group, start time in clock ticks after boot) of ``pid``, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[2]), int(fields[19])


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def is_stage_process(pid: int) -> bool:
    """A ``python stages/<x>.py`` process (what a DVC stage runs), not the shell around it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return Path(argv[0]).name.startswith("python") and any(
        a.startswith("stages/") and a.endswith(".py") for a in argv[1:])


@dataclass
class GroupSampler:
    """Polls the process group ``pgid``: the largest sum of VmRSS, and each stage process's lifetime."""

    pgid: int
    peak_kib: int = 0
    stages: dict[int, list[float]] = field(default_factory=dict)  # pid -> [start, last seen (boot clock, s), parent]
    others: set[int] = field(default_factory=set)

    def poll(self) -> None:
        now, tick = time.clock_gettime(time.CLOCK_BOOTTIME), os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = read_stat(pid)
            if stat is None or stat[1] != self.pgid:
                continue
            total += rss_kib(pid)
            if pid in self.stages:
                self.stages[pid][1] = now
            elif pid not in self.others:
                if is_stage_process(pid):
                    self.stages[pid] = [stat[2] / tick, now, stat[0]]
                else:
                    self.others.add(pid)
        self.peak_kib = max(self.peak_kib, total)

    def stage_seconds(self) -> float:
        """The union of the stage processes' lifetimes."""
        total, end = 0.0, float("-inf")
        for start, last, _parent in sorted(self.stages.values()):
            total += max(0.0, last - max(start, end))
            end = max(end, last)
        return total

    def stage_processes(self) -> int:
        """Stage processes not forked by another one (a fork shares its parent's command line and imports)."""
        return sum(1 for _start, _last, parent in self.stages.values() if parent not in self.stages)


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None and stat[1] == pgid:
                out.append(int(entry.name))
    return out


def signal_group(pgid: int, sig: int) -> None:
    """``sig`` to the process group this script started (only while it still has members)."""
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)


def supervise(proc: subprocess.Popen, timeout: float, stop_when=None) -> dict:
    """Wait for ``proc`` (a process group leader) while sampling its group; SIGINT the group once
    ``stop_when()`` returns something (SIGKILL after KILL_GRACE_S), SIGKILL it at ``timeout``."""
    sampler, start, stopped, timed_out = GroupSampler(proc.pid), time.perf_counter(), None, False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        sampler.poll()
        elapsed = time.perf_counter() - start
        hit = stop_when() if stop_when is not None and stopped is None else None
        if hit:
            signal_group(proc.pid, signal.SIGINT)
            stopped = {"signal": "SIGINT", "after_s": round(elapsed, 2), "checkpoint": hit}
        elif stopped and stopped["signal"] == "SIGINT" and elapsed - stopped["after_s"] > KILL_GRACE_S:
            signal_group(proc.pid, signal.SIGKILL)
            stopped["signal"] = f"SIGINT, then SIGKILL after {KILL_GRACE_S} s"
        if elapsed > timeout and not timed_out:
            signal_group(proc.pid, signal.SIGKILL)
            timed_out = True
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    if stopped:
        stopped["exit_after_s"] = round(wall - stopped["after_s"], 2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    signal_group(proc.pid, signal.SIGKILL)  # what the group left behind, if anything
    return {"wall_s": wall, "rc": proc.returncode, "peak_rss_kib": rusage.ru_maxrss,
            "peak_rss_group_kib": sampler.peak_kib, "stage_process_s": sampler.stage_seconds(),
            "stage_processes": sampler.stage_processes(), "stopped": stopped, "timed_out": timed_out}


def read_spans(path: Path) -> dict[str, float] | None:
    """Depth-0 spans of ``VLA_PHASE_LOG`` summed by kind; None when none were logged."""
    sums, n = dict.fromkeys(KINDS, 0.0), 0
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("depth") == 0 and doc.get("kind") in sums:
                sums[doc["kind"]] += float(doc.get("seconds", 0.0))
                n += 1
    return sums if n else None


# ---------------------------------------------------------------- steps

class RehearsalError(RuntimeError):
    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


@dataclass
class Ctx:
    work: Path
    repo: Path
    env: dict
    timeout: float
    rows: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    imports: dict[str, float] = field(default_factory=dict)  # script -> seconds a fresh process takes to import it

    @property
    def store(self) -> Path:
        return self.work / "store"

    @property
    def places(self) -> dict[str, Path]:
        return {"store": self.store, "artifacts": self.repo / "artifacts", "dvc cache": self.repo / ".dvc" / "cache"}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def run_step(ctx: Ctx, name: str, cmd: list[str], stop_when=None, *, script: str | None = None,
             imports_n: int | None = None) -> dict:
    """Run one step in the clone, measured (wall, RSS, stage processes, spans, bytes); its row."""
    log, phases = ctx.work / "logs" / f"{slug(name)}.log", ctx.work / "phases" / f"{slug(name)}.jsonl"
    before = usage(ctx.places)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ctx.repo, env={**ctx.env, "VLA_PHASE_LOG": str(phases)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        row = {"step": name, "command": " ".join(cmd), **supervise(proc, ctx.timeout, stop_when)}
    after = usage(ctx.places)
    spans, dvc = read_spans(phases), cmd[0] == "dvc"
    row["dvc_s"] = row["wall_s"] - row["stage_process_s"] if dvc else None
    script = script or cmd[-1].split("@")[0]
    row["imports_s"] = ctx.imports.get(script, 0.0) * (row["stage_processes"] if imports_n is None else imports_n)
    row["spans"] = spans
    row["compute_s"] = row["wall_s"] - (row["dvc_s"] or 0.0) - sum((spans or {}).values()) - row["imports_s"]
    row["bytes_before"], row["bytes_after"] = before, after
    row["bytes_added"] = {k: after[k] - before[k] for k in after}
    row["log"] = str(log)
    ctx.rows.append(row)
    print(f"    rc {row['rc']}, {row['wall_s']:.1f} s, peak RSS {fmt_bytes(row['peak_rss_kib'] * 1024)}, "
          f"+{fmt_bytes(row['bytes_added']['all'])} on disk", flush=True)
    if row["timed_out"]:
        raise RehearsalError(f"{name} ran past its {ctx.timeout:.0f} s timeout (killed)", log)
    return row


def require_ok(row: dict) -> dict:
    if row["rc"] != 0:
        raise RehearsalError(f"{row['step']} failed (exit {row['rc']})", Path(row["log"]))
    return row


def dvc_repro(stage: str) -> list[str]:
    return ["dvc", "repro", "--single-item", stage]


def first_checkpoint(store: Path) -> str | None:
    """A step dir of the store that a run's ``last_checkpoint.json`` names (complete: renamed from .tmp)."""
    for run in sorted(store.glob("runs/*")):
        try:
            doc = json.loads((run / "last_checkpoint.json").read_text())
        except (OSError, ValueError):
            continue
        step = run / str(doc.get("path", ""))
        if doc.get("path") and step.is_dir() and not step.name.endswith(".tmp"):
            return str(step)
    return None


def rehearse_train(ctx: Ctx) -> None:
    """train, interrupted at its first complete checkpoint; train again, which must resume."""
    killed = run_step(ctx, "train (killed)", dvc_repro("train"), stop_when=lambda: first_checkpoint(ctx.store))
    log = Path(killed["log"])
    if killed["stopped"] is None:
        why = "finished" if killed["rc"] == 0 else f"failed (exit {killed['rc']})"
        raise RehearsalError(f"train {why} before a complete checkpoint was seen in the store", log)
    if killed["rc"] == 0:
        raise RehearsalError("train finished before the interrupt landed: nothing to resume (use more --steps)", log)
    print(f"    interrupted with {killed['stopped']['signal']} at {killed['stopped']['checkpoint']}", flush=True)
    resumed = require_ok(run_step(ctx, "train (resumed)", dvc_repro("train")))
    lines = [s for s in Path(resumed["log"]).read_text(errors="replace").splitlines() if "resuming from" in s]
    if not lines:
        raise RehearsalError("the second train did not resume: no 'resuming from' in its output",
                              Path(resumed["log"]))
    resumed["resumed"] = lines[0].strip()
    print(f"    {lines[0].strip()}", flush=True)


def rehearse_serve(ctx: Ctx) -> None:
    out, server_log = ctx.work / "serve.json", ctx.work / "logs" / "serve_server.log"
    cmd = [ctx.info["python"], str(Path(__file__).resolve()), "--serve-client", "--out", str(out),
           "--server-log", str(server_log)]
    row = require_ok(run_step(ctx, "serve (2 chunks)", cmd, script="serve", imports_n=2))
    row["serve"] = json.loads(out.read_text())
    trips = ", ".join(f"{t * 1000:.0f} ms" for t in row["serve"]["round_trips_s"])
    print(f"    server up in {row['serve']['startup_s']:.1f} s; round trips {trips}", flush=True)


def start_serve(server_log: Path) -> tuple[subprocess.Popen, str, int, float]:
    """`vla serve artifacts/train` on a free port: (process, checkpoint id, port, seconds until serving)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vla_pipeline.cli", "serve", "artifacts/train", "--port", "0",
                             "--noise-seed", "0", "--session-timeout", "3600"],
                            stdout=subprocess.PIPE, stderr=open(server_log, "w"), text=True)  # noqa: SIM115
    line = proc.stdout.readline()
    found = re.search(r"checkpoint id (\S+)\) on (\S+):(\d+),", line)
    if not found:
        proc.kill()
        raise SystemExit(f"vla serve did not start: {line!r}; its log: {server_log}")
    return proc, found.group(1), int(found.group(3)), time.perf_counter() - start


def serve_client(out: Path, server_log: Path, n: int = 2) -> None:
    """(In the clone, as a step.) ``n`` observation -> chunk round trips through `vla serve`, with
    benchmarks/serve_latency.py's client; the observations of the checkpoint's first held-out episode."""
    import yaml

    sys.path.insert(0, str(Path.cwd() / "benchmarks"))
    from serve_latency import replay_observations, round_trips, server_compute
    from vla_pipeline.checkpoint.io import resolve_checkpoint

    pretrained = resolve_checkpoint(Path("artifacts/train"), "best")
    episode = json.loads((pretrained / "split.json").read_text())["val"][0]
    chunk = json.loads((pretrained / "config.json").read_text())["chunk_size"]
    dataset = Path(yaml.safe_load(Path("params.yaml").read_text())["dataset"]["root"])
    robot, obs, task = replay_observations(dataset, episode, n)
    server, ckpt_id, port, startup = start_serve(server_log)
    try:
        times = round_trips(port, robot, obs, task, ckpt_id, chunk)
    finally:
        server.terminate()
        server.wait(60)
    out.write_text(json.dumps({"checkpoint": str(pretrained), "checkpoint_id": ckpt_id, "startup_s": startup,
                               "round_trips_s": times, "server_compute_s": server_compute(server_log)}, indent=2))


# ---------------------------------------------------------------- set-up

def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def make_clone(work: Path) -> Path:
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True, timeout=600)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (work / "shared").symlink_to(shared)
    for sub in ("logs", "phases", "store"):
        (work / sub).mkdir()
    return repo


def make_env(work: Path, repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VLA_PHASE_LOG"}
    env.update(VLA_STORE=str(work / "store"), WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(repo / "src"))
    return env


def check_clone_code(ctx: Ctx) -> None:
    """The stages must import the clone's package, not the venv's editable install of this workspace."""
    done = subprocess.run([ctx.info["python"], "-c", "import vla_pipeline; print(vla_pipeline.__file__)"],
                          cwd=ctx.repo, env=ctx.env, capture_output=True, text=True, timeout=300, check=True)
    where = Path(done.stdout.strip()).resolve()
    print(f"vla_pipeline from {where}", flush=True)
    if not where.is_relative_to((ctx.repo / "src").resolve()):
        raise RehearsalError(f"the stages would import {where}, not the clone's code under {ctx.repo / 'src'}")


def time_imports(ctx: Ctx) -> dict[str, float]:
    """Seconds a fresh process takes to import each stage script as a module (its imports, not its
    main), after one warm-up; ``serve``: the `vla serve` side (vla_pipeline.cli and the server)."""
    code = {s: f"import sys; sys.path.insert(0, 'stages'); import {s}" for s in IMPORTED_STAGES}
    code["serve"] = "import vla_pipeline.cli, vla_pipeline.deploy.server"
    out = {}
    for name in ("train", *code):
        start = time.perf_counter()
        subprocess.run([ctx.info["python"], "-c", code[name]], cwd=ctx.repo, env=ctx.env, check=True, timeout=600,
                       capture_output=True)
        out[name] = time.perf_counter() - start
    return out


def preset(size: str, steps: int, chunk: int) -> dict:
    """The rehearsal's params (dotted keys)."""
    half = max(steps // 2, 1)
    keys = {"demo.num_episodes": 6, "demo.min_length": 40, "demo.max_length": 60, "demo.image_height": 224,
            "demo.image_width": 224, "frame_cache.resize": True, "train.steps": steps, "train.save_every": half,
            "train.eval_every": half, "train.keep_last": 1, "train.batch_size": 1, "train.val_samples": 2,
            "train.log_every": 1, "preflight.probe": True, "evaluate.stride": chunk}
    if size == "full":
        keys.update({"policy.size": "full", "policy.dtype": "bfloat16", "train.peft.preset": "expert"})
    return keys


def edit_params(path: Path, keys: dict) -> None:
    """Set dotted keys in params.yaml (a round trip that keeps its comments); an unknown key is refused."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(path)
    for dotted, value in keys.items():
        node, parts = doc, dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if hasattr(node, "get") else None
        if not hasattr(node, "get") or parts[-1] not in node:
            raise RehearsalError(f"params.yaml has no key {dotted}")
        node[parts[-1]] = value
    yaml.dump(doc, path)


def parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, not {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def shortest_episode(dataset: Path) -> tuple[int, int]:
    """(episode index, length) of the dataset's shortest episode."""
    import pyarrow.parquet as pq

    table = pq.read_table(dataset / "meta" / "episodes", columns=["episode_index", "length"]).to_pydict()
    length, index = min(zip(table["length"], table["episode_index"], strict=True))
    return int(index), int(length)


# ---------------------------------------------------------------- report

def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{sign}{n / scale:.2f} {unit}"
    return f"{sign}{n} B"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} s" if abs(x) < 10 else f"{x:.1f} s"


def table(rows: list[dict]) -> str:
    head = ("step", "wall", "compute", "imports", *KINDS, "DVC", "peak RSS (process)", "peak RSS (group Σ)",
            "+store", "+artifacts", "+dvc cache", "+all, unique")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        spans = r["spans"] or {}
        compute = fmt_s(r["compute_s"]) + ("" if r["spans"] else "*")
        cells = (r["step"], fmt_s(r["wall_s"]), compute, fmt_s(r["imports_s"]),
                 *(fmt_s(spans.get(k)) for k in KINDS), fmt_s(r["dvc_s"]),
                 fmt_bytes(r["peak_rss_kib"] * 1024), fmt_bytes(r["peak_rss_group_kib"] * 1024),
                 *(fmt_bytes(r["bytes_added"][k]) for k in (*PLACES, "all")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((int(s.split()[1]) * 1024 for s in Path("/proc/meminfo").read_text().splitlines()
                if s.startswith("MemTotal:")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": mem, "python": sys.version.split()[0]}


def caption(ctx: Ctx) -> str:
    m = ctx.info["machine"]
    return (f"`{ctx.info['command']}` at {ctx.info['commit'][:10]}{' (workspace dirty: not rehearsed)' if ctx.info['dirty'] else ''}, "
            f"{ctx.info['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM. "
            f"Size {ctx.info['size']}, {ctx.info['steps']} train steps. Peak RSS (process): ru_maxrss of os.wait4 on "
            f"the step's process (the largest single process of its tree, as GNU time's %M); (group Σ): the "
            f"largest sum of VmRSS over its process group, polled every {POLL_S} s. DVC: wall minus the "
            f"`python stages/*.py` processes' lifetimes. Spans: depth-0 VLA_PHASE_LOG spans by kind (— : none "
            f"logged; compute marked * then includes them). imports: a fresh process importing the stage script "
            f"(measured once per script before the run) per stage process; serve: 2 x vla_pipeline.cli and the "
            f"server's. compute: wall - DVC - spans - imports. Bytes: net change of blocks on disk, each inode "
            f"once.")


def summary_lines(ctx: Ctx) -> list[str]:
    out = []
    for c in ctx.info.get("checkpoints", []):
        verdict = "PASS" if c["ratio"] is not None and c["ratio"] <= LIMIT_RATIO else "FAIL"
        out.append(f"- {verdict}: checkpoint {c['checkpoint']}: needs {fmt_bytes(c['needed_bytes'])}, "
                   f"{fmt_bytes(c['disk_bytes'])} on disk with its {c['copies']} copies "
                   f"(ratio {c['ratio']}; acceptance <= {LIMIT_RATIO}; by file sizes, without block "
                   f"rounding: {c['size_ratio']}); the copies: "
                   + (", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(c["copies_disk_bytes_by_place"].items()))
                      or "none"))
    for path, links in ctx.info.get("published_links", {}).items():
        out.append(f"- {path}: link count {links} (3: store, artifacts and DVC cache share one copy)")
    for row in ctx.rows:
        if row.get("serve"):
            trips = ", ".join(f"{t * 1000:.0f} ms" for t in row["serve"]["round_trips_s"])
            out.append(f"- vla serve: up in {row['serve']['startup_s']:.1f} s, round trips {trips}")
        if row.get("resumed"):
            out.append(f"- train resumed: `{row['resumed']}`")
        if row.get("stopped"):
            stop = row["stopped"]
            out.append(f"- train interrupted {stop['after_s']} s in ({stop['signal']}; exited {stop['exit_after_s']} s "
                       f"after the signal) at {stop['checkpoint']}")
    return out


def write_report(ctx: Ctx) -> str:
    text = "\n".join([caption(ctx), "", table(ctx.rows), "", *summary_lines(ctx), ""])
    (ctx.work / "rehearsal.md").write_text(text)
    doc = {**ctx.info, "imports_s": ctx.imports, "steps_measured": ctx.rows}
    (ctx.work / "rehearsal.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return text


# ---------------------------------------------------------------- main

def prepare(args, work: Path) -> Ctx:
    """Clone, environment, checks; the context every step runs in."""
    dirty = git("status", "--porcelain").splitlines()
    repo = make_clone(work)
    ctx = Ctx(work=work, repo=repo, env=make_env(work, repo), timeout=3600.0 if args.size == "full" else 600.0)
    ctx.info = {"machine": machine(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git("rev-parse", "HEAD").strip(),
                "dirty": dirty, "size": args.size, "steps": args.steps, "work": str(work),
                "python": shutil.which("python", path=ctx.env["PATH"]) or sys.executable}
    print(f"work dir {work} (clone of {ctx.info['commit'][:10]})", flush=True)
    if dirty:
        print(f"NOTE: the workspace has {len(dirty)} uncommitted path(s); the rehearsal runs the commit, "
              f"not them", flush=True)
    free = shutil.disk_usage(work).free
    ctx.info["free_bytes_at_start"] = free
    if args.size == "full" and free < 45e9:
        print(f"WARNING: {fmt_bytes(free)} free under {work}; before issue 30's fixes a full-size run may keep up "
              f"to 3 copies of 2 checkpoints of about 7.5 GB each", flush=True)
    check_clone_code(ctx)
    ctx.imports = time_imports(ctx)
    print("imports per process: " + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.imports.items()), flush=True)
    return ctx


def set_params(ctx: Ctx, args) -> None:
    import yaml

    chunk = yaml.safe_load((ctx.repo / "params.yaml").read_text())["policy"]["chunk_size"]
    keys = {**preset(args.size, args.steps, chunk), **parse_sets(args.set)}
    edit_params(ctx.repo / "params.yaml", keys)
    ctx.info["params"] = keys


def rehearse(ctx: Ctx, args) -> None:
    set_params(ctx, args)
    require_ok(run_step(ctx, "demo_data", dvc_repro("demo_data")))
    root = ctx.repo / ctx.info["params"].get("dataset.root", "data/demo")
    episode, length = shortest_episode(root)
    held_out = {"norms.val_episodes": [episode]}
    if "norms.val_episodes" not in ctx.info["params"]:
        edit_params(ctx.repo / "params.yaml", held_out)
        ctx.info["params"].update(held_out)
    print(f"    held out: episode {episode} ({length} frames)", flush=True)
    for stage in PREP_STAGES[1:]:
        require_ok(run_step(ctx, stage, dvc_repro(stage)))
    rehearse_train(ctx)
    for stage in EVAL_STAGES:
        require_ok(run_step(ctx, stage, dvc_repro(stage)))
    rehearse_serve(ctx)
    ctx.info["checkpoints"] = checkpoints_report(ctx.store, ctx.places)
    ctx.info["published_links"] = published_links(ctx.repo / "artifacts")
    ctx.info["acceptance_pass"] = bool(ctx.info["checkpoints"]) and all(
        c["ratio"] is not None and c["ratio"] <= LIMIT_RATIO for c in ctx.info["checkpoints"])


def tail(log: Path | None, n: int = 40) -> str:
    if log is None or not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def finish(ctx: Ctx, keep: bool) -> None:
    """Without --keep: copy the two reports beside the scratch dir, then delete it (this script made it)."""
    if keep:
        print(f"kept {ctx.work} (--keep)")
        return
    for name in ("rehearsal.md", "rehearsal.json"):
        shutil.copy2(ctx.work / name, ctx.work.parent / f"{ctx.work.name}.{name.split('.')[1]}")
    print(f"reports copied to {ctx.work.parent / ctx.work.name}.md/.json; deleting {ctx.work} (the scratch dir this "
          f"script created, its store included)", flush=True)
    shutil.rmtree(ctx.work)


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="parent of the scratch dir this script creates (default /var/tmp)")
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--steps", type=int, help="train steps (default: 4 at full size, 20 tiny: the tiny model's "
                                             "steps are too fast for the interrupt to land between two saves)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (clone, store, logs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params key after the presets (YAML value), e.g. preflight.memory_gib=64")
    p.add_argument("--serve-client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--server-log", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 4 if args.size == "full" else 20
    if args.steps < 2:
        p.error("--steps must be at least 2 (a save before the interrupt, a step after it)")
    return args


def main() -> int:
    # a shell starts a background job (`cmd &`) with SIGINT ignored, and every child inherits that: Python then
    # installs no KeyboardInterrupt handler, and the Ctrl-C the rehearsal sends to train would be ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = parse_args()
    if args.serve_client:
        serve_client(args.out, args.server_log)
        return 0
    parent = args.work or Path("/var/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vla-rehearsal-", dir=parent)).resolve()
    ctx = Ctx(work=work, repo=work / "repo", env={}, timeout=0.0)
    try:
        ctx = prepare(args, work)
        rehearse(ctx, args)
    except (RehearsalError, subprocess.SubprocessError) as e:
        log = getattr(e, "log", None)
        print(f"\nREHEARSAL FAILED: {e}\n--- last 40 lines of {log} ---\n{tail(log)}" if log else
              f"\nREHEARSAL FAILED: {e}", file=sys.stderr)
        if ctx.info:
            write_report(ctx)
        print(f"work dir kept: {work}", file=sys.stderr)
        return 1
    print("\n" + write_report(ctx))
    print(f"acceptance (bytes on disk per kept checkpoint <= {LIMIT_RATIO}x what it needs): "
          f"{'PASS' if ctx.info['acceptance_pass'] else 'FAIL'}")
    finish(ctx, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
