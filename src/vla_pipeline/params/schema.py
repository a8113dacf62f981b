"""The schema of params.yaml: every key the code knows, its type and its allowed values.

``check_params`` refuses, before any work starts, what would otherwise be silently ignored or cast:
an unknown key (a typo, or one added with ``dvc exp run -S +train.lrr=...``) with the closest valid
key; a float or a bool where an integer is expected (``int(1.5)`` is 1, ``int(True)`` is 1); values
out of range; augmentation ranges in the wrong order. Every problem is listed at once, each naming the
key, the value and what is allowed. The library never reads params.yaml: the entry points (stages,
``vla``) call this on the mapping they read."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vla_pipeline.errors import ConfigError

PHASE_KEYS = ("steps", "batch_size", "lr", "warmup_steps", "decay_steps", "decay_lr", "log_every", "save_every",
              "eval_every")


@dataclass(frozen=True)
class Key:
    """One leaf of the schema."""

    kind: str  # int | float | bool | str | int_list | range | dict
    null: bool = False  # null (None) allowed
    choices: tuple = ()  # allowed values (for str, or extra literal values such as "auto" for int/bool)
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself not allowed
    hi_open: bool = False
    rule: Callable[[Any], str | None] | None = None  # extra check; returns the problem, if any
    allowed: str = ""  # what to say is allowed, when the kind and bounds do not say it well

    def describe(self) -> str:
        if self.allowed:
            return self.allowed
        parts = [{"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                  "int_list": "a list of integers", "range": "a [low, high] pair of numbers",
                  "dict": "a mapping"}[self.kind]]
        if self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
            parts.append(" and ".join(p for p in (lo, hi) if p))
        if self.choices:
            parts = [f"one of {list(self.choices)}"] if self.kind == "str" else parts + [
                f"or one of {list(self.choices)}"]
        if self.null:
            parts.append("or null")
        return " ".join(parts)


def _int(**kw) -> Key:
    return Key("int", **kw)


def _float(**kw) -> Key:
    return Key("float", **kw)


def _str(*choices: str, **kw) -> Key:
    return Key("str", choices=choices, **kw)


BOOL = Key("bool")
SWITCH = Key("bool", choices=("auto",), allowed="auto, true or false")
PATH = Key("str", allowed="a path")
COUNT_OR_AUTO = _int(lo=0, choices=("auto",), allowed="an integer >= 0 or auto")


def _ordered(value) -> str | None:
    return None if value is None or value[0] <= value[1] else f"the range is inverted: low {value[0]} > high {value[1]}"


def _jitter_range(lo: float, hi: float | None = None) -> Key:
    bound = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
    return Key("range", null=True, lo=lo, hi=hi, rule=_ordered, allowed=f"null or [low, high] with low <= high, both {bound}")


DIMS_BLOCK = {"width": _int(lo=1), "depth": _int(lo=1), "mlp_dim": _int(lo=1), "num_heads": _int(lo=1),
              "num_kv_heads": _int(lo=1), "head_dim": _int(lo=1)}
WANDB = {"project": Key("str"), "mode": _str("offline", "online", "disabled"),
         "dir": Key("str", null=True, allowed="null (<store>/wandb) or a directory")}

SCHEMA: dict[str, Any] = {
    "base": {"seed": _int(lo=0), "store": Key("str", null=True, allowed="auto, null or a directory")},
    "dataset": {"root": PATH, "contract": PATH, "exclude_episodes": Key("int_list", null=True)},
    "demo": {"root": PATH, "repo_id": Key("str"), "num_episodes": _int(lo=2), "min_length": _int(lo=1),
             "max_length": _int(lo=1), "image_height": _int(lo=8), "image_width": _int(lo=8), "fps": _int(lo=1),
             "seed": _int(lo=0), "poison": Key("str", null=True, allowed="null or a fault class of data/faults.py"),
             "poison_episodes": Key("int_list", null=True)},
    "validate": {"report": PATH, "decode_samples": _int(lo=0), "dry_run": BOOL, "quality": {
        "still_fraction": _float(lo=0, hi=1), "frozen_state_frames": _int(lo=2), "follow_min_corr": _float(lo=-1, hi=1),
        "saturation_fraction": _float(lo=0, hi=1, lo_open=True), "glitch_fraction": _float(lo=0, lo_open=True),
        "wrap_fraction": _float(lo=0, lo_open=True), "idle_seconds": _float(lo=0, lo_open=True),
        "action_state_fraction": _float(lo=0), "lag_frames": _int(lo=1), "scale_ratio": _float(lo=1, lo_open=True),
        "duplicate_fraction": _float(lo=0), "drift_fraction": _float(lo=0, lo_open=True)}},
    "norms": {"out_dir": PATH, "val_fraction": _float(lo=0, hi=1, lo_open=True, hi_open=True),
              "split_seed": _int(lo=0), "val_episodes": Key("int_list", null=True)},
    "frame_cache": {"enable": BOOL, "dir": PATH, "resize": BOOL, "num_workers": _int(lo=0)},
    "policy": {
        "size": _str("tiny", "full"),
        "dims": {"vlm": DIMS_BLOCK, "expert": DIMS_BLOCK,
                 "vision": {"hidden_size": _int(lo=1), "intermediate_size": _int(lo=1),
                            "num_hidden_layers": _int(lo=1), "num_attention_heads": _int(lo=1),
                            "patch_size": _int(lo=1), "image_size": _int(lo=1)},
                 "vocab_size": _int(lo=1)},
        "tokenizer": Key("str", allowed="local, a hub id or a directory"),
        "pretrained": Key("str", null=True, allowed="null, a hub id, a directory or a .safetensors file"),
        "chunk_size": _int(lo=1), "n_action_steps": _int(lo=1), "num_inference_steps": _int(lo=1),
        "tokenizer_max_length": _int(lo=1), "dtype": _str("float32", "bfloat16"),
        "normalization": _str("QUANTILES", "MEAN_STD"),
    },
    "train": {
        "launcher": Key("str"), "out_dir": PATH, "live_dir": PATH,
        "phase": Key("str", allowed="a phase named under `phases`"),
        "steps": _int(lo=1, null=True), "batch_size": _int(lo=1, null=True),
        "lr": _float(lo=0, lo_open=True, null=True), "warmup_steps": _int(lo=0, null=True),
        "decay_steps": _int(lo=1, null=True), "decay_lr": _float(lo=0, null=True),
        "log_every": _int(lo=1, null=True), "save_every": _int(lo=0, null=True), "eval_every": _int(lo=0, null=True),
        "keep_last": _int(lo=0), "val_samples": _int(lo=1), "resume": _str("auto", "never"),
        "weight_decay": _float(lo=0), "grad_clip_norm": _float(lo=0, lo_open=True),
        "num_workers": COUNT_OR_AUTO, "pin_memory": SWITCH, "prefetch_factor": _int(lo=1),
        "device": _str("auto", "cpu", "cuda"), "precision": _str("auto", "bf16", "fp16", "fp32"),
        "gradient_checkpointing": SWITCH, "compile": SWITCH, "deterministic": BOOL,
        "lr_scaling": _str("none", "linear", "sqrt"), "attention": _str("auto", "eager", "sdpa"),
        "fused_optimizer": SWITCH, "tf32": SWITCH, "trim_prompt_padding": BOOL,
        "freeze": Key("list", null=True, choices=("vision", "language", "vlm", "expert_only"),
                      allowed="a list of: vision, language, vlm, expert_only"),
        "peft": {"preset": _str("openpi", "expert", "explicit", null=True), "targets": _str(null=True),
                 "r": _int(lo=1, null=True), "alpha": _float(lo=0, lo_open=True, null=True),
                 "dropout": _float(lo=0, hi=1, hi_open=True)},
        "ema": {"decay": _float(lo=0, hi=1, lo_open=True, hi_open=True, null=True)},
        "augment": {
            "enable": BOOL, "seed": _int(lo=0), "max_num_transforms": _int(lo=1),
            "brightness": _jitter_range(0), "contrast": _jitter_range(0), "saturation": _jitter_range(0),
            "hue": _jitter_range(-0.5, 0.5), "sharpness": _jitter_range(0),
            "crop_scale": _float(lo=0.5, hi=1, null=True),
        },
        "wandb": {**WANDB, "init_timeout": _float(lo=0, lo_open=True), "log_checkpoints": BOOL},
    },
    "phases": "phases",  # checked by _check_phases: any phase name, each with the PHASE_KEYS
    "preflight": {"report": PATH, "probe": BOOL, "memory_gib": _float(null=True, lo=0, lo_open=True)},
    "evaluate": {
        "out_dir": PATH, "stride": _int(lo=1, null=True), "batch_size": _int(lo=1), "num_workers": COUNT_OR_AUTO,
        "noise_seed": _int(lo=0), "saturation_margin": _float(lo=0, hi=0.5, hi_open=True), "videos": BOOL,
        "device": _str("cpu", "cuda"), "wandb": WANDB,
    },
}
PHASE_SCHEMA = {k: SCHEMA["train"][k] for k in PHASE_KEYS}


@dataclass
class _Problems:
    lines: list[str] = field(default_factory=list)

    def add(self, key: str, value: Any, spec_or_text: Key | str) -> None:
        allowed = spec_or_text.describe() if isinstance(spec_or_text, Key) else spec_or_text
        self.lines.append(f"'{key}' = {value!r}: {allowed}")


def _leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    out = []
    for name, node in schema.items():
        out.append(prefix + name)
        if isinstance(node, dict):
            out.extend(_leaf_keys(node, f"{prefix}{name}."))
    return out


ALL_KEYS = _leaf_keys(SCHEMA)


def _closest(dotted: str, siblings: list[str]) -> str:
    match = difflib.get_close_matches(dotted, siblings + ALL_KEYS, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _as_number(value) -> float | None:
    """A YAML number, or a string PyYAML left unparsed (``1e-3``); never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_leaf(key: str, value: Any, spec: Key, problems: _Problems) -> None:
    if value is None:
        if not spec.null:
            problems.add(key, value, spec)
        return
    if spec.choices and spec.kind != "list" and value in spec.choices and not isinstance(value, bool):
        return
    if spec.kind == "bool":
        if not isinstance(value, bool):
            problems.add(key, value, spec)
        return
    if spec.kind == "str":
        if not isinstance(value, str) or not value or (spec.choices and value not in spec.choices):
            problems.add(key, value, spec)
        return
    if spec.kind == "int_list":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            problems.add(key, value, "a list of episode indices (integers >= 0), or null")
        return
    if spec.kind == "list":
        if not isinstance(value, list) or any(v not in spec.choices for v in value):
            problems.add(key, value, spec)
        return
    if spec.kind == "range":
        pair = value if isinstance(value, list) and len(value) == 2 else None
        numbers = [_as_number(v) for v in pair] if pair else None
        if numbers is None or None in numbers or not all(_in_bounds(n, spec) for n in numbers):
            problems.add(key, value, spec)
        elif spec.rule and (problem := spec.rule(numbers)):
            problems.add(key, value, f"{problem}; {spec.describe()}")
        return
    number = _as_number(value)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f" (not {type(value).__name__} {value!r})" if number is not None or isinstance(value, bool) else ""
            problems.add(key, value, spec.describe() + hint)
            return
    elif number is None or not math.isfinite(number):
        problems.add(key, value, spec)
        return
    if not _in_bounds(number, spec):
        problems.add(key, value, spec)


def _in_bounds(number: float, spec: Key) -> bool:
    if spec.lo is not None and (number < spec.lo or (spec.lo_open and number == spec.lo)):
        return False
    return not (spec.hi is not None and (number > spec.hi or (spec.hi_open and number == spec.hi)))


def _check_node(prefix: str, node: Any, schema: dict, problems: _Problems) -> None:
    if not isinstance(node, dict):
        problems.add(prefix.rstrip("."), node, "a mapping of the keys docs/parameters.md lists")
        return
    for name, value in node.items():
        key = f"{prefix}{name}"
        if name not in schema:
            problems.lines.append(f"unknown key '{key}'{_closest(key, [prefix + k for k in schema])}")
            continue
        spec = schema[name]
        if spec == "phases":
            _check_phases(value, problems)
        elif isinstance(spec, dict):
            _check_node(f"{key}.", value, spec, problems)
        else:
            _check_leaf(key, value, spec, problems)
    for name in schema:
        if name not in node:
            problems.lines.append(f"missing key '{prefix}{name}'")


def _check_phases(phases: Any, problems: _Problems) -> None:
    if not isinstance(phases, dict) or not phases:
        problems.add("phases", phases, "a mapping of phase names to their train defaults")
        return
    for name, values in phases.items():
        _check_node(f"phases.{name}.", values, PHASE_SCHEMA, problems)


def check_params(params: Any, source: str = "params.yaml") -> None:
    """Refuse a params mapping that does not follow SCHEMA (every problem at once)."""
    problems = _Problems()
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    _check_node("", params, SCHEMA, problems)
    phase = (params.get("train") or {}).get("phase") if isinstance(params.get("train"), dict) else None
    phases = params.get("phases")
    if isinstance(phases, dict) and phases and phase is not None and phase not in phases:
        problems.add("train.phase", phase, f"one of the phases defined under `phases`: {list(phases)}")
    augment = ((params.get("train") or {}).get("augment")) if isinstance(params.get("train"), dict) else None
    if isinstance(augment, dict) and isinstance(augment.get("enable"), bool) and augment["enable"] and not any(
            augment.get(k) is not None for k in ("brightness", "contrast", "saturation", "hue", "sharpness",
                                                 "crop_scale")):
        problems.lines.append("'train.augment.enable' is true but no transform is configured: set a range "
                              "(e.g. brightness: [0.9, 1.1]) or enable: false")
    if problems.lines:
        listing = "\n  ".join(problems.lines)
        raise ConfigError(f"{source}: {len(problems.lines)} problem(s):\n  {listing}\n"
                          f"docs/parameters.md lists every key; nothing was run")
