"""``python -m bench CONFIG``: the command line of the benchmark suite."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.cache import read_json, run_cache_path, source_cache_path
from bench.harness.config import load_bench_config
from bench.harness.constants import ABLATION_GROUP, BENCH_JSON, REPORT_MD
from bench.harness.execution import plan_with_cached_tuning, run_bench
from bench.harness.plan import BenchPlan, cost_per_click
from bench.harness.report import write_bench_report
from bench.harness.restore import restore_cache
from clickadapt.adaptation.strategies import STRATEGIES

logger = logging.getLogger(__name__)


def describe_plan(plan: BenchPlan) -> str:
    """The ``--dry-run`` listing: every run with its images, cache state and estimated CPU time."""
    config = plan.config
    lines = [
        f"{'stream':<16} {'strategy':<20} {'budget':>6} {'order':>5} {'click':>5} {'images':>6}  {'state':<10} "
        f"{'est. s':>7}"
    ]
    total = 0.0
    to_compute: list[float] = []
    first_label: dict[str, str] = {}
    cached_count = 0
    for job in plan.jobs:
        cached = read_json(run_cache_path(config.cache_dir, job.key)) is not None
        images = len(plan.streams[job.stream].keys)
        if job.key in first_label:
            state = f"= {first_label[job.key]}"
        else:
            first_label[job.key] = job.label
            total += job.estimate_s
            cached_count += cached
            if not cached:
                to_compute.append(job.estimate_s)
            state = "cached" if cached else "to run"
        lines.append(
            f"{job.stream:<16} {job.label:<20} {job.budget:>6} {job.order_seed:>5} {job.click_seed:>5} {images:>6}  "
            f"{state:<10} {job.estimate_s:>7.0f}" + ("  [ablation]" if job.groups == [ABLATION_GROUP] else "")
        )
    baselines = sum(
        job.images * job.budget * cost_per_click(job.task, "frozen")
        for job in plan.source_jobs
        if read_json(source_cache_path(config.cache_dir, job.key)) is None
    )
    work = sum(to_compute) + baselines
    wall = _makespan(to_compute, config.workers) + baselines / config.workers
    lines += [
        "",
        f"{len(plan.jobs)} runs, {len(first_label)} distinct ({cached_count} cached, {len(to_compute)} to run); "
        f"{len(plan.source_jobs)} source-validation baselines.",
        f"Estimated CPU time to compute: {work / 60:.1f} min (all runs from scratch: {(total + baselines) / 60:.1f} "
        f"min); estimated wall time with {config.workers} worker(s) on an otherwise idle machine: {wall / 60:.1f} min.",
    ]
    return "\n".join(lines)


def _makespan(durations: Sequence[float], workers: int) -> float:
    """Longest-first greedy schedule length of ``durations`` on ``workers`` identical workers."""
    loads = [0.0] * max(workers, 1)
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


def handle_bench(args: argparse.Namespace, command: str | None = None) -> int:
    """Run the suite as the parsed arguments say; ``command`` is the command line recorded in the report."""
    config = load_bench_config(args.config)
    committed_output = config.output
    updates: dict[str, Any] = {}
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        updates["workers"] = args.workers
    if args.output is not None:
        updates["output"] = Path(args.output)
    if updates:
        config = config.model_copy(update=updates)
    if args.report_only:
        paths = write_bench_report(config.output)
        print(f"Report regenerated: {paths[0]}")
        return 0
    only = None if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    first = [] if args.first is None else [name.strip() for name in args.first.split(",") if name.strip()]
    unknown = sorted(set(first) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"--first: unknown strategy name(s) {unknown}; known: {sorted(STRATEGIES)}")
    if not args.no_restore:
        for folder in dict.fromkeys((committed_output, config.output)):
            restore_cache(folder, config.cache_dir)
    if args.dry_run:
        print(describe_plan(plan_with_cached_tuning(config, only)))
        return 0
    output = run_bench(config, only, command, cluster=args.cluster, compute=not args.cached_only, first=first)
    print(f"Report: {output / REPORT_MD}")
    failed = json.loads((output / BENCH_JSON).read_text(encoding="utf-8")).get("failed", [])
    if failed:
        print(f"{len(failed)} run(s) failed (see the log above): {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmark suite on the real data (cached) and write bench/results/REPORT.md.",
    )
    parser.add_argument("config", help="bench YAML, e.g. configs/bench/full.yaml or configs/bench/quick.yaml")
    parser.add_argument("--only", help="comma-separated stream names: compute only their runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs with cache state and estimated time")
    parser.add_argument("--report-only", action="store_true", help="regenerate the report from the raw files")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="compute nothing: write the raw files and the report from the runs already cached",
    )
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="do not seed the run cache from the runs recorded in the output folders' raw files",
    )
    parser.add_argument(
        "--first",
        metavar="STRATEGIES",
        help="comma-separated strategy names (e.g. frozen,oaims) whose missing runs are computed first, in that order",
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: the config's)")
    parser.add_argument("--output", help="output folder (default: the config's)")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help='compute the runs on a Dask distributed cluster (tcp://HOST:8786; needs pip install -e ".[cluster]")',
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m bench``; returns the process exit status (2 on a configuration error)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return handle_bench(args, shlex.join(["python", "-m", "bench", *arguments]))
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"python -m bench: error: {error}", file=sys.stderr)
        return 2
