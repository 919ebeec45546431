"""Where things live: the shared real-data folder, the shipped models and the built-in demo data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRETRAINED_DIR = PACKAGE_DIR / "pretrained"
DEMO_DATA_DIR = PACKAGE_DIR / "demo_data"
DATA_ROOT_ENV = "CLICKADAPT_DATA_ROOT"


def default_data_root() -> Path:
    """The folder of real datasets (``shared/data``).

    Resolution order: the ``CLICKADAPT_DATA_ROOT`` environment variable; ``../shared/data`` from the
    current directory; ``../shared/data`` beside the repository that holds this package. The returned
    path may not exist: callers that need it check and say so.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    candidates = [Path.cwd().parent / "shared" / "data", PACKAGE_DIR.parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def shipped_model_path(task: str) -> Path:
    """Path of the shipped source model for ``task`` (``"fundus"`` or ``"brain"``)."""
    return PRETRAINED_DIR / f"{task}.pt"
