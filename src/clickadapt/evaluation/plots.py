"""Figures of evaluation runs, drawn with matplotlib's Agg canvas (no display needed).

- Dice vs click: per region, the mean prequential Dice after each click, one line per strategy
  (mean over seeds, band = ± sd over seeds).
- Dice along the stream: per region, the Dice after click 1 and after the last click as a trailing
  moving average over stream position, one line per strategy (averaged over seeds position by
  position) — shows whether a strategy improves, or drifts, as it sees more images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clickadapt.evaluation.stream import StreamResult

PANEL_SIZE = (4.5, 3.5)
DPI = 120


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first ``window − 1`` points average what is available so far.

    Raises:
        ValueError: If ``window`` < 1.
    """
    if window < 1:
        raise ValueError(f"moving-average window must be at least 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _strategies(results: Sequence[StreamResult]) -> dict[str, list[StreamResult]]:
    groups: dict[str, list[StreamResult]] = {}
    for result in results:
        groups.setdefault(result.strategy, []).append(result)
    return groups


def _regions(results: Sequence[StreamResult]) -> list[str]:
    regions: list[str] = []
    for result in results:
        regions += [region for region in result.regions if region not in regions]
    return regions


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)


def plot_dice_vs_click(results: Sequence[StreamResult], path: str | Path) -> Path:
    """Mean Dice (%) after each click, one panel per region, one line per strategy.

    Returns:
        ``path``.
    """
    path = Path(path)
    regions = _regions(results)
    figure = Figure(figsize=(PANEL_SIZE[0] * max(len(regions), 1), PANEL_SIZE[1]))
    axes: list[Axes] = [figure.add_subplot(1, max(len(regions), 1), index + 1) for index in range(len(regions))]
    for axis, region in zip(axes, regions, strict=True):
        for name, runs in _strategies(results).items():
            per_seed = [100 * run.curves(region).mean(axis=0) for run in runs if run.images and region in run.regions]
            if not per_seed:
                continue
            stacked = np.stack(per_seed)
            mean, sd = stacked.mean(axis=0), stacked.std(axis=0)
            clicks = np.arange(1, mean.size + 1)
            (line,) = axis.plot(clicks, mean, marker="o", markersize=3, label=name)
            if len(per_seed) > 1:
                axis.fill_between(clicks, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
        axis.set_title(f"{region}: Dice vs click")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("click")
        axis.set_ylabel("Dice (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    _save(figure, path)
    return path


def plot_stream_dice(results: Sequence[StreamResult], path: str | Path, window: int | None = None) -> Path:
    """Dice (%) after click 1 and after the last click along the stream (trailing moving average).

    Args:
        results: Runs to draw.
        path: PNG file.
        window: Moving-average window in images; ``None`` = a tenth of the stream (at least 1).

    Returns:
        ``path``.
    """
    path = Path(path)
    regions = _regions(results)
    rows = max(len(regions), 1)
    figure = Figure(figsize=(PANEL_SIZE[0] * 2, PANEL_SIZE[1] * rows))
    for row, region in enumerate(regions):
        budget = max((run.budget for run in results if region in run.regions), default=1)
        for column, click in enumerate((1, budget)):
            axis = figure.add_subplot(rows, 2, 2 * row + column + 1)
            size = window or 1
            for name, runs in _strategies(results).items():
                per_seed = [run.curves(region)[:, click - 1] for run in runs if run.images and region in run.regions]
                if not per_seed:
                    continue
                length = min(values.size for values in per_seed)
                mean = 100 * np.mean([values[:length] for values in per_seed], axis=0)
                size = window or max(1, length // 10)
                axis.plot(np.arange(1, length + 1), moving_average(mean, size), label=name)
            axis.set_title(f"{region}: Dice at click {click} along the stream")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_xlabel("image in stream")
            axis.set_ylabel(f"Dice (%), mean of last {size} images" if size > 1 else "Dice (%)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
    _save(figure, path)
    return path
