"""Cells and tables of ``REPORT.md``: percentages with sd, intervals, paired differences with verdicts."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

from bench.harness.constants import (
    REPORT_NOC_THRESHOLD,
)
from bench.harness.numbers import (
    Comparison,
    StrategyNumbers,
)
from clickadapt.evaluation.metrics import noc_key
from clickadapt.evaluation.report import reported_clicks
from clickadapt.evaluation.statistics import Interval

logger = logging.getLogger(__name__)


def pct(statistic: dict[str, Any] | None, with_sd: bool = True) -> str:
    """A Dice statistic in % (``mean ± sd`` over repetitions when there are several), ``–`` when absent."""
    if statistic is None or statistic.get("mean") is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{100 * statistic['mean']:.1f}"
    return f"{text} ± {100 * statistic['sd']:.1f}" if with_sd and len(statistic["per_seed"]) > 1 else text


def num(statistic: dict[str, Any] | None, digits: int = 2) -> str:
    """A plain statistic (``mean ± sd``) with ``digits`` decimals, ``–`` when absent."""
    if statistic is None or statistic.get("mean") is None or not math.isfinite(statistic["mean"]):
        return "–"
    text = f"{statistic['mean']:.{digits}f}"
    return f"{text} ± {statistic['sd']:.{digits}f}" if len(statistic["per_seed"]) > 1 else text


def ms(seconds: float | None) -> str:
    """Seconds as whole milliseconds, ``–`` when absent."""
    return "–" if seconds is None or not math.isfinite(seconds) else f"{1000 * seconds:.0f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def stream_table(
    numbers: dict[tuple[str, int], StrategyNumbers], labels: Sequence[str], budget: int, regions: Sequence[str]
) -> list[str]:
    """The main table of a stream: per label, Dice at the reported clicks, NoC, forgetting and times."""
    clicks = reported_clicks(budget)
    noc = noc_key(REPORT_NOC_THRESHOLD)
    header = ["strategy"]
    for region in regions:
        header += [f"{region} Dice@{click}" for click in clicks]
    header += [f"{region} NoC@{noc} (fail)" for region in regions]
    header += [f"{region} forgetting@{budget}" for region in regions]
    header += ["ms / click", "ms / image end", "CPU s / image"]
    rows = []
    for label in labels:
        entry = numbers.get((label, budget))
        if entry is None:
            continue
        row = [label]
        for region in regions:
            row += [pct(entry.stat(region, f"dice@{click}")) for click in clicks]
        for region in regions:
            failures = entry.stat(region, f"failures@{noc}")
            images = entry.entry["images"][0] if entry.entry["images"] else 0
            fail = "–" if failures is None else f"{failures['mean']:.1f}/{images}"
            row.append(f"{num(entry.stat(region, f'noc@{noc}'), 1)} ({fail})")
        for region in regions:
            row.append(pct(entry.stat(region, f"forgetting@{budget}")))
        timing = entry.entry["time"]
        images_total = sum(len(run.result.images) for run in entry.runs)
        cpu = sum(run.cpu_s for run in entry.runs) / images_total if images_total else float("nan")
        row += [ms(timing["click_s_median"]), ms(timing["finish_s_median"]), f"{cpu:.2f}"]
        rows.append(row)
    return markdown_table(header, rows)


VERDICT_MARKS = {"holds": "✔", "reversed": "✘", "unresolved": "≈"}


def verdict_cell(comparison: Comparison | None) -> str:
    """``+d [low, high] ✔/✘/≈ n=…`` of a paired comparison, ``–`` when absent."""
    if comparison is None:
        return "–"
    difference, verdict, interval = comparison
    return f"{difference:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] {VERDICT_MARKS[verdict]} n={interval.n}"


def interval_cell(interval: Interval) -> str:
    """A Dice mean with its 95 % interval in %, and n, ``–`` without images."""
    if interval.n == 0:
        return "–"
    return f"{100 * interval.mean:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}] n={interval.n}"


def difference_cell(interval: Interval) -> str:
    """A paired difference in Dice points with its 95 % interval and n, ``–`` without pairs."""
    if interval.n == 0:
        return "–"
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] n={interval.n}"
