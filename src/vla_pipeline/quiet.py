"""Output a user can read: the entry points (stages, ``vla``) call ``quiet_third_party`` first.

Silenced, because none of it asks the user to do anything: the SVT-AV1 encoder's banners (``Svt[info]``,
``Svt[warn]``, about 1,000 lines per demo dataset), FFmpeg's informational lines (``[mp4] Starting second
pass``), pydantic's schema warnings raised while W&B imports, and torchvision's notice that its video API
is deprecated (LeRobot decodes with PyAV here). Errors of all of them still print."""

from __future__ import annotations

import os
import warnings

SVT_LOG_ERRORS = "1"  # SVT-AV1's log level: 1 errors, 2 warnings, 3 info (its default)


def quiet_third_party() -> None:
    os.environ.setdefault("SVT_LOG", SVT_LOG_ERRORS)  # read by the encoder when it starts (also in children)
    warnings.filterwarnings("ignore", message=r"The video decoding and encoding capabilities of torchvision")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydantic\._internal\._generate_schema")
    # children inherit the filters (DataLoader workers, accelerate's processes)
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    for rule in ("ignore::UserWarning:pydantic._internal._generate_schema",):
        if rule not in filters:
            filters.append(rule)
    os.environ["PYTHONWARNINGS"] = ",".join(filters)
    try:
        import av.logging
    except ImportError:  # pragma: no cover - PyAV is a LeRobot dependency
        return
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's own lines through Python logging, errors only
    # LeRobot's encode_video_frames hands logging back to FFmpeg's default (info level, on stderr) after
    # every video it writes; keep ours instead
    av.logging.restore_default_callback = _errors_only


def _errors_only() -> None:
    import av.logging

    av.logging.set_level(av.logging.ERROR)
