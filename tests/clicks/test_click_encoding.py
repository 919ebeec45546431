"""Gaussian click maps (method.md §2): σ, 6σ+1 support, rescale to [0, 1], one channel per class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import click_maps, model_input


def test_single_click_is_a_gaussian_with_peak_one_in_its_class_channel() -> None:
    sigma = 2.0
    maps = click_maps([Click(10, 10, 1)], (21, 21), num_classes=3, sigma=sigma)
    assert maps.shape == (3, 21, 21)
    assert maps.dtype == np.float32
    assert maps[1, 10, 10] == pytest.approx(1.0)
    for offset in (1, 2, 4, 6):
        assert maps[1, 10, 10 + offset] == pytest.approx(math.exp(-(offset**2) / (2 * sigma**2)), rel=1e-5)
    assert maps[1, 12, 13] == pytest.approx(math.exp(-(4 + 9) / (2 * sigma**2)), rel=1e-5)
    assert not maps[0].any()
    assert not maps[2].any()


def test_support_is_six_sigma_plus_one() -> None:
    sigma = 5.0
    maps = click_maps([Click(20, 20, 0)], (41, 41), num_classes=2, sigma=sigma)
    row = maps[0, 20]
    assert np.count_nonzero(row) == 6 * int(sigma) + 1
    assert row[20 + 15] > 0  # 3σ away: inside
    assert row[20 + 16] == 0  # 3σ + 1 away: outside
    assert np.count_nonzero(maps[0]) == 31 * 31


def test_each_class_map_is_rescaled_to_unit_peak_and_clicks_add_up() -> None:
    sigma = 2.0
    clicks = [Click(5, 5, 1), Click(5, 7, 1), Click(20, 20, 2)]
    maps = click_maps(clicks, (30, 30), num_classes=3, sigma=sigma)
    assert maps[1].max() == pytest.approx(1.0)
    assert maps[2].max() == pytest.approx(1.0)
    # Two overlapping clicks: the raw sum at the midpoint is 2·exp(-1/8), the raw peak 1 + exp(-4/8).
    raw_mid = 2 * math.exp(-1 / (2 * sigma**2))
    raw_peak = max(raw_mid, 1 + math.exp(-4 / (2 * sigma**2)))
    assert maps[1, 5, 6] == pytest.approx(raw_mid / raw_peak, rel=1e-5)
    assert maps.min() >= 0.0


def test_click_near_the_border_is_cropped() -> None:
    maps = click_maps([Click(0, 0, 1)], (8, 8), num_classes=2, sigma=1.0)
    assert maps[1, 0, 0] == pytest.approx(1.0)
    assert maps[1, 0, 3] == pytest.approx(math.exp(-4.5), rel=1e-5)
    assert maps[1, 0, 4] == 0


def test_no_clicks_give_zero_maps() -> None:
    assert not click_maps([], (4, 5), num_classes=2).any()


@pytest.mark.parametrize(
    ("click", "message"),
    [(Click(8, 0, 0), "row 8"), (Click(0, -1, 0), "col -1"), (Click(0, 0, 3), "label 3")],
)
def test_invalid_click_is_rejected_with_the_field_named(click: Click, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        click_maps([click], (8, 8), num_classes=3)


def test_model_input_stacks_image_and_maps() -> None:
    image = torch.rand(3, 16, 12)
    stacked = model_input(image, [Click(4, 5, 2)], num_classes=3, sigma=2.0)
    assert stacked.shape == (6, 16, 12)
    assert stacked.dtype == image.dtype
    assert torch.equal(stacked[:3], image)
    expected = torch.from_numpy(click_maps([Click(4, 5, 2)], (16, 12), 3, sigma=2.0))
    assert torch.allclose(stacked[3:], expected)
