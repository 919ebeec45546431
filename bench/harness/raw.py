"""The raw files of a bench output folder (``raw.csv``, ``runs.csv``, ``bench.json``): writing them from the cache,
reading them back.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.cache import finite, read_json, run_cache_path
from bench.harness.config import run_label
from bench.harness.constants import BENCH_FORMAT, BENCH_JSON, NOISY_GROUP, RAW_CSV, RUNS_CSV
from bench.harness.plan import BenchPlan
from clickadapt.clicks.click import Click
from clickadapt.evaluation.machine import cpu_and_versions
from clickadapt.evaluation.stream import (
    ImageRecord,
    StreamResult,
)
from clickadapt.models.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)


RAW_COLUMNS = (
    "stream",
    "task",
    "shift",
    "groups",
    "strategy",
    "strategy_name",
    "overrides",
    "budget",
    "order_seed",
    "click_seed",
    "user",
    "position",
    "image_key",
    "region",
    "dice",
    "first_before_update",
    "clicks",
    "versions",
    "forward_s",
    "update_s",
    "finish_s",
    "version_after",
)


RUNS_COLUMNS = (
    "stream",
    "task",
    "shift",
    "groups",
    "strategy",
    "strategy_name",
    "overrides",
    "budget",
    "order_seed",
    "click_seed",
    "user",
    "region",
    "images",
    "skipped",
    "source_dice_before",
    "source_dice_after",
    "wall_s",
    "cpu_s",
    "cache_key",
)

RUNS_PROVENANCE_COLUMNS = ("computed_at", "machine")
"""Columns of ``runs.csv`` after :data:`RUNS_COLUMNS`: when and where each run was computed (empty for runs
computed before they were recorded, 2026-12-02; optional when reading)."""


def _numbers(values: Iterable[float]) -> str:
    return " ".join(f"{value:.6g}" for value in values)


def _parse_numbers(text: str) -> list[float]:
    return [float(value) for value in text.split()]


@functools.cache
def _this_machine() -> str:
    info = cpu_and_versions()
    return f"{info['cpu']}, {info['cpus']} CPUs, torch {info['torch']}"


def provenance() -> dict[str, str]:
    """When (UTC, to the second) and on which machine (CPU model, logical CPUs, torch) a cache entry is
    computed: kept in the entry and in ``runs.csv``, since one report may gather runs of several machines."""
    return {"computed_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _this_machine()}


def machine_description() -> dict[str, str]:
    """CPU model (``lscpu``), logical CPUs, torch and Python versions, and the load average."""
    info = cpu_and_versions()
    try:
        info["load"] = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        info["load"] = "unknown"
    return info


def bench_metadata(
    plan: BenchPlan,
    started_at: datetime,
    wall_s: float,
    computed: int,
    computed_baselines: int,
    command: str | None,
) -> dict[str, Any]:
    """The ``bench.json`` record: command, date, machine, wall time, models, streams and experiments."""
    config = plan.config
    return {
        "format": BENCH_FORMAT,
        "title": config.title,
        "command": command or shlex.join(["clickadapt", *sys.argv[1:]]),
        "date": started_at.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "computed_runs": computed,
        "failed": [],
        "computed_baselines": computed_baselines,
        "cached_runs": len({job.key for job in plan.jobs}) - computed,
        "workers": config.workers,
        "threads_per_worker": config.threads_per_worker,
        "device": config.device,
        "machine": machine_description(),
        "code_version": plan.code,
        "user": config.user,
        "subset": config.subset,
        "capped": config.capped,
        "models": {task: vars(info) for task, info in plan.models.items()},
        "source_validation": {
            task: {"data": dataset.model_dump(mode="json"), "images": plan.source_images.get(task, 0)}
            for task, dataset in config.source_validation.items()
            if task in plan.models
        },
        "streams": [
            {
                "name": name,
                "title": stream.spec.title,
                "task": stream.spec.task,
                "shift": stream.spec.shift,
                "slices": stream.spec.slices,
                "part": stream.part,
                "data": stream.spec.data.model_dump(mode="json", exclude_defaults=True),
                "available": stream.available,
                "used": len(stream.keys),
                "cap": config.stream_cap(stream.spec),
                "patients": stream.patients,
            }
            for name, stream in plan.streams.items()
        ],
        "ablations": [
            {
                "streams": config.stream_names(experiment),
                "strategies": [
                    {"label": spec.display_name, "name": spec.name, "overrides": spec.overrides}
                    for spec in experiment.strategies
                ],
            }
            for experiment in config.ablations
        ],
        "noisy_users": [
            {
                "streams": config.stream_names(experiment),
                "user": experiment.user,
                "strategies": [spec.display_name for spec in experiment.strategies],
                "labels": [run_label(spec, NOISY_GROUP, experiment.user) for spec in experiment.strategies],
            }
            for experiment in config.noisy_users
        ],
        "expected_runs": len(plan.jobs),
    }


def write_raw(output: Path, plan: BenchPlan, meta: dict[str, Any]) -> list[Path]:
    """Write ``raw.csv``, ``runs.csv`` and ``bench.json`` from the cached runs of ``plan``.

    Runs missing from the cache are listed in ``bench.json`` under ``missing``.

    Returns:
        The paths written.
    """
    output.mkdir(parents=True, exist_ok=True)
    raw_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    missing = []
    for job in plan.jobs:
        entry = read_json(run_cache_path(plan.config.cache_dir, job.key))
        if entry is None:
            missing.append(
                {
                    "stream": job.stream,
                    "strategy": job.label,
                    "budget": job.budget,
                    "order_seed": job.order_seed,
                    "click_seed": job.click_seed,
                }
            )
            continue
        result = StreamResult.from_dict(entry["result"])
        result.strategy = job.label
        stream = plan.streams[job.stream].spec
        common = {
            "stream": job.stream,
            "task": stream.task,
            "shift": stream.shift,
            "groups": "+".join(job.groups),
            "strategy": job.label,
            "strategy_name": result.strategy_name,
            "overrides": json.dumps(result.overrides, sort_keys=True),
            "budget": result.budget,
            "order_seed": "" if result.order_seed is None else result.order_seed,
            "click_seed": result.click_seed,
            "user": result.user,
        }
        for region in result.regions:
            before = (result.validation_before or {}).get(region)
            after = (result.validation_after or {}).get(region)
            run_rows.append(
                common
                | {
                    "region": region,
                    "images": len(result.images),
                    "skipped": " ".join(result.skipped),
                    "source_dice_before": "" if before is None else _numbers(before),
                    "source_dice_after": "" if after is None else _numbers(after),
                    "wall_s": f"{entry.get('wall_s', float('nan')):.3f}",
                    "cpu_s": f"{entry.get('cpu_s', float('nan')):.3f}",
                    "cache_key": job.key,
                    "computed_at": entry.get("computed_at") or "",
                    "machine": entry.get("machine") or "",
                }
            )
            for image in result.images:
                raw_rows.append(
                    common
                    | {
                        "position": image.position,
                        "image_key": image.key,
                        "region": region,
                        "dice": _numbers(image.dice[region]),
                        "first_before_update": ""
                        if image.first_before_update is None
                        else f"{image.first_before_update[region]:.6g}",
                        "clicks": " ".join(f"{c.row},{c.col},{c.label}" for c in image.clicks),
                        "versions": " ".join(str(version) for version in image.versions),
                        "forward_s": _numbers(image.forward_s),
                        "update_s": _numbers(image.update_s),
                        "finish_s": f"{image.finish_s:.6g}",
                        "version_after": image.version_after,
                    }
                )
    paths = []
    tables = ((RAW_CSV, RAW_COLUMNS, raw_rows), (RUNS_CSV, RUNS_COLUMNS + RUNS_PROVENANCE_COLUMNS, run_rows))
    for name, columns, rows in tables:
        path = output / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    meta = meta | {"missing": missing}
    atomic_write_bytes(output / BENCH_JSON, (json.dumps(finite(meta), indent=1) + "\n").encode("utf-8"))
    paths.append(output / BENCH_JSON)
    return paths


@dataclass
class BenchRun:
    """One run read back from the raw files.

    Attributes:
        stream: Stream name.
        task: Task name.
        shift: Kind of shift of the stream.
        groups: ``main`` and/or ``ablation``.
        result: The run (images with per-click Dice; forgetting curves).
        wall_s: Seconds the run took (stream and forgetting).
        cpu_s: CPU seconds of the run.
        computed_at: When the run was computed (ISO 8601, UTC; empty when not recorded).
        machine: Where it was computed (CPU model, logical CPUs, torch; empty when not recorded).
    """

    stream: str
    task: str
    shift: str
    groups: list[str]
    result: StreamResult
    wall_s: float
    cpu_s: float
    computed_at: str = ""
    machine: str = ""

    @property
    def label(self) -> str:
        """Strategy label."""
        return self.result.strategy

    @property
    def budget(self) -> int:
        """Clicks per image."""
        return self.result.budget


def read_raw(results_dir: str | Path) -> tuple[dict[str, Any], list[BenchRun]]:
    """``bench.json`` and the runs of ``raw.csv`` + ``runs.csv``.

    Raises:
        FileNotFoundError: If a raw file is missing.
        OutdatedRawFilesError: Naming the file and its missing columns when the raw files were written by an
            earlier protocol of the benchmark (both CSVs are checked before anything is read).
        ValueError: Naming the file when a CSV is not a bench raw file.
    """
    results_dir = Path(results_dir)
    for name in (BENCH_JSON, RAW_CSV, RUNS_CSV):
        if not (results_dir / name).is_file():
            raise FileNotFoundError(f"{results_dir} has no {name}; run `python -m bench CONFIG` first")
    for name, columns in ((RAW_CSV, RAW_COLUMNS), (RUNS_CSV, RUNS_COLUMNS)):
        with (results_dir / name).open(newline="", encoding="utf-8") as handle:
            check_columns(results_dir / name, next(csv.reader(handle), None), columns)
    meta = json.loads((results_dir / BENCH_JSON).read_text(encoding="utf-8"))
    runs: dict[tuple[str, str, str, str, str], BenchRun] = {}
    for row in _read_csv(results_dir / RUNS_CSV, RUNS_COLUMNS):
        run_key = (row["stream"], row["strategy"], row["budget"], row["order_seed"], row["click_seed"])
        run = runs.get(run_key)
        if run is None:
            result = StreamResult(
                strategy=row["strategy"],
                strategy_name=row["strategy_name"],
                overrides=json.loads(row["overrides"] or "{}"),
                task=row["task"],
                regions=[],
                user=row["user"],
                budget=int(row["budget"]),
                order_seed=None if row["order_seed"] == "" else int(row["order_seed"]),
                click_seed=int(row["click_seed"]),
                skipped=row["skipped"].split(),
            )
            run = BenchRun(
                row["stream"],
                row["task"],
                row["shift"],
                row["groups"].split("+"),
                result,
                float(row["wall_s"]),
                float(row["cpu_s"]),
                row.get("computed_at") or "",
                row.get("machine") or "",
            )
            runs[run_key] = run
        run.result.regions.append(row["region"])
        if row["source_dice_before"]:
            if run.result.validation_before is None or run.result.validation_after is None:
                run.result.validation_before, run.result.validation_after = {}, {}
            run.result.validation_before[row["region"]] = _parse_numbers(row["source_dice_before"])
            run.result.validation_after[row["region"]] = _parse_numbers(row["source_dice_after"])
    images: dict[tuple[str, str, str, str, str], dict[int, ImageRecord]] = {}
    for row in _read_csv(results_dir / RAW_CSV, RAW_COLUMNS):
        run_key = (row["stream"], row["strategy"], row["budget"], row["order_seed"], row["click_seed"])
        if run_key not in runs:
            raise ValueError(f"{results_dir / RAW_CSV}: run {run_key} is not in {RUNS_CSV}")
        position = int(row["position"])
        per_run = images.setdefault(run_key, {})
        if position not in per_run:
            clicks = [Click(*(int(part) for part in item.split(","))) for item in row["clicks"].split()]
            per_run[position] = ImageRecord(
                position=position,
                key=row["image_key"],
                clicks=clicks,
                dice={},
                forward_s=_parse_numbers(row["forward_s"]),
                update_s=_parse_numbers(row["update_s"]),
                finish_s=float(row["finish_s"]),
                versions=[int(version) for version in row["versions"].split()],
                version_after=int(row["version_after"]),
            )
        per_run[position].dice[row["region"]] = _parse_numbers(row["dice"])
        if row["first_before_update"]:
            record = per_run[position]
            record.first_before_update = (record.first_before_update or {}) | {
                row["region"]: float(row["first_before_update"])
            }
    for run_key, run in runs.items():
        per_run = images.get(run_key, {})
        run.result.images = [per_run[position] for position in sorted(per_run)]
    return meta, list(runs.values())


class OutdatedRawFilesError(ValueError):
    """Raw files written by an earlier protocol of the benchmark, which the current report cannot read."""


def check_columns(path: Path, fieldnames: Sequence[str] | None, columns: Sequence[str]) -> None:
    """Refuse a raw CSV whose header lacks some of ``columns``, naming the file and the missing columns.

    Raises:
        OutdatedRawFilesError: The file is a bench raw file of an earlier protocol (it has the identifying
            columns ``stream`` and ``strategy`` but lacks others).
        ValueError: The file is not a bench raw file at all.
    """
    present = set(fieldnames or [])
    missing = [column for column in columns if column not in present]
    if not missing:
        return
    if {"stream", "strategy"} <= present:
        raise OutdatedRawFilesError(
            f"{path} predates the current protocol of the benchmark (issue 15: separate order and click seeds, "
            f"dev/test parts, noisy users): missing columns {missing}. `--report-only` cannot rebuild a report "
            "from it; recompute the runs with `python -m bench CONFIG` (with another --output to keep these files)."
        )
    raise ValueError(f"{path} is not a bench raw file: missing columns {missing}")


def _read_csv(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        check_columns(path, reader.fieldnames, columns)
        return list(reader)
