"""Start from pretrained Pi0.5 weights (``policy.pretrained``: a hub id such as
``lerobot/pi05_base``, a local ``pretrained_model`` directory, or a ``.safetensors`` file).

Unlike LeRobot 0.4.2's ``PI05Policy.from_pretrained``, which prints a warning and returns a
randomly initialised model when it cannot load the weights, this fails hard and reports how
many tensors were loaded, missing and unexpected. Weights from one of our checkpoints (a
``manifest.json`` beside them) are checked against their sha256 first. Offline, a hub id fails at once with how to
fetch the weights first; it never hangs.
"""


from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file

from vla_pipeline.checkpoint.io import load_state_strict
from vla_pipeline.checkpoint.layout import CHECKPOINT_MANIFEST_FILE, PRETRAINED_DIR
from vla_pipeline.checkpoint.manifest import require_verified
from vla_pipeline.errors import CheckpointError

WEIGHTS = "model.safetensors"


def resolve_weights_file(source: str) -> Path:
    """The ``model.safetensors`` that ``source`` names, downloading a hub id when online."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / WEIGHTS, path / PRETRAINED_DIR / WEIGHTS):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"policy.pretrained: {path} has no {WEIGHTS} (nor {PRETRAINED_DIR}/{WEIGHTS})")
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CheckpointError(f"policy.pretrained: {source} is neither an existing path nor a hub id 'org/name'")
    return _download(source)


def _download(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, WEIGHTS))
    except Exception as e:  # noqa: BLE001  (every hub failure becomes an actionable message)
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise CheckpointError(
                f"policy.pretrained: '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                f"Fetch it first where there is network (`HF_HUB_OFFLINE=0 huggingface-cli download {repo_id}`), "
                f"or download it elsewhere and set policy.pretrained to that directory"
            ) from e
        raise CheckpointError(f"policy.pretrained: cannot download {WEIGHTS} of '{repo_id}' "
                              f"({type(e).__name__}: {e}); check the id, your network and HF_TOKEN") from e


def load_pretrained_weights(policy, source: str) -> dict[str, int]:
    """Load pretrained Pi0.5 weights into ``policy`` (LeRobot's own key fixes, then a strict load)."""
    path = resolve_weights_file(source)
    manifest = path.parent / CHECKPOINT_MANIFEST_FILE
    local = Path(source).expanduser().exists()  # a hub download (a cache of links) is checked by the hub client
    if local and (manifest.exists() or manifest.is_symlink()):  # one of our checkpoints: it must verify (manifest.py)
        require_verified(path.parent, f"start from {path}")
    state = load_file(str(path))
    state = policy._fix_pytorch_state_dict_keys(state, policy.config)  # LeRobot's openpi key renames
    state = {k if k.startswith("model.") else f"model.{k}": v for k, v in state.items()}
    return load_state_strict(policy, state, path)
