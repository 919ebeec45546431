"""The brain error analysis (bench/brain_errors.py) on masks whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from bench.brain_errors import error_parts, resolution_ceiling, surface_dice

from clickadapt.clicks.click import Click


def square(top: int, left: int, side: int, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_a_shifted_outline_is_all_near_error_and_forgiving_the_band_restores_it() -> None:
    truth = square(10, 10, 10)
    shifted = square(10, 11, 10)
    parts = error_parts(shifted, truth, [Click(15, 15, 1)])
    assert (parts["fp_near"], parts["fn_near"], parts["fp_far"], parts["fn_far"]) == (10, 10, 0, 0)
    assert parts["dice"] == pytest.approx(0.9)
    assert parts["dice_band_forgiven"] == 1.0
    assert parts["unclicked"] == 0


def test_a_distant_region_without_a_positive_click_is_far_and_unclicked() -> None:
    truth = square(10, 10, 10)
    prediction = truth | square(30, 30, 3)
    parts = error_parts(prediction, truth, [Click(15, 15, 1), Click(31, 31, 0)])
    assert (parts["fp_far"], parts["unclicked"], parts["unclicked_fp"]) == (9, 9, 9)
    assert parts["dice"] < 1.0 == parts["dice_clicked_regions"]
    assert parts["dice_band_forgiven"] == pytest.approx(parts["dice"])  # far errors are not forgiven
    clicked = error_parts(prediction, truth, [Click(15, 15, 1), Click(31, 31, 1)])
    assert clicked["unclicked"] == 0


def test_surface_dice_and_resolution_ceiling() -> None:
    truth = square(10, 10, 10)
    assert surface_dice(truth, truth, 1.0) == pytest.approx(1.0)
    assert surface_dice(square(10, 14, 10), truth, 1.0) < surface_dice(square(10, 14, 10), truth, 4.0) == 1.0
    assert resolution_ceiling(truth, 40) == 1.0
    assert resolution_ceiling(square(11, 11, 3), 10) < 1.0  # a 3-px lesion cannot survive a 4x coarser grid intact
