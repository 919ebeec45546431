"""Numbers derived from the runs: per-strategy summaries, bootstrap intervals over images, paired comparisons, the
sweep's choice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.harness.raw import BenchRun
from clickadapt.evaluation.config import StrategySpec
from clickadapt.evaluation.report import summarise
from clickadapt.evaluation.statistics import Interval, bootstrap_mean, paired_difference, per_unit_means
from clickadapt.tasks import get_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedChoice:
    """The sweep's choice for one (task, strategy name).

    Attributes:
        spec: The chosen candidate (its label and overrides).
        scores: Per candidate label, the mean dev Dice over clicks 1..budget (%) and the number of dev images.
    """

    spec: StrategySpec
    scores: dict[str, tuple[float, int]]


def select_tuned(runs: Sequence[BenchRun]) -> dict[tuple[str, str], TunedChoice]:
    """Per (task, strategy name), the sweep candidate with the highest mean Dice over clicks (the normalised
    area under the Dice-vs-click curve on the key region: brain lesion, fundus cup), averaged over every
    dev image of the task (repetitions of an image averaged first). Ties keep the candidate listed first."""
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    specs: dict[str, StrategySpec] = {}
    for run in runs:
        region = key_region(run.task)
        per = scores.setdefault((run.task, run.result.strategy_name), {})
        values = per.setdefault(run.label, [])
        values += [float(np.mean(image.dice[region])) for image in run.result.images]
        specs[run.label] = StrategySpec(name=run.result.strategy_name, overrides=run.result.overrides, label=run.label)
    choices = {}
    for key, per in scores.items():
        summary = {label: (100 * float(np.mean(values)), len(values)) for label, values in per.items() if values}
        if summary:
            best = max(summary, key=lambda label: summary[label][0])
            choices[key] = TunedChoice(specs[best], summary)
    return choices


@dataclass
class StrategyNumbers:
    """Summary statistics of one strategy label at one budget on one stream (see :func:`summarise`)."""

    label: str
    budget: int
    entry: dict[str, Any]
    runs: list[BenchRun] = field(default_factory=list)

    def stat(self, region: str, metric: str) -> dict[str, Any] | None:
        """``{"mean", "sd", "per_seed"}`` of a metric, or ``None`` when absent."""
        value: dict[str, Any] | None = self.entry["regions"].get(region, {}).get(metric)
        return value

    def mean(self, region: str, metric: str) -> float:
        """Mean over seeds (NaN when absent)."""
        statistic = self.stat(region, metric)
        return float("nan") if statistic is None or statistic["mean"] is None else float(statistic["mean"])


def stream_numbers(runs: Sequence[BenchRun], group: str | None = None) -> dict[tuple[str, int], StrategyNumbers]:
    """Per (label, budget), the :func:`~clickadapt.evaluation.report.summarise` entry of its runs."""
    selected = [run for run in runs if group is None or group in run.groups]
    numbers: dict[tuple[str, int], StrategyNumbers] = {}
    for budget in sorted({run.budget for run in selected}):
        at_budget = [run for run in selected if run.budget == budget]
        for entry in summarise([run.result for run in at_budget])["strategies"]:
            label = entry["strategy"]
            numbers[(label, budget)] = StrategyNumbers(
                label, budget, entry, [run for run in at_budget if run.label == label]
            )
    return numbers


def label_order(labels: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """``labels`` (deduplicated) with those of ``preferred`` first, in its order, then the others as met."""
    labels = list(dict.fromkeys(labels))
    return [label for label in preferred if label in labels] + [label for label in labels if label not in preferred]


MAIN_ORDER = ("frozen", "tent", "self-train", "ia-sa", "tsca", "post", "mid", "oaims")
"""The order of strategies in tables and plots (others follow in the order met)."""


def order_index(label: str) -> int:
    """Place of a strategy label in tables and plots (:data:`MAIN_ORDER`; others after)."""
    return MAIN_ORDER.index(label) if label in MAIN_ORDER else len(MAIN_ORDER)


def regions_of(task: str) -> list[str]:
    """The regions of a task (brain: lesion; fundus: disc, cup)."""
    return list(get_task(task).regions)


def key_region(task: str) -> str:
    """The region the analysis ranks by: brain lesion, fundus cup (as in the paper)."""
    regions = regions_of(task)
    return "cup" if "cup" in regions else regions[0]


def _per_seed(entry: StrategyNumbers | None, region: str, metric: str) -> list[float]:
    statistic = None if entry is None else entry.stat(region, metric)
    return [] if statistic is None else [float("nan") if v is None else float(v) for v in statistic["per_seed"]]


def image_values(
    runs: Sequence[BenchRun], region: str, click: int, before_update: bool = False
) -> dict[tuple[str, int], list[float]]:
    """Per (image key, click seed), the Dice on ``region`` after ``click`` clicks in each run (one value per
    stream order) — the pairing unit of :func:`~clickadapt.evaluation.statistics.paired_difference`.

    With ``before_update`` (``click`` 1 only), the first mask of the model before any update on the image
    (:attr:`~clickadapt.evaluation.stream.ImageRecord.first_before_update`) instead of the displayed one."""
    values: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        index = min(click, run.budget) - 1
        for image in run.result.images:
            if region not in image.dice:
                continue
            if before_update:
                if image.first_before_update is None or region not in image.first_before_update:
                    continue
                value = image.first_before_update[region]
            else:
                value = image.dice[region][index]
            values.setdefault((image.key, run.result.click_seed), []).append(float(value))
    return values


def dice_interval(runs: Sequence[BenchRun], region: str, click: int, before_update: bool = False) -> Interval:
    """Mean Dice after ``click`` clicks with its 95 % bootstrap interval over images (repetitions of an
    image — stream orders, click seeds — averaged first); fractions, ``n`` = images."""
    values = image_values(runs, region, click, before_update)
    per_pair = {pair: float(np.mean(items)) for pair, items in values.items()}
    return bootstrap_mean(list(per_unit_means(per_pair).values()))


Comparison = tuple[float, str, Interval]
"""``(mean difference in Dice points, verdict, its interval in Dice points)``."""


def compare(
    numbers: dict[tuple[str, int], StrategyNumbers], better: str, worse: str, budget: int, region: str, click: int
) -> Comparison | None:
    """Whether ``better`` beats ``worse`` on Dice at ``click``: the paired difference over images with its 95 %
    bootstrap interval, and a verdict.

    Pairs are (image, click seed): the same image with the same simulated clicks; a strategy's stream
    orders are averaged per pair first. Verdicts: ``holds`` (interval above 0), ``reversed`` (below 0),
    ``unresolved`` (it contains 0: the data cannot tell the two apart). A difference is called real only
    when its interval excludes 0.

    Returns:
        ``(difference, verdict, interval)`` in Dice points, or ``None`` when either strategy is missing or
        they share no image.
    """
    first = numbers.get((better, budget))
    second = numbers.get((worse, budget))
    if first is None or second is None:
        return None
    interval = paired_difference(
        image_values(first.runs, region, click), image_values(second.runs, region, click)
    ).scaled(100.0)
    if interval.n == 0:
        return None
    verdict = "unresolved" if not interval.excludes_zero else "holds" if interval.low > 0 else "reversed"
    return interval.mean, verdict, interval
