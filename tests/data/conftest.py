"""Fixtures of the data tests: configs of the real datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clickadapt.data.registry import DatasetConfig, get_reader


@pytest.fixture(scope="session")
def real_config(data_root: Path) -> Any:
    """Factory: a ``DatasetConfig`` for a reader with its root under the real-data folder."""

    def make(reader: str, **fields: Any) -> DatasetConfig:
        subfolder = get_reader(reader).subfolder
        assert subfolder is not None
        return DatasetConfig(reader=reader, root=data_root / subfolder, **fields)

    return make
