"""vla-pipeline: reproducible Pi0.5 fine-tuning on arm-only LeRobot datasets."""

import os
import tempfile
from pathlib import Path

__version__ = "0.1.0"


def _set_offline_defaults() -> None:
    """Offline unless the caller says otherwise, and caches in the OS temp dir, not ~/.cache.

    W&B's error reporting (to sentry.io) is off. Set before huggingface_hub is imported (it reads ``HF_HUB_OFFLINE`` once): a file missing
    locally then fails at once instead of hanging on the network. A real run that needs the
    hub (``lerobot/pi05_base``, PaliGemma's tokenizer) sets ``HF_HUB_OFFLINE=0``.
    """
    tmp = Path(tempfile.gettempdir()) / "vla-pipeline"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_CACHE", str(tmp / "hf-datasets"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # WANDB_DATA_DIR: see tracking.py
        os.environ.setdefault(name, str(tmp / name.lower()))
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # W&B's crash reports go to sentry.io
    os.environ.setdefault("MPLCONFIGDIR", str(tmp / "matplotlib"))


_set_offline_defaults()

from vla_pipeline.logs import install_default_handler  # noqa: E402  (after the environment defaults)

install_default_handler()  # the package's info lines print before an entry point configures logging
