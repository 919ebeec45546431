"""What a latency measurement returns (seconds and Dice), and the statistics the report reads from it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.speed.settings import RunSpec


@dataclass(kw_only=True)
class ClickTimes:
    """The click and finish times (seconds) and Dice that every latency measurement records.

    Attributes:
        images: Images of the stream.
        size: Image side.
        click_s: Every click's click-to-mask time.
        first_click_s: The first click of every image.
        later_click_s: Clicks 2..T.
        finish_s: Every ``finish``.
        dice: Per region, the mean Dice after clicks 1..budget.
    """

    images: int
    size: int
    click_s: list[float] = field(default_factory=list)
    first_click_s: list[float] = field(default_factory=list)
    later_click_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    dice: dict[str, list[float]] = field(default_factory=dict)


@dataclass(kw_only=True)
class RunResult(ClickTimes):
    """Timings (seconds) and quality of one :class:`~bench.speed.settings.RunSpec`.

    Attributes:
        spec: What was measured.
        images: Images of the stream.
        size: Image side.
        parameters: Parameters of the network.
        trained: Whether the weights came from a checkpoint (else Dice is meaningless).
        threads: Intra-op threads in use.
        click_s: Every click's click-to-mask time.
        first_click_s: The first click of every image.
        later_click_s: Clicks 2..T (with ``oaims``: the Mid-Interaction clicks).
        update_s: Clicks 2..T: the strategy's update alone (as the session times it).
        snapshot_s: Clicks 2..T: the undo snapshot alone.
        finish_s: Every ``finish`` (with ``oaims``: the Post-Interaction update).
        dice: Per region, the mean Dice after clicks 1..budget.
        baseline_rss_mb: Resident memory after loading, before the stream.
        peak_rss_mb: Peak resident memory of the process.
        gpu_peak_mb: Peak GPU memory allocated (``None`` on a CPU).
    """

    spec: RunSpec
    parameters: int
    trained: bool
    threads: int
    update_s: list[float] = field(default_factory=list)
    snapshot_s: list[float] = field(default_factory=list)
    baseline_rss_mb: float | None = None
    peak_rss_mb: float = 0.0
    gpu_peak_mb: float | None = None


@dataclass(kw_only=True)
class HttpResult(ClickTimes):
    """Timings (seconds) of the same stream through the HTTP API.

    Attributes:
        task: Task name.
        strategy: Strategy of the server.
        images: Images sent.
        size: Image side.
        autosave: Whether the server saved the weights after every updating click (its default).
        click_s: Round trip of every ``POST …/clicks``.
        first_click_s: The first click of every image.
        later_click_s: Clicks 2..T.
        server_click_s: The server's own ``last_click_s`` (forward + update) of every click.
        finish_s: Round trip of every ``POST …/finish``.
        dice: Per region, the mean Dice after clicks 1..budget (masks read back over HTTP).
        server_peak_rss_mb: Peak resident memory of the server process.
        source_files: Images sent as their source file (the rest as their preprocessed array); ``None`` in
            results from before it was recorded.
        input_difference: Largest absolute difference between an image's in-process model input and the one
            the server prepared from what it was sent (standard deviations of the normalised input).
    """

    task: str
    strategy: str
    autosave: bool
    server_click_s: list[float] = field(default_factory=list)
    server_peak_rss_mb: float | None = None
    source_files: int | None = None
    input_difference: float | None = None


def median_ms(values: Sequence[float]) -> float | None:
    """Median of seconds, in milliseconds (``None`` for no values)."""
    return float(np.median(values) * 1000.0) if len(values) else None


def p95_ms(values: Sequence[float]) -> float | None:
    """95th percentile of seconds, in milliseconds (``None`` for no values)."""
    return float(np.percentile(values, 95) * 1000.0) if len(values) else None


def padded_curves(
    per_click: Sequence[Mapping[str, float]], regions: Iterable[str], budget: int
) -> dict[str, list[float]]:
    """Per region, the Dice after clicks 1..budget from one Dice mapping per click made.

    A curve that stopped before the budget keeps its last value, as
    :func:`clickadapt.evaluation.stream.click_through` returns it.
    """
    curves: dict[str, list[float]] = {}
    for region in regions:
        values = [float(step[region]) for step in per_click]
        curves[region] = values + [values[-1]] * (budget - len(values))
    return curves


def mean_dice_curves(curves: Sequence[Mapping[str, Sequence[float]]], regions: Iterable[str]) -> dict[str, list[float]]:
    """Per region, the mean over images of Dice curves that are already padded to the budget.

    Args:
        curves: Per image, per region, the Dice after clicks 1..budget (what
            :func:`clickadapt.evaluation.stream.click_through` returns, or :func:`padded_curves`).
        regions: The regions to average.

    Returns:
        Per region, the mean Dice after clicks 1..budget (an empty list without images).
    """
    return {
        region: [float(value) for value in np.mean([curve[region] for curve in curves], axis=0)] if curves else []
        for region in regions
    }
