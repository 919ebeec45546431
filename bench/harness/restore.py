"""Seeding the run cache from committed raw files.

The run cache (``bench/cache``) is local and ignored by git, while the raw files of a report
(``raw.csv`` + ``runs.csv``) are committed and name each run's cache key. A fresh clone therefore knows
every run of the last report but has none of them cached; :func:`restore_cache` writes them back into the
cache, so that ``python -m bench`` on a fresh clone resumes instead of recomputing many CPU-hours.

A restored run is exactly as trustworthy as a cached one: its key hashes the code of the stream engine,
the model file and every setting of the run, so a run restored under a key the current plan does not ask
for is simply never read. The numbers carry the raw files' precision (6 significant digits), which is the
precision every report is computed from anyway.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from bench.harness.cache import read_json, run_cache_path, write_json
from bench.harness.constants import BENCH_FORMAT, RAW_CSV, RUNS_CSV
from bench.harness.raw import OutdatedRawFilesError, read_raw

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreSummary:
    """What :func:`restore_cache` did.

    Attributes:
        restored: Runs written into the cache.
        already_cached: Runs of the raw files whose key was already cached (left untouched).
        source: The folder the raw files were read from.
    """

    restored: int
    already_cached: int
    source: Path


def _run_keys(runs_csv: Path) -> dict[tuple[str, str, str, str, str], str]:
    """``(stream, strategy, budget, order seed, click seed)`` → cache key, from ``runs.csv``."""
    keys: dict[tuple[str, str, str, str, str], str] = {}
    with runs_csv.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            run = (row["stream"], row["strategy"], row["budget"], row["order_seed"], row["click_seed"])
            key = row["cache_key"]
            if not key:
                raise ValueError(f"{runs_csv}, line {line}: empty cache_key for run {run}")
            if keys.setdefault(run, key) != key:
                raise ValueError(f"{runs_csv}, line {line}: run {run} has two cache keys ({keys[run]} and {key})")
    return keys


def restore_cache(results_dir: Path, cache_dir: Path) -> RestoreSummary | None:
    """Write every run of the raw files in ``results_dir`` that is missing from ``cache_dir`` into it.

    Runs already cached are never overwritten (a computed entry keeps its full precision).

    Returns:
        What was restored, or ``None`` when ``results_dir`` holds no raw files or raw files of an earlier
        protocol (logged; nothing to restore from).

    Raises:
        ValueError: Naming the file when the raw files are inconsistent (a run with two cache keys, a run of
            ``raw.csv`` missing from ``runs.csv``).
    """
    if not (results_dir / RUNS_CSV).is_file() or not (results_dir / RAW_CSV).is_file():
        return None
    try:
        _, runs = read_raw(results_dir)
    except OutdatedRawFilesError as error:
        logger.info("not restoring the cache from %s: %s", results_dir, error)
        return None
    keys = _run_keys(results_dir / RUNS_CSV)
    restored = already = 0
    for run in runs:
        result = run.result
        run_id = (
            run.stream,
            result.strategy,
            str(result.budget),
            "" if result.order_seed is None else str(result.order_seed),
            str(result.click_seed),
        )
        path = run_cache_path(cache_dir, keys[run_id])
        if read_json(path) is not None:
            already += 1
            continue
        write_json(
            path,
            {
                "format": BENCH_FORMAT,
                "kind": "run",
                "stream": run.stream,
                "strategy": result.strategy,
                "budget": result.budget,
                "order_seed": result.order_seed,
                "click_seed": result.click_seed,
                "result": result.to_dict(),
                "wall_s": run.wall_s,
                "cpu_s": run.cpu_s,
                "restored_from": str(results_dir / RAW_CSV),
            }
            | ({"computed_at": run.computed_at, "machine": run.machine} if run.computed_at else {}),
        )
        restored += 1
    if restored:
        logger.info("bench: restored %d runs into %s from the raw files in %s", restored, cache_dir, results_dir)
    return RestoreSummary(restored, already, results_dir)
