"""Where things live: the shared real-data folder, the shipped models and the built-in demo data."""

from __future__ import annotations

import os
from pathlib import Path

from clickadapt.tasks import TASKS

PACKAGE_DIR = Path(__file__).resolve().parent
PRETRAINED_DIR = PACKAGE_DIR / "pretrained"
DEMO_DATA_DIR = PACKAGE_DIR / "demo_data"
DATA_ROOT_ENV = "CLICKADAPT_DATA_ROOT"
RUNS_DIR = Path("runs")
"""Where ``clickadapt train`` writes its runs by default (relative to the working directory)."""


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


def missing_shipped_model_message(task: str, path: Path) -> str:
    """How to obtain a shipped model that is not there (naming the file)."""
    return (
        f"model checkpoint {path} does not exist: the shipped {task} model has not been built yet. Train it with "
        f"`clickadapt train configs/train_{task}.yaml` (writes {RUNS_DIR / task / 'best.pt'}, which is used when "
        f"present) and copy that file to {path}, or give a checkpoint path as the model."
    )


def resolve_model_spec(spec: str | Path) -> Path:
    """The checkpoint file a model spec names; the one resolver behind ``--model`` everywhere.

    Args:
        spec: ``"brain"`` or ``"fundus"``: that task's shipped model, else the freshly trained
            ``runs/<task>/best.pt`` when it exists; anything else: a checkpoint path (``~`` expanded).

    Returns:
        An existing file.

    Raises:
        FileNotFoundError: Naming the file (for a task name: saying how to train the model).
    """
    text = str(spec)
    if text in TASKS:
        shipped = shipped_model_path(text)
        for candidate in (shipped, RUNS_DIR / text / "best.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(missing_shipped_model_message(text, shipped))
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {path} does not exist")
    return path
