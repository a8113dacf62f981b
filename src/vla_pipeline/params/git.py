"""The params file as committed (``git show HEAD:<file>``): what tells a key a refused ``dvc exp run -S``
left in the workspace from one the repository has. Harmless outside git: no answer, no error."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 10


def committed_text(path: Path) -> str | None:
    """The text of ``path`` at HEAD, or None (not in a git repository, not committed, no git, git too slow)."""
    path = Path(path).resolve()
    try:
        result = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent, capture_output=True,
                                text=True, timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None
