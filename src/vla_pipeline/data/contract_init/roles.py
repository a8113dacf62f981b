"""A dataset's features by role: action and state candidates guessed from key names, cameras, and
the rest; the validator uses these descriptions to say what a dataset holds when a contract's keys
are missing from it."""

from __future__ import annotations

from vla_pipeline.data.contract_init.yaml_text import commented, quote
from vla_pipeline.data.features import FeatureError, declared_shape, vector_dim
from vla_pipeline.data.tables import CAMERA_DTYPES, feature_names

BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")


NUMERIC_DTYPES = ("float", "int", "uint")  # a vector of integers: raw servo ticks, say (units.py)


# key-name patterns, best first: (test, why). The first vector matching the best test wins.
_ACTION_TESTS = (
    lambda k: k in ("action", "actions"),
    lambda k: k.startswith(("action.", "actions.")),
    lambda k: k.rsplit(".", 1)[-1] in ("action", "actions"),
    lambda k: "action" in k,
)


_STATE_TESTS = (
    lambda k: k == "observation.state",
    lambda k: k in ("state", "states", "observation.states", "observation.state_vector"),
    lambda k: k.rsplit(".", 1)[-1] in ("joint_positions", "joint_position", "qpos", "joints", "joint_pos",
                                       "robot_state", "proprio", "proprioception"),
    lambda k: k.startswith("observation.state"),
    lambda k: "state" in k,
    lambda k: k.startswith("observation.") and any(s in k for s in ("joint", "qpos", "pos", "proprio")),
)


def _entry(info: dict, key: str) -> dict:
    feature = info["features"][key]
    try:
        names = feature_names(info, key)
    except (TypeError, AttributeError):
        names = []
    declared = declared_shape(info, key)
    try:
        dim = vector_dim(info, key)
    except FeatureError:
        dim = None  # not a vector: a camera, a scalar, a malformed declaration
    return {"key": key, "dtype": str(feature.get("dtype", "")), "dim": dim, "names": [str(n) for n in names],
            "declared": list(declared) if isinstance(declared, list | tuple) else declared}


def _is_vector(entry: dict) -> bool:
    return entry["dtype"].startswith(NUMERIC_DTYPES) and entry["dim"] is not None and not entry["key"].startswith("next.")


def group_features(info: dict) -> dict[str, list[dict]]:
    """The dataset's features by role, in info.json order: ``vectors`` (numeric 1-D features, the
    action/state candidates; LeRobot's bookkeeping keys and ``next.*`` left out), ``cameras``
    (dtype video or image) and ``other``. Each entry: key, dtype, dim (a vector's length, else None), names
    (possibly empty), declared (the shape as info.json writes it)."""
    groups: dict[str, list[dict]] = {"vectors": [], "cameras": [], "other": []}
    for key in info.get("features") or {}:
        if key in BOOKKEEPING:
            continue
        entry = _entry(info, key)
        role = "cameras" if entry["dtype"] in CAMERA_DTYPES else "vectors" if _is_vector(entry) else "other"
        groups[role].append(entry)
    return groups


def _best(keys: list[str], tests) -> str | None:
    for test in tests:
        for key in keys:
            if test(key.lower()):
                return key
    return None


def camera_names(keys: list[str]) -> dict[str, str]:
    """camera name -> key: the key's last segment ("observation.images.front" -> "front"); keys whose
    last segments collide keep their whole key, dots as underscores."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {(seg if last.count(seg) == 1 else k.replace(".", "_")): k for k, seg in zip(keys, last, strict=True)}


def guess_keys(info: dict) -> dict:
    """``{"action": key | None, "state": key | None, "cameras": {name: key}}`` guessed from the key
    names of the numeric vectors (``action``, ``actions``, ``action.*`` ...; ``observation.state``,
    ``state``, ``observation.joint_positions`` ...) and the camera features."""
    groups = group_features(info)
    vectors = [e["key"] for e in groups["vectors"]]
    action = _best(vectors, _ACTION_TESTS)
    state = _best([k for k in vectors if k != action], _STATE_TESTS)
    return {"action": action, "state": state, "cameras": camera_names([e["key"] for e in groups["cameras"]])}


def _names_preview(names: list[str], max_names: int) -> str:
    if not names:
        return "(no names)"
    shown = ", ".join(names[:max_names])
    more = len(names) - max_names
    return f"({shown}, ... and {more} more)" if more > 0 else f"({shown})"


def _describe(entry: dict, with_names: bool, max_names: int) -> str:
    shape = entry["declared"] if entry["declared"] is not None else "?"
    text = f"'{entry['key']}' {entry['dtype']} {shape}"
    return f"{text} {_names_preview(entry['names'], max_names)}" if with_names else text


def format_feature_roles(info: dict, max_names: int = 4) -> str:
    """A compact listing of the features by role, one line per role, e.g.

    ``  action/state candidates: 'actions' float32 [34] (left.joint_1.pos, ... and 30 more); ...``
    ``  cameras: 'image' video [480, 640, 3]``
    """
    groups = group_features(info)
    lines = [
        "  action/state candidates: "
        + ("; ".join(_describe(e, True, max_names) for e in groups["vectors"]) or "none (no numeric vector feature)"),
        "  cameras: " + (", ".join(_describe(e, False, max_names) for e in groups["cameras"]) or "none"),
    ]
    if groups["other"]:
        lines.append("  other: " + ", ".join(_describe(e, False, max_names) for e in groups["other"]))
    return "\n".join(lines)


def _vector_keys_hint(info: dict) -> str:
    keys = [e["key"] for e in group_features(info)["vectors"]]
    return ", ".join(keys) if keys else "none"


def format_keys_block(info: dict) -> str:
    """A ready-to-paste ``keys:`` block of a contract, from :func:`guess_keys`, with a comment on
    each entry that is a guess or absent."""
    guess = guess_keys(info)
    lines = ["keys:                          # where this dataset stores each role"]
    for role, canonical in (("action", "action"), ("state", "observation.state")):
        key = guess[role]
        if key is None:
            lines.append(commented(f"  {role}: null", f"no {role}-like numeric vector found; candidates: "
                                    f"{_vector_keys_hint(info)}"))
        elif key == canonical:
            lines.append(f"  {role}: {quote(key)}")
        else:
            lines.append(commented(f"  {role}: {quote(key)}", "guessed from the key name: confirm"))
    if guess["cameras"]:
        lines.append("  cameras:                     # policy camera name -> dataset key")
        lines += [f"    {quote(name)}: {quote(key)}" for name, key in guess["cameras"].items()]
    else:
        lines.append(commented("  cameras: {}", "no video/image feature found"))
    return "\n".join(lines)
