"""Checks of what ``meta/info.json`` and the contract say: codebase version, fps, the contract's keys
and joint names, the features the data files hold, and the configured exclusions."""

from __future__ import annotations

from vla_pipeline.data.contract import Contract, format_missing_joints
from vla_pipeline.data.features import camera_storage, declared_shape
from vla_pipeline.data.tables import SUPPORTED_CODEBASE, camera_keys, format_no_camera
from vla_pipeline.validate.findings import MIN_EPISODES, Findings, View


# ----------------------------------------------------------------------------- meta and keys
def check_codebase(v: View, out: Findings) -> None:
    found = v.info.get("codebase_version")
    if found != SUPPORTED_CODEBASE:
        from vla_pipeline.data.convert import format_conversion_hint

        out.error("codebase", format_conversion_hint(v.root), key="codebase_version", value=found,
                  expected=SUPPORTED_CODEBASE)


def check_fps(v: View, out: Findings) -> None:
    if v.info.get("fps") != v.contract.fps:
        out.error("fps", f"meta/info.json: fps {v.info.get('fps')} but contract '{v.contract.name}' says "
                  f"{v.contract.fps}; re-record, resample, or use a contract with the dataset's fps",
                  key="fps", value=v.info.get("fps"), expected=v.contract.fps)


def required_keys(contract: Contract) -> dict[str, str]:
    """role -> dataset key of everything the run reads: the action, the state, every camera."""
    return {"action": contract.action_key, "state": contract.state_key,
            **{f"camera '{c}'": key for c, key in contract.cameras.items()}}


def check_contract_keys(v: View, out: Findings) -> None:
    """The contract maps what Pi0.5 needs (a state, at least one camera) onto keys the dataset has. A
    mismatch is one error about the contract, with the dataset's features by role and a keys block."""
    from vla_pipeline.data.contract_init.roles import format_feature_roles, format_keys_block

    c = v.contract
    if not camera_keys(v.info):  # no contract can fix it: one message, no advice to map or re-init
        out.error("contract_keys", format_no_camera(v.root), key="cameras")
        return
    if not c.cameras:
        out.error("contract_keys", f"contract '{c.name}' maps no camera (keys.cameras is empty): Pi0.5 needs at "
                  f"least one camera image; map one or more of the dataset's cameras:\n"
                  f"{format_feature_roles(v.info)}", key="keys.cameras")
    if not c.state_required:
        out.error("contract_keys", f"contract '{c.name}' sets state_required: false, but Pi0.5 tokenizes the state "
                  f"into its prompt; map keys.state and set state_required: true", key="state_required")
    features = v.info.get("features", {})
    missing = {role: key for role, key in required_keys(c).items() if key not in features}
    if missing:
        listed = ", ".join(f"{role} '{key}'" for role, key in missing.items())
        out.error("contract_keys", f"contract '{c.name}' does not fit this dataset: it names {listed}, which the "
                  f"dataset does not have. The dataset's features:\n{format_feature_roles(v.info)}\n"
                  f"Map them in the contract (dataset.contract), e.g.:\n{format_keys_block(v.info)}\n"
                  f"or write a starter contract: vla contract init {v.root} --out contracts/NAME.yaml",
                  key=next(iter(missing.values())), value=sorted(features), expected=sorted(missing.values()))


def check_features_in_data(v: View, out: Findings) -> None:
    declared = [k for k in v.info["features"] if camera_storage(v.info, k) is None]
    missing = [k for k in declared if k not in v.frames.columns]
    for k in missing:
        out.error("features_in_data", f"feature '{k}' is declared in meta/info.json but no data parquet file has "
                  f"that column; rewrite the data files or fix info.json", key=k)


def check_feature_names(v: View, out: Findings) -> None:
    for key in (v.contract.action_key, v.contract.state_key):
        if key not in v.info["features"]:
            continue
        names, shape = v.names(key), declared_shape(v.info, key)
        if not isinstance(shape, list) or len(shape) != 1:
            out.error("feature_names", f"meta/info.json: '{key}' has shape {shape!r}; a vector feature needs "
                      f"[n_dims]", key=key, value=shape, expected=[len(names)])
        elif shape[0] != len(names):
            out.error("feature_names", f"meta/info.json: '{key}' has shape {shape} but {len(names)} names",
                      key=key, value=len(names), expected=shape[0])
        missing = [j for j in v.contract.joints if j not in names]
        if missing:
            advice = "fix the contract's joints, or use the contract for this robot (dataset.contract)"
            out.error("feature_names", f"contract '{v.contract.name}': "
                      f"{format_missing_joints(missing, names, key, advice)}", key=key, value=names,
                      expected=list(v.contract.joints))
            continue
        order = [j for j in names if j in v.contract.joints]
        if order != list(v.contract.joints):
            out.error("feature_names", f"'{key}' holds the contract's joints in another order: {order}; the contract "
                      f"expects {list(v.contract.joints)}; check which convention the recording used",
                      key=key, value=order, expected=list(v.contract.joints))
    if all(f.check != "feature_names" for f in out.errors):
        check_joint_refs(v, out)


def check_joint_refs(v: View, out: Findings) -> None:
    """``ranges`` and ``units`` name only the contract's joints; checked once the joints are the dataset's,
    so a typo in ``joints`` is named as a joint the dataset lacks rather than as a range without a joint."""
    c = v.contract
    for field_, unknown in c.unknown_joint_refs().items():
        out.error("feature_names", f"contract '{c.name}': {field_} name joints {unknown} that are not in its joints "
                  f"{list(c.joints)}; add them to joints or remove them from {field_}", key=field_, value=unknown,
                  expected=list(c.joints))


def check_exclusions(v: View, out: Findings) -> None:
    """``dataset.exclude_episodes`` names episodes that exist and leaves enough to split into train and
    validation."""
    episodes = set(v.episodes["episode_index"].tolist())
    unknown = sorted(set(v.exclude_episodes) - episodes)
    if unknown:
        out.error("exclusions", f"dataset.exclude_episodes names episodes {unknown} that the dataset does not have "
                  f"(it has {len(episodes)}: 0..{max(episodes, default=-1)}); remove them", value=unknown)
    left = len(episodes - set(v.exclude_episodes))
    if left == 0:
        out.error("exclusions", f"dataset.exclude_episodes excludes all {len(episodes)} episodes: nothing is left "
                  f"to train on; fix the dataset instead of excluding it", value=left, expected=MIN_EPISODES)
    elif left < MIN_EPISODES:
        out.error("exclusions", f"{left} episode left after dataset.exclude_episodes; a train/validation split "
                  f"needs at least {MIN_EPISODES}", value=left, expected=MIN_EPISODES)
