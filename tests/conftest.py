"""Shared fixtures: the real-data folder (skipped with a reason when absent) and small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clickadapt.paths import default_data_root

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/data``; tests that need it are skipped with a clear reason when it is absent."""
    root = default_data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set CLICKADAPT_DATA_ROOT)")
    return root
