"""The run cache: one JSON file per run (``runs/<key>.json``) and per source-validation baseline
(``source/<key>.json``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from bench.harness.constants import BENCH_FORMAT
from clickadapt.models.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)


def run_cache_path(cache_dir: Path, key: str) -> Path:
    """Where the raw JSON of run ``key`` is cached."""
    return cache_dir / "runs" / f"{key}.json"


def source_cache_path(cache_dir: Path, key: str) -> Path:
    """Where the source-validation baseline ``key`` is cached."""
    return cache_dir / "source" / f"{key}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """A cache entry, or ``None`` when the file is absent or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable cache entry %s: %s", path, error)
        return None
    return data if isinstance(data, dict) and data.get("format") == BENCH_FORMAT else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a cache entry atomically (NaN and infinities as ``null``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(finite(data)) + "\n").encode("utf-8"))


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
