"""The report's plots (``plots/*.png``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench.harness.constants import ABLATION_GROUP, FROZEN_LABEL, MAIN_GROUP, PLOTS_DIR
from bench.harness.numbers import MAIN_ORDER, key_region, label_order, order_index, stream_numbers
from bench.harness.raw import BenchRun
from clickadapt.evaluation.plots import moving_average, plot_dice_vs_click, plot_stream_dice
from clickadapt.evaluation.stream import (
    StreamResult,
)

logger = logging.getLogger(__name__)


def plot_overview(meta: dict[str, Any], runs: Sequence[BenchRun], path: Path, budget: int) -> Path:
    """Grouped bars: Dice (%) at the last click per stream (key region) and strategy, ± sd over orders."""
    streams = meta["streams"]
    numbers = {s["name"]: stream_numbers([r for r in runs if r.stream == s["name"]], MAIN_GROUP) for s in streams}
    labels = label_order([label for per in numbers.values() for (label, b) in per if b == budget], MAIN_ORDER)
    figure = Figure(figsize=(max(8.0, 1.1 * len(streams) + 2), 4.0))
    axis = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(labels), 1)
    for index, label in enumerate(labels):
        means, sds = [], []
        for stream in streams:
            entry = numbers[stream["name"]].get((label, budget))
            statistic = None if entry is None else entry.stat(key_region(stream["task"]), f"dice@{budget}")
            ok = statistic is not None and statistic["mean"] is not None
            means.append(100 * statistic["mean"] if ok and statistic else np.nan)
            sds.append(100 * statistic["sd"] if ok and statistic else 0.0)
        positions = np.arange(len(streams)) + (index - (len(labels) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=sds, label=label, capsize=1.5)
    axis.set_xticks(np.arange(len(streams)))
    axis.set_xticklabels([stream["name"] for stream in streams], rotation=30, ha="right", fontsize="small")
    axis.set_ylabel(f"Dice (%) at click {budget}")
    axis.set_title("Brain lesion / fundus cup Dice at the last click")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="x-small", ncol=min(len(labels), 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def gain_along_stream(runs: Sequence[StreamResult], region: str, click: int) -> dict[str, np.ndarray]:
    """Per strategy, the Dice gain over the frozen model on the same image at each stream position.

    Each run is paired with the frozen run of the same seed (same order and same user clicks on each
    image), so the difficulty of the image cancels and what is left is what the strategy has learnt by
    then. Averaged over seeds position by position; Dice points.

    Returns:
        ``{label: gains}`` for every label but ``frozen`` that has a frozen partner.
    """
    frozen = {run.click_seed: run for run in runs if run.strategy == FROZEN_LABEL}
    per_label: dict[str, list[np.ndarray]] = {}
    for run in runs:
        partner = frozen.get(run.click_seed)
        if run.strategy == FROZEN_LABEL or partner is None or region not in run.regions:
            continue
        reference = {image.key: image.dice[region][click - 1] for image in partner.images}
        gains = [
            100 * (image.dice[region][click - 1] - reference[image.key])
            for image in run.images
            if image.key in reference
        ]
        per_label.setdefault(run.strategy, []).append(np.asarray(gains, dtype=np.float64))
    averaged = {}
    for label, series in per_label.items():
        length = min(values.size for values in series)
        averaged[label] = np.mean([values[:length] for values in series], axis=0)
    return averaged


def plot_gain_along_stream(runs: Sequence[StreamResult], path: Path, budget: int) -> Path:
    """Learning curves: gain over frozen (Dice points) at click 1 and at the last click along the stream,
    trailing moving average over a quarter of the stream; one panel per region and click."""
    regions: list[str] = []
    for run in runs:
        regions += [region for region in run.regions if region not in regions]
    figure = Figure(figsize=(9.0, 3.4 * max(len(regions), 1)))
    for row, region in enumerate(regions):
        for column, click in enumerate((1, budget)):
            axis = figure.add_subplot(max(len(regions), 1), 2, 2 * row + column + 1)
            for label, gains in gain_along_stream(runs, region, click).items():
                window = max(1, gains.size // 4)
                positions = np.arange(1, gains.size + 1)
                axis.plot(positions, moving_average(gains, window), label=label, color=_colour(label))
            axis.axhline(0.0, color="black", linewidth=0.8)
            axis.set_title(f"{region}: gain over frozen at click {click}", fontsize="medium")
            axis.set_xlabel("image in stream")
            axis.set_ylabel("Δ Dice (points), moving average")
            axis.grid(alpha=0.3)
            if axis.get_legend_handles_labels()[0]:  # a stream with only the frozen model has no gain to show
                axis.legend(fontsize="x-small", ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _colour(label: str) -> str:
    """A fixed colour per main strategy so that all plots agree."""
    index = order_index(label)
    return f"C{index}" if index < len(MAIN_ORDER) else "C9"


def write_plots(meta: dict[str, Any], runs: Sequence[BenchRun], results_dir: Path) -> list[Path]:
    """Per stream, Dice vs click and learning curves (main strategies, full budget); per ablation stream,
    Dice vs click of the ablation labels; an overview bar chart."""
    plots = results_dir / PLOTS_DIR
    budget = max((run.budget for run in runs if MAIN_GROUP in run.groups), default=10)
    paths = []
    for stream in meta["streams"]:
        name = stream["name"]
        main = [r.result for r in runs if r.stream == name and MAIN_GROUP in r.groups and r.budget == budget]
        main.sort(key=lambda result: order_index(result.strategy))
        if main:
            paths.append(plot_dice_vs_click(main, plots / f"{name}_dice_vs_click.png"))
            paths.append(plot_gain_along_stream(main, plots / f"{name}_learning_curves.png", budget))
            paths.append(plot_stream_dice(main, plots / f"{name}_stream_dice.png"))
        ablation = [r.result for r in runs if r.stream == name and ABLATION_GROUP in r.groups and r.budget == budget]
        if ablation:
            paths.append(plot_dice_vs_click(ablation, plots / f"{name}_ablation_dice_vs_click.png"))
    if runs:
        paths.append(plot_overview(meta, runs, plots / "overview.png", budget))
    return paths
