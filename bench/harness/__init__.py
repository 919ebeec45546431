"""The benchmark suite (``python -m bench CONFIG``) on the real data (streams × strategies × budgets × seeds).

A bench config (``configs/bench/full.yaml``) names target-domain *streams* (a dataset selection, the
kind of shift it stands for and a cap on its length), the *experiments* to run on them (strategies ×
click budgets × stream orders) and *ablations* (strategies with overrides, under their own labels).
Every (stream, strategy, budget, seed) run goes through the evaluation path of ``clickadapt evaluate``
(the prequential stream runner :func:`~clickadapt.evaluation.stream.run_stream` plus the
forgetting measurement on the task's source validation set) and is cached as raw JSON under
``bench/cache/`` keyed by a SHA-256 of everything that determines it (model weights, the selected
images, strategy settings, budget, seed, simulated user, click σ, source validation set and a digest
of the code that computes it), so a rerun computes only what is missing. Runs are spread over worker
processes (one torch thread each).

The output folder (``bench/results``) then holds the raw files — ``raw.csv`` (one row per run, image
and region: the Dice after every click, the clicks, model versions and times), ``runs.csv`` (one row
per run and region: forgetting, run times, cache key) and ``bench.json`` (command, machine, date, wall
time, models, streams) — and everything derived from them alone by :func:`~bench.harness.report.write_bench_report`:
``REPORT.md`` and ``plots/*.png``. The hand-written discussion between the markers
:data:`DISCUSSION_BEGIN` and
:data:`DISCUSSION_END` (:mod:`~bench.harness.constants`) of an existing ``REPORT.md`` is kept when the report
is regenerated.

Modules, in the order a run goes through them: :mod:`~bench.harness.config` (the YAML),
:mod:`~bench.harness.plan` (the runs and their keys), :mod:`~bench.harness.cache`,
:mod:`~bench.harness.execution` (computing the missing runs in a
local process pool), :mod:`~bench.harness.raw` (the raw files), :mod:`~bench.harness.numbers`
(summaries, intervals, comparisons), :mod:`~bench.harness.report`, :mod:`~bench.harness.plots`,
:mod:`~bench.harness.cli`.
:mod:`~bench.harness.paper` holds the paper's published numbers.
"""

from __future__ import annotations

from bench.harness.config import BenchConfig, load_bench_config, parse_bench_config
from bench.harness.execution import run_bench
from bench.harness.numbers import compare, select_tuned, stream_numbers
from bench.harness.plan import BenchPlan, plan_bench
from bench.harness.raw import read_raw
from bench.harness.report import write_bench_report

__all__ = [
    "BenchConfig",
    "BenchPlan",
    "compare",
    "load_bench_config",
    "parse_bench_config",
    "plan_bench",
    "read_raw",
    "run_bench",
    "select_tuned",
    "stream_numbers",
    "write_bench_report",
]
