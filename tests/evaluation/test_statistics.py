"""Bootstrap intervals over images: coverage on a known distribution, paired versus unpaired."""

from __future__ import annotations

import numpy as np
import pytest

from clickadapt.evaluation.statistics import bootstrap_mean, paired_difference, per_unit_means, unpaired_difference


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials, covered = 300, 0
    for trial in range(trials):
        sample = rng.beta(4.0, 2.0, size=40)  # Dice-like values, true mean 4/6
        interval = bootstrap_mean(sample, resamples=800, seed=trial)
        covered += interval.low <= 4.0 / 6.0 <= interval.high
        assert interval.low <= interval.mean <= interval.high and interval.n == 40
    assert 0.90 <= covered / trials <= 0.985


def test_interval_narrows_with_more_images_and_handles_tiny_samples() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(0.5, 0.1, 10))
    large = bootstrap_mean(rng.normal(0.5, 0.1, 400))
    assert (large.high - large.low) < (small.high - small.low) / 4
    one = bootstrap_mean([0.7])
    assert (one.mean, one.low, one.high, one.n) == (0.7, 0.7, 0.7, 1)
    assert bootstrap_mean([float("nan")]).n == 0
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0, 2.0], confidence=1.0)


def test_paired_interval_finds_a_small_consistent_gain_that_an_unpaired_one_misses() -> None:
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.2, 0.9, size=30)  # images differ a lot; B is 2 points better on each
    frozen = {(f"img{i}", 0): [float(d)] for i, d in enumerate(difficulty)}
    adapted = {
        (f"img{i}", 0): [float(d + 0.02 + rng.normal(0, 0.005)) for _ in range(3)]  # three stream orders
        for i, d in enumerate(difficulty)
    }
    paired = paired_difference(adapted, frozen)
    assert paired.n == 30 and paired.excludes_zero and paired.low > 0.01
    unpaired = unpaired_difference(
        [np.mean(v) for v in adapted.values()], [v[0] for v in frozen.values()], resamples=2000
    )
    assert not unpaired.excludes_zero
    assert paired.mean == pytest.approx(unpaired.mean)


def test_paired_difference_pairs_by_image_and_click_seed_and_averages_per_image() -> None:
    first = {("a", 0): [0.9, 0.7], ("a", 1): [0.6], ("b", 0): [0.5], ("c", 0): [0.4]}
    second = {("a", 0): [0.5], ("a", 1): [0.6], ("b", 0): [0.5]}  # no pair for c
    interval = paired_difference(first, second)
    # a: mean of (0.8 - 0.5) and (0.6 - 0.6) = 0.15; b: 0.0 -> mean 0.075 over n = 2 images
    assert interval.n == 2 and interval.mean == pytest.approx(0.075)
    assert per_unit_means({("a", 0): 1.0, ("a", 1): 0.0, ("b", 0): 0.5}) == {"a": 0.5, "b": 0.5}
