"""The starter contract's YAML text, with every value explained in a comment and every guess marked."""

from __future__ import annotations

from pathlib import Path

from vla_pipeline.data.contract_init.config import MIN_PAD_FRACTION, InitConfig, Starter
from vla_pipeline.data.contract_init.yaml_text import (
    aligned_rows,
    comment_lines,
    format_number,
    format_value,
    quote,
)


def render_starter(s: Starter, cfg: InitConfig, info: dict, *, action: dict, state: dict | None,
                   state_lacks: list[str], unit_why: dict, jump: tuple, deviation: float | None, semantics_hint: str,
                   counts: tuple[int, int]) -> str:
    lines = _header(s, cfg, info, counts)
    lines += _keys(s, cfg, action=action, state=state, state_lacks=state_lacks)
    lines += _joints_and_units(s, cfg, action=action, semantics_hint=semantics_hint, unit_why=unit_why)
    lines += _ranges(s, cfg, action=action, state=state, state_lacks=state_lacks)
    lines += _limits(s, cfg, jump=jump, deviation=deviation)
    return "\n".join(lines) + "\n"


def _header(s: Starter, cfg: InitConfig, info: dict, counts: tuple[int, int]) -> list[str]:
    root = Path(cfg.dataset_root)
    robot = str(info.get("robot_type") or "")
    lines = comment_lines(f"Starter contract written by `vla contract init` from {root} ({counts[0]} episodes, "
                          f"{counts[1]} frames). Values come from meta/info.json and the data; lines marked "
                          f"'guessed: confirm' or 'confirm' need a look before training. Check the result with:")
    lines.append(f"#   vla validate {root} --contract {cfg.out}")
    return lines + aligned_rows([
        (f"name: {quote(s.name)}", "the contract's name, in messages and checkpoints"),
        (f"robot: {quote(robot)}", "meta/info.json robot_type" if robot else "meta/info.json has no robot_type: fill in"),
    ])


def _key_note(role: str, key: str, canonical: str, given: str | None) -> str | None:
    if given:
        return f"from --{role}"
    return None if key == canonical else f"guessed from the key name: confirm (not {canonical!r})"


def _keys(s: Starter, cfg: InitConfig, *, action: dict, state: dict | None, state_lacks: list[str]) -> list[str]:
    if s.cameras:
        how = ("chosen with --cameras" if cfg.cameras
               else "every camera of the dataset; drop those the policy should not see")
        lines = comment_lines(f"keys: where this dataset stores each role; cameras: policy camera name -> dataset "
                              f"key ({how})")
    else:
        lines = comment_lines("keys: where this dataset stores each role")
    rows: list[tuple[str, str | None]] = [("keys:", None)]
    rows.append((f"  action: {quote(action['key'])}", _key_note("action", action["key"], "action", cfg.action_key)))
    if state is None:
        rows.append(("  state: observation.state", "NOT in this dataset: map the state vector (--state KEY)"))
    else:
        note = _key_note("state", state["key"], "observation.state", cfg.state_key)
        if state_lacks:
            note = f"lacks joints {state_lacks}: map the state that holds them"
        rows.append((f"  state: {quote(state['key'])}", note))
    if s.cameras:
        rows.append(("  cameras:", None))
        rows += [(f"    {quote(n)}: {quote(k)}", None) for n, k in s.cameras.items()]
    else:
        rows.append(("  cameras: {}", "no camera: Pi0.5 needs at least one"))
    required = list(s.cameras)  # the policy reads every camera under keys.cameras
    rows.append((f"required_cameras: [{', '.join(quote(n) for n in required)}]",
                 "cameras every episode must have (video files or images in the data files)"))
    rows.append((f"state_required: {'true' if state is not None else 'false'}",
                 "Pi0.5 tokenizes the state into its prompt" if state is not None
                 else "no state vector found: set true once keys.state is mapped"))
    return lines + aligned_rows(rows)


def _joints_and_units(s: Starter, cfg: InitConfig, *, action: dict, semantics_hint: str, unit_why: dict) -> list[str]:
    if cfg.joints:
        how = (f"the {len(s.joints)} names of '{action['key']}' matching --joints "
               f"{' '.join(repr(p) for p in cfg.joints)}, in dataset order")
    else:
        how = (f"all {len(s.joints)} names of '{action['key']}' (no --joints given): keep only the joints the "
               f"policy controls (drop base velocities, the other arm)")
    lines = comment_lines(f"joints: the joints the policy controls, selected by name, in this order; {how}")
    lines.append("joints:")
    lines += [f"  - {quote(j)}" for j in s.joints]
    lines += comment_lines(f"semantics: absolute joint-position targets or delta; confirm: {semantics_hint}")
    lines += aligned_rows([("semantics: absolute", "guessed: confirm")])
    lines += comment_lines("units: per joint, guessed from the names and the observed values (whole numbers >= 0 "
                           "beyond 2π or an integer dtype: raw servo encoder ticks; otherwise deg beyond ±2π, rad "
                           "within; a gripper in 0..1 fraction, in 0..100 percent); confirm each against the "
                           "robot's driver")
    rows = [("units:", None)]
    for j in s.joints:
        obs = s.observed.get(j)
        seen = f"observed {format_value(obs[0])} .. {format_value(obs[1])}" if obs else "no finite values"
        rows.append((f"  {quote(j)}: {quote(s.units[j])}", f"guessed: confirm ({unit_why[j]}; {seen})"))
    return lines + aligned_rows(rows)


def _ranges(s: Starter, cfg: InitConfig, *, action: dict, state: dict | None, state_lacks: list[str]) -> list[str]:
    sources = f"'{action['key']}'" + (f" and '{state['key']}'" if state is not None and not state_lacks else "")
    lines = comment_lines(f"ranges: per joint [low, high]; actions outside are validation errors. The observed "
                          f"min/max of {sources}, widened by {cfg.margin:g} x the span on each side (at least "
                          f"{MIN_PAD_FRACTION:g} x the magnitude); replace them with the joints' physical limits "
                          f"when known")
    rows = [("ranges:", None)]
    for j in s.joints:
        if j in s.ranges:
            (lo, hi), obs = s.ranges[j], s.observed[j]
            rows.append((f"  {quote(j)}: [{format_number(lo)}, {format_number(hi)}]",
                         f"observed {format_value(obs[0])} .. {format_value(obs[1])}"))
    return lines + aligned_rows(rows)


def _limits(s: Starter, cfg: InitConfig, *, jump: tuple, deviation: float | None) -> list[str]:
    q, mx, n_jumps = jump
    if s.max_action_jump is None:
        why = "no consecutive frames to measure" if not n_jumps else "the actions never change"
        lines = comment_lines(f"max_action_jump: |action[t+1] - action[t]| of any joint above this is a validation "
                              f"warning; {why}, so none is set: set one (joint units)")
        lines.append("max_action_jump: null")
    else:
        lines = comment_lines(f"max_action_jump: |action[t+1] - action[t]| of any joint above this (joint units, "
                              f"shared by all joints) is a validation warning; {cfg.jump_factor:g} x the "
                              f"{cfg.jump_quantile:g} quantile ({format_value(q)}) of the observed per-frame max "
                              f"over the joints (observed max {format_value(mx)})")
        lines.append(f"max_action_jump: {format_number(s.max_action_jump)}")
    dev = "no consecutive frames" if deviation is None else f"observed worst {deviation:.2g} s"
    return lines + aligned_rows([
        (f"fps: {s.fps}", "meta/info.json fps: the rate the data must have"),
        (f"timestamp_tolerance_s: {format_number(cfg.timestamp_tolerance_s)}",
         f"allowed deviation of timestamp spacing from 1/fps ({dev})"),
    ])
