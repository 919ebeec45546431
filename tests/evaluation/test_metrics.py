"""Metrics against hand-computed values on constructed masks and curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clickadapt.evaluation.metrics import (
    clicks_to_threshold,
    dice,
    dice_auc,
    noc_key,
    noc_summary,
    region_dice,
)
from clickadapt.tasks import BRAIN, FUNDUS


def test_dice_of_overlapping_squares_matches_hand_count() -> None:
    label = np.zeros((8, 8), dtype=np.int64)
    label[0:4, 0:4] = 1  # 16 pixels
    prediction = np.zeros((8, 8), dtype=np.int64)
    prediction[2:6, 0:4] = 1  # 16 pixels, 8 shared
    assert dice(prediction, label, (1,)) == pytest.approx(2 * 8 / 32)


def test_dice_both_empty_is_one_and_one_empty_is_zero() -> None:
    empty = np.zeros((4, 4), dtype=np.int64)
    full = np.ones((4, 4), dtype=np.int64)
    assert dice(empty, empty, (1,)) == 1.0
    assert dice(full, empty, (1,)) == 0.0
    assert dice(empty, full, (1,)) == 0.0


def test_dice_region_is_union_of_classes() -> None:
    # label: rim (1) on the left half, cup (2) on the right half; prediction calls everything cup.
    label = np.array([[1, 1, 2, 2]] * 2, dtype=np.int64)
    prediction = np.full((2, 4), 2, dtype=np.int64)
    assert dice(prediction, label, (1, 2)) == 1.0  # disc = rim ∪ cup is perfect
    assert dice(prediction, label, (2,)) == pytest.approx(2 * 4 / (8 + 4))  # cup over-segmented
    scores = region_dice(prediction, label, FUNDUS)
    assert scores == {"disc": 1.0, "cup": pytest.approx(2 / 3)}
    assert set(region_dice(label, label, BRAIN)) == {"lesion"}


def test_dice_rejects_shape_mismatch_and_empty_class_tuple() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((3, 3)), (1,))
    with pytest.raises(ValueError, match="classes"):
        dice(np.zeros((2, 2)), np.zeros((2, 2)), ())


def test_clicks_to_threshold_first_index_and_failure() -> None:
    curve = [0.5, 0.79, 0.85, 0.84, 0.95]
    assert clicks_to_threshold(curve, 0.80) == 3
    assert clicks_to_threshold(curve, 0.85) == 3  # equality reaches the threshold
    assert clicks_to_threshold(curve, 0.90) == 5
    assert clicks_to_threshold(curve, 0.50) == 1
    assert clicks_to_threshold(curve, 0.96) is None


def test_noc_summary_counts_failures_as_budget() -> None:
    curves = [
        [0.90, 0.95, 0.95],  # 80: 1, 85: 1, 90: 1
        [0.70, 0.86, 0.88],  # 80: 2, 85: 2, 90: fail
        [0.10, 0.20, 0.30],  # fails everywhere
    ]
    summary = noc_summary(curves, (0.80, 0.85, 0.90), budget=3)
    assert summary["noc@80"] == pytest.approx((1 + 2 + 3) / 3)
    assert summary["noc@85"] == pytest.approx((1 + 2 + 3) / 3)
    assert summary["noc@90"] == pytest.approx((1 + 3 + 3) / 3)
    assert summary["failures@80"] == 1
    assert summary["failures@90"] == 2
    assert summary["failure_rate@90"] == pytest.approx(2 / 3)


def test_noc_summary_budget_truncates_and_defaults_to_curve_length() -> None:
    curves = [[0.1, 0.2, 0.9]]
    assert noc_summary(curves, (0.85,))["noc@85"] == 3
    truncated = noc_summary(curves, (0.85,), budget=2)
    assert truncated["noc@85"] == 2
    assert truncated["failures@85"] == 1
    empty = noc_summary([], (0.85,))
    assert math.isnan(empty["noc@85"]) and empty["failures@85"] == 0


def test_noc_key_rounds_threshold_to_percent() -> None:
    assert noc_key(0.85) == "85"
    assert noc_key(0.9) == "90"


def test_dice_auc_trapezoid_normalised() -> None:
    assert dice_auc([0.0, 1.0]) == pytest.approx(0.5)
    # trapezoids (0.5+0.7)/2 + (0.7+0.9)/2 = 0.6 + 0.8 = 1.4, over T-1 = 2
    assert dice_auc([0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert dice_auc([0.8, 0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert dice_auc([0.42]) == pytest.approx(0.42)
    with pytest.raises(ValueError, match="empty"):
        dice_auc([])
