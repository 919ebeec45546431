"""Computing the plan: each run through the package's stream engine, cached as soon as it finishes.

Runs go to a local process pool (one torch thread per worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.cache import read_json, run_cache_path, source_cache_path, write_json
from bench.harness.config import BenchConfig, StreamSpec
from bench.harness.constants import BENCH_FORMAT, BENCH_JSON, FROZEN_LABEL, SWEEP_GROUP
from bench.harness.executors import Executor, InProcessExecutor, LocalPoolExecutor, make_executor
from bench.harness.numbers import select_tuned
from bench.harness.plan import BenchJob, BenchPlan, SourceJob, TunedSettings, load_stream_samples, plan_bench
from bench.harness.raw import BenchRun, bench_metadata, provenance, write_raw
from bench.harness.report import write_bench_report
from clickadapt.data.registry import DatasetConfig
from clickadapt.data.sample import Sample
from clickadapt.evaluation.stream import (
    StreamResult,
    SubsetPolicy,
    evaluate_frozen,
    run_stream,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to load a model and a stream (picklable)."""

    model_path: str
    click_sigma: float
    stream: DatasetConfig | None
    stream_cap: int | None
    source: DatasetConfig | None
    source_cap: int | None
    subset: SubsetPolicy
    data_cache_dir: Path | None
    user: str
    shuffle: bool
    device: str


_WORKER_MEMORY: dict[str, Any] = {}


def _memo(key: str, build: Callable[[], Any]) -> Any:
    if key not in _WORKER_MEMORY:
        _WORKER_MEMORY[key] = build()
    return _WORKER_MEMORY[key]


def _worker_samples(dataset: DatasetConfig | None, cap: int | None, settings: WorkerSettings) -> list[Sample]:
    if dataset is None:
        return []
    memo_key = f"samples:{dataset.model_dump_json()}:{cap}:{settings.subset}"
    samples: list[Sample] = _memo(
        memo_key, lambda: load_stream_samples(dataset, cap, settings.subset, settings.data_cache_dir)[0]
    )
    return samples


def _worker_model(settings: WorkerSettings) -> Any:
    from clickadapt.models.checkpoint import load_checkpoint

    return _memo(f"model:{settings.model_path}", lambda: load_checkpoint(settings.model_path, settings.device))


def compute_source_baseline(job: SourceJob, settings: WorkerSettings) -> dict[str, Any]:
    """The original model's mean Dice per click on the source validation set (a cache entry)."""
    loaded = _worker_model(settings)
    samples = _worker_samples(settings.source, settings.source_cap, settings)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    curves = evaluate_frozen(
        loaded.model,
        loaded.task,
        samples,
        settings.user,
        job.budget,
        job.seed,
        click_sigma=settings.click_sigma,
        device=settings.device,
    )
    return {
        "format": BENCH_FORMAT,
        "kind": "source-baseline",
        "task": job.task,
        "budget": job.budget,
        "seed": job.seed,
        "images": len(samples),
        "curves": curves,
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
        **provenance(),
    }


def compute_run(job: BenchJob, settings: WorkerSettings, baseline: dict[str, list[float]] | None) -> dict[str, Any]:
    """One run through the stream engine (:func:`~clickadapt.evaluation.stream.run_stream`) and, for an
    adapting strategy, the forgetting measurement on the source validation set (a cache entry).

    Args:
        job: The run.
        settings: Model and data.
        baseline: The original model's curves on the source validation set for this budget and click seed
            (``None`` = no forgetting measurement).
    """
    loaded = _worker_model(settings)
    stream = _worker_samples(settings.stream, settings.stream_cap, settings)
    source = _worker_samples(settings.source, settings.source_cap, settings) if baseline is not None else []
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = run_stream(
        loaded.model,
        loaded.task,
        stream,
        job.strategy.name,
        job.strategy.overrides,
        job.user,
        job.budget,
        order_seed=job.order_seed if settings.shuffle else None,
        click_seed=job.click_seed,
        progress=False,
        label=job.label,
        click_sigma=settings.click_sigma,
        device=settings.device,
    )
    if baseline is not None and source:
        result.validation_before = baseline
        result.validation_after = (
            baseline
            if job.strategy.name == FROZEN_LABEL
            else evaluate_frozen(
                result.final_model if result.final_model is not None else loaded.model,
                loaded.task,
                source,
                settings.user,
                job.budget,
                job.click_seed,
                click_sigma=settings.click_sigma,
                device=settings.device,
            )
        )
    return {
        "format": BENCH_FORMAT,
        "kind": "run",
        "stream": job.stream,
        "strategy": job.label,
        "budget": job.budget,
        "order_seed": job.order_seed,
        "click_seed": job.click_seed,
        "result": result.to_dict(),
        "wall_s": time.perf_counter() - start_wall,
        "cpu_s": time.process_time() - start_cpu,
        **provenance(),
    }


def _settings_for(plan: BenchPlan, task: str, stream: StreamSpec | None) -> WorkerSettings:
    config = plan.config
    model = plan.models[task]
    return WorkerSettings(
        model_path=model.path,
        click_sigma=model.click_sigma,
        stream=stream.test_data if stream is not None else None,
        stream_cap=config.stream_cap(stream) if stream is not None else None,
        source=config.source_validation.get(task),
        source_cap=config.source_validation_max_images,
        subset=config.subset,
        data_cache_dir=config.data_cache_dir,
        user=config.user,
        shuffle=config.shuffle,
        device=config.device,
    )


Call = tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...], Path]
"""``(description, function, arguments, cache path)`` of one computation."""


def _execute(calls: list[Call], executor: Executor) -> list[str]:
    """Run the calls in the given order (longest first) on ``executor``, writing each result to its cache path
    (on this machine) as soon as it is done, so that an interrupted bench keeps what it finished.

    A call that raises is logged with its traceback and skipped; the others go on.

    Returns:
        The descriptions of the calls that failed.
    """
    failed: list[str] = []
    if not calls:
        return failed
    total = len(calls)
    started = time.perf_counter()
    if total == 1 and isinstance(executor, LocalPoolExecutor):
        executor = InProcessExecutor(executor.threads)  # no pool to spawn for one run
    tasks = [(function, arguments) for _, function, arguments, _ in calls]
    for number, (index, outcome) in enumerate(executor.run(tasks), start=1):
        description, _, _, path = calls[index]
        try:
            data = outcome()
        except Exception:
            logger.exception("[%d/%d] %s failed; continuing with the other runs", number, total, description)
            failed.append(description)
            continue
        write_json(path, data)
        _log_done(number, total, description, data, started)
    return failed


def _log_done(number: int, total: int, description: str, data: dict[str, Any], started: float) -> None:
    elapsed = time.perf_counter() - started
    summary = ""
    result = data.get("result")
    if result and result.get("images"):
        region = result["regions"][-1]
        curves = np.asarray([image["dice"][region] for image in result["images"]])
        summary = f" {region} Dice@1 {curves[:, 0].mean():.3f} @{curves.shape[1]} {curves[:, -1].mean():.3f}"
    remaining = elapsed / number * (total - number)
    logger.info(
        "[%d/%d] %s:%s (%.0f s cpu); elapsed %.1f min, about %.1f min left",
        number,
        total,
        description,
        summary,
        data.get("cpu_s", 0.0),
        elapsed / 60,
        remaining / 60,
    )


def run_bench(
    config: BenchConfig,
    only: Sequence[str] | None = None,
    command: str | None = None,
    cluster: str | None = None,
    compute: bool = True,
    first: Sequence[str] = (),
) -> Path:
    """Run the suite: compute every run missing from the cache, then write the raw files and the report.

    Args:
        config: The suite.
        only: Compute only the runs of these streams; the report still includes every run of the suite
            found in the cache (and lists the missing ones).
        command: The command line, for the report (default: this process's).
        cluster: Address of a Dask distributed scheduler to compute the runs on (``None`` = this machine, in
            ``config.workers`` processes); see :mod:`bench.harness.executors`.
        compute: ``False`` computes nothing: the raw files and the report are written from the runs already
            in the cache (e.g. those of an interrupted invocation), the missing ones listed as missing.
        first: Strategy names (``frozen``, ``oaims``, …) whose runs are computed before all others, in this
            order (then longest first): with little time left, the runs a comparison needs come first.

    Returns:
        The output folder. Runs that raised are logged, left out of the report (listed as missing) and
        named under ``failed`` in its ``bench.json``.
    """
    started_at = datetime.now(UTC)
    wall_start = time.perf_counter()
    plan = plan_bench(config, only)
    cache_dir = config.cache_dir
    baseline_calls: list[Call] = []
    for source_job in plan.source_jobs:
        path = source_cache_path(cache_dir, source_job.key)
        if read_json(path) is None:
            settings = _settings_for(plan, source_job.task, None)
            description = (
                f"{source_job.task} source validation / {source_job.budget} clicks / click seed {source_job.seed}"
            )
            baseline_calls.append((description, compute_source_baseline, (source_job, settings), path))
    missing = _unique_keys(job for job in plan.jobs if read_json(run_cache_path(cache_dir, job.key)) is None)
    logger.info(
        "bench: %d runs (%d cached, %d to compute), %d source baselines to compute, %d workers",
        len(plan.jobs),
        len(plan.jobs) - len(missing),
        len(missing),
        len(baseline_calls),
        config.workers,
    )
    failed: list[str] = []
    computed = 0
    executor = make_executor(config.workers, config.threads_per_worker, cluster) if compute else None
    if executor is not None:
        logger.info("bench: computing on %s", executor.description)
        failed += _execute(baseline_calls, executor)
    if config.sweep is not None:  # phase 1: the sweep on the dev parts, whose choice the main runs need
        sweep = [job for job in missing if SWEEP_GROUP in job.groups]
        if executor is not None:
            failed += _execute(_run_calls(plan, sweep), executor)
            computed += len(sweep)
        tuned = {key: choice.spec for key, choice in select_tuned(cached_runs(plan, SWEEP_GROUP)).items()}
        plan = plan_bench(config, only, tuned)
        missing = _unique_keys(job for job in plan.jobs if read_json(run_cache_path(cache_dir, job.key)) is None)
    else:
        tuned = {}
    if executor is not None:
        failed += _execute(_run_calls(plan, missing, first), executor)
        computed += len(missing)
    else:
        logger.info("bench: --cached-only: %d runs of the plan are not in the cache and are left out", len(missing))
        baseline_calls = []
    missing_count = computed
    full_plan = plan if only is None else _cached_plan(config, plan, tuned)
    meta = bench_metadata(
        full_plan, started_at, time.perf_counter() - wall_start, missing_count, len(baseline_calls), command
    )
    meta["failed"] = failed
    earlier = _earlier_invocations(config.output, meta)
    meta["invocations"] = [*earlier, _invocation(meta)] if meta["computed_runs"] or not earlier else earlier
    write_raw(config.output, full_plan, meta)
    write_bench_report(config.output)
    return config.output


def plan_with_cached_tuning(config: BenchConfig, only: Sequence[str] | None = None) -> BenchPlan:
    """The plan as a run would compute it now: main runs keyed by the sweep's choice from the cached sweep
    runs (the strategies' defaults where the sweep has not run yet)."""
    plan = plan_bench(config, only)
    if config.sweep is None:
        return plan
    tuned = {key: choice.spec for key, choice in select_tuned(cached_runs(plan, SWEEP_GROUP)).items()}
    return plan_bench(config, only, tuned) if tuned else plan


def _run_calls(plan: BenchPlan, jobs: Sequence[BenchJob], first: Sequence[str] = ()) -> list[Call]:
    """The computations of ``jobs``, each with its source baseline read from the cache: the runs of the
    strategies named in ``first`` first (in that order), then longest first (the makespan is shortest)."""
    rank = {name: position for position, name in enumerate(first)}
    calls: list[Call] = []
    for job in sorted(jobs, key=lambda job: (rank.get(job.strategy.name, len(rank)), -job.estimate_s)):
        stream = plan.streams[job.stream].spec
        baseline = None
        if job.source_key is not None:
            entry = read_json(source_cache_path(plan.config.cache_dir, job.source_key))
            baseline = entry["curves"] if entry is not None else None
        settings = _settings_for(plan, stream.task, stream)
        path = run_cache_path(plan.config.cache_dir, job.key)
        calls.append((job.describe(), compute_run, (job, settings, baseline), path))
    return calls


def cached_runs(plan: BenchPlan, group: str) -> list[BenchRun]:
    """The runs of ``group`` found in the cache, as :class:`BenchRun` (missing ones left out)."""
    runs = []
    for job in plan.jobs:
        entry = read_json(run_cache_path(plan.config.cache_dir, job.key))
        if group not in job.groups or entry is None:
            continue
        stream = plan.streams[job.stream].spec
        result = StreamResult.from_dict(entry["result"])
        result.strategy = job.label
        runs.append(
            BenchRun(
                job.stream,
                stream.task,
                stream.shift,
                list(job.groups),
                result,
                float(entry.get("wall_s", 0.0)),
                float(entry.get("cpu_s", 0.0)),
                str(entry.get("computed_at") or ""),
                str(entry.get("machine") or ""),
            )
        )
    return runs


def _invocation(meta: dict[str, Any]) -> dict[str, Any]:
    """The record of one ``python -m bench`` invocation kept in ``bench.json``."""
    return {name: meta[name] for name in ("command", "date", "wall_s", "computed_runs", "cached_runs", "workers")}


def _earlier_invocations(output: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Invocations recorded in an existing ``bench.json`` that computed runs (which this report may still use).

    The history restarts when this invocation computed every run (nothing came from the cache) or when
    the code digest changed.
    """
    if meta["cached_runs"] == 0:
        return []
    previous = read_json(output / BENCH_JSON)
    if previous is None or previous.get("code_version") != meta["code_version"]:
        return []
    earlier = previous.get("invocations")
    if not isinstance(earlier, list):
        return []
    return [entry for entry in earlier if isinstance(entry, dict) and entry.get("computed_runs")]


def _unique_keys(jobs: Iterable[BenchJob]) -> list[BenchJob]:
    """The jobs with distinct cache keys (two labels for one setting, e.g. ``oaims`` and ``σ = 3``, run once)."""
    unique: dict[str, BenchJob] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    return list(unique.values())


def _cached_plan(config: BenchConfig, partial: BenchPlan, tuned: TunedSettings | None = None) -> BenchPlan:
    """The plan of the whole suite, for a report after ``--only`` (streams whose data loads)."""
    try:
        return plan_bench(config, tuned=tuned)
    except (FileNotFoundError, ValueError) as error:
        logger.warning("report limited to the computed streams: %s", error)
        return partial
