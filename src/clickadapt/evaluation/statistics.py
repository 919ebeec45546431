"""Bootstrap confidence intervals over images, and the paired comparison of two strategies.

The unit of resampling is the *image*: a stream's images are the sample from the target domain, so an
interval over images says how much a mean Dice would move with another draw of images. Repetitions of a
run on the same images (stream orders, click seeds) are averaged per image first: they are not independent
draws of the domain.

A comparison of strategy A against a reference B (frozen) is *paired*: for each image and click seed, A's
Dice (mean over its stream orders) minus B's Dice with the same clicks on the same image; the per-image mean
of those differences is bootstrapped. Pairing removes the between-image variance both strategies share
(an easy image is easy for both), which an unpaired interval would count twice.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap confidence interval.

    Attributes:
        mean: The statistic on the observed sample.
        low: Lower bound of the interval.
        high: Upper bound.
        n: Number of resampled units (images).
        confidence: Coverage the interval aims at (0.95).
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (the difference is called real)."""
        return self.low > 0.0 or self.high < 0.0

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. ×100 for Dice points)."""
        return Interval(self.mean * factor, self.low * factor, self.high * factor, self.n, self.confidence)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (one value per unit, e.g. per image).

    Args:
        values: Finite values, one per independent unit; NaNs are dropped.
        confidence: Two-sided coverage, in (0, 1).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the interval is deterministic given it).

    Returns:
        The mean and its interval; with one value the interval is that value, with none all NaN and ``n`` 0.

    Raises:
        ValueError: For ``confidence`` outside (0, 1) or ``resamples`` < 1.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, confidence)
    mean = float(data.mean())
    if data.size == 1:
        return Interval(mean, mean, mean, 1, confidence)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(mean, float(low), float(high), int(data.size), confidence)


def per_unit_means(values: Mapping[Any, float]) -> dict[Hashable, float]:
    """Average values keyed ``(unit, *repetition)`` over their repetitions: one value per unit (image)."""
    grouped: dict[Hashable, list[float]] = {}
    for key, value in values.items():
        grouped.setdefault(key[0], []).append(float(value))
    return {unit: float(np.mean(items)) for unit, items in grouped.items()}


def paired_difference(
    first: Mapping[Any, Sequence[float]],
    second: Mapping[Any, Sequence[float]],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap interval of mean(first − second) over images.

    Args:
        first: Per ``(image key, click seed)`` tuple, the values of the strategy (one per stream order).
        second: The same for the reference; only pairs present in both count.
        confidence: Two-sided coverage.
        resamples: Bootstrap resamples.
        seed: Resampling seed.

    Returns:
        The interval of the mean per-image difference; ``n`` is the number of images with a pair.
    """
    differences: dict[Any, float] = {}
    for pair, values in first.items():
        if pair in second and len(values) and len(second[pair]):
            differences[pair] = float(np.mean(values)) - float(np.mean(second[pair]))
    per_image = per_unit_means(differences)
    return bootstrap_mean(list(per_image.values()), confidence, resamples, seed)


def unpaired_difference(
    first: Sequence[float] | np.ndarray,
    second: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of mean(first) − mean(second) resampling each sample on its own (no pairing).

    Only for comparison with :func:`paired_difference`: on the same images the paired interval is the
    right one. ``n`` is the smaller sample size.
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, confidence)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1) - b[
        rng.integers(0, b.size, size=(resamples, b.size))
    ].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(a.mean() - b.mean()), float(low), float(high), int(min(a.size, b.size)), confidence)
