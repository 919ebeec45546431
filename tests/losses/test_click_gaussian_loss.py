"""Click-Centered Gaussian loss (method.md §4) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clickadapt.clicks.click import Click
from clickadapt.losses.click_gaussian import ClickCenteredGaussianLoss

LN2 = math.log(2.0)


def _one_click_case() -> tuple[torch.Tensor, torch.Tensor, list[list[Click]]]:
    """3×3 image, two classes, equal logits (p = 0.5 everywhere), target all class 1, click of class 1 in the centre."""
    logits = torch.zeros((1, 2, 3, 3), requires_grad=True)
    target = torch.ones((1, 3, 3), dtype=torch.int64)
    return logits, target, [[Click(1, 1, 1)]]


# With σ = 1 and window 1 the weights are 1 at the centre, e^(-1/2) at the 4 edge neighbours and
# e^(-1) at the 4 corners.
WEIGHT_SUM = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1.0)


@pytest.mark.parametrize(
    ("form", "per_pixel"),
    [("log", LN2), ("linear", 0.5)],  # −log 0.5 and 1 − 0.5
)
@pytest.mark.parametrize("normalisation", ["clicks", "pixels"])
def test_one_click_by_hand(form: str, per_pixel: float, normalisation: str) -> None:
    logits, target, clicks = _one_click_case()
    loss = ClickCenteredGaussianLoss(sigma=1.0, window=1, form=form, normalisation=normalisation)  # type: ignore[arg-type]
    # One click and one element: |C|·H·W = B·H·W = 9.
    assert loss(logits, target, clicks).item() == pytest.approx(WEIGHT_SUM * per_pixel / 9, rel=1e-6)


def test_non_uniform_logits_by_hand() -> None:
    # Single row, class-1 logit a_j at column j, class 0 logit 0: p_1 = sigmoid(a_j), CE = log(1 + e^(−a_j)).
    values = [2.0, -1.0, 0.5, 3.0]
    logits = torch.zeros((1, 2, 1, 4))
    logits[0, 1, 0] = torch.tensor(values)
    target = torch.ones((1, 1, 4), dtype=torch.int64)
    sigma = 2.0
    loss = ClickCenteredGaussianLoss(sigma=sigma)(logits, target, [[Click(0, 1, 1)]])
    expected = sum(
        math.exp(-((j - 1) ** 2) / (2 * sigma**2)) * math.log(1 + math.exp(-a)) for j, a in enumerate(values)
    ) / (1 * 1 * 4)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pixels_of_another_class_inside_the_window_contribute_nothing() -> None:
    logits, target, clicks = _one_click_case()
    target = target.clone()
    target[0, 0, 0] = 0  # a corner pixel of another class
    target[0, 1, 2] = 0  # an edge neighbour of another class
    constrained = ClickCenteredGaussianLoss(sigma=1.0, window=1)(logits, target, clicks)
    expected = (WEIGHT_SUM - math.exp(-1.0) - math.exp(-0.5)) * LN2 / 9
    assert constrained.item() == pytest.approx(expected, rel=1e-6)
    unconstrained = ClickCenteredGaussianLoss(sigma=1.0, window=1, class_constrained=False)(logits, target, clicks)
    assert unconstrained.item() == pytest.approx(WEIGHT_SUM * LN2 / 9, rel=1e-6)


def test_a_wrong_pixel_of_another_class_gets_no_gradient() -> None:
    logits = torch.zeros((1, 2, 3, 3))
    logits[0, 0, 0, 0] = 5.0  # confidently class 0 at a pixel the target says is class 0
    logits.requires_grad_(True)
    target = torch.ones((1, 3, 3), dtype=torch.int64)
    target[0, 0, 0] = 0
    ClickCenteredGaussianLoss(sigma=1.0, window=1)(logits, target, [[Click(1, 1, 1)]]).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[0, :, 0, 0] == 0)
    assert torch.all(logits.grad[0, :, 1, 1] != 0)


def test_window_cut_off_at_three_sigma() -> None:
    sigma = 1.0
    loss = ClickCenteredGaussianLoss(sigma=sigma)
    assert loss.window == 3
    target = torch.ones((1, 1, 9), dtype=torch.int64)
    weights, counts = loss.weight_map(target, [[Click(0, 0, 1)]], num_classes=2, dtype=torch.float32)
    assert counts.tolist() == [1.0]
    assert weights[0, 0, 3].item() == pytest.approx(math.exp(-4.5), rel=1e-6)  # 3σ: inside
    assert weights[0, 0, 4].item() == 0.0  # 3σ + 1: outside
    logits = torch.zeros((1, 2, 1, 9))
    before = loss(logits, target, [[Click(0, 0, 1)]])
    logits[0, 0, 0, 4:] = 10.0  # make the pixels from 3σ + 1 on badly wrong
    assert loss(logits, target, [[Click(0, 0, 1)]]).item() == pytest.approx(before.item())


def test_default_window_is_ceil_three_sigma_and_can_be_set() -> None:
    assert ClickCenteredGaussianLoss(sigma=3.0).window == 9
    assert ClickCenteredGaussianLoss(sigma=2.5).window == 8
    assert ClickCenteredGaussianLoss(sigma=3.0, window=10).window == 10


def test_flat_window_weights_every_pixel_in_the_window_by_one() -> None:
    target = torch.ones((1, 5, 5), dtype=torch.int64)
    logits = torch.zeros((1, 2, 5, 5))
    loss = ClickCenteredGaussianLoss(sigma=1.0, window=1, flat_window=True)
    weights, _ = loss.weight_map(target, [[Click(1, 1, 1)]], num_classes=2, dtype=torch.float32)
    expected = torch.zeros((5, 5))
    expected[0:3, 0:3] = 1.0
    assert torch.equal(weights[0], expected)
    assert loss(logits, target, [[Click(1, 1, 1)]]).item() == pytest.approx(9 * LN2 / 25, rel=1e-6)


def test_weights_of_overlapping_clicks_add_up() -> None:
    target = torch.ones((1, 1, 5), dtype=torch.int64)
    loss = ClickCenteredGaussianLoss(sigma=1.0, window=2)
    weights, counts = loss.weight_map(target, [[Click(0, 1, 1), Click(0, 2, 1)]], num_classes=2, dtype=torch.float32)
    g = [math.exp(-(d**2) / 2) for d in range(3)]
    expected = [g[1] + g[2], g[0] + g[1], g[1] + g[0], g[2] + g[1], 0.0 + g[2]]
    assert weights[0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    assert counts.tolist() == [2.0]


def test_normalisation_clicks_versus_pixels_over_a_batch() -> None:
    logits = torch.zeros((2, 2, 3, 3))
    target = torch.ones((2, 3, 3), dtype=torch.int64)
    clicks = [[Click(1, 1, 1), Click(1, 1, 1)], [Click(1, 1, 1)]]
    sums = [2 * WEIGHT_SUM * LN2, WEIGHT_SUM * LN2]  # per-element Σ W·CE
    per_click = ClickCenteredGaussianLoss(sigma=1.0, window=1, normalisation="clicks")(logits, target, clicks)
    assert per_click.item() == pytest.approx((sums[0] / (2 * 9) + sums[1] / (1 * 9)) / 2, rel=1e-6)
    per_pixel = ClickCenteredGaussianLoss(sigma=1.0, window=1, normalisation="pixels")(logits, target, clicks)
    assert per_pixel.item() == pytest.approx((sums[0] + sums[1]) / (2 * 9), rel=1e-6)


def test_elements_without_clicks() -> None:
    logits = torch.zeros((2, 2, 3, 3))
    target = torch.ones((2, 3, 3), dtype=torch.int64)
    clicks: list[list[Click]] = [[Click(1, 1, 1)], []]
    per_click = ClickCenteredGaussianLoss(sigma=1.0, window=1, normalisation="clicks")(logits, target, clicks)
    assert per_click.item() == pytest.approx(WEIGHT_SUM * LN2 / 9, rel=1e-6)  # mean over elements with clicks
    per_pixel = ClickCenteredGaussianLoss(sigma=1.0, window=1, normalisation="pixels")(logits, target, clicks)
    assert per_pixel.item() == pytest.approx(WEIGHT_SUM * LN2 / 18, rel=1e-6)


def test_no_clicks_at_all_gives_zero_with_grad() -> None:
    logits = torch.randn((2, 3, 4, 4), requires_grad=True)
    target = torch.zeros((2, 4, 4), dtype=torch.int64)
    loss = ClickCenteredGaussianLoss()(logits, target, [[], []])
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_linear_form_has_the_released_code_gradient() -> None:
    """The released code: CrossEntropyLoss(one_hot(P) as logits, softmax as target) = log(e + K − 1) − p_P."""
    torch.manual_seed(0)
    num_classes, height, width = 3, 12, 11
    target = torch.randint(0, num_classes, (2, height, width))
    clicks = [
        [Click(3, 4, int(target[0, 3, 4])), Click(9, 8, int(target[0, 9, 8]))],
        [Click(6, 5, int(target[1, 6, 5]))],
    ]
    ours_logits = torch.randn((2, num_classes, height, width), requires_grad=True)
    released_logits = ours_logits.detach().clone().requires_grad_(True)
    loss = ClickCenteredGaussianLoss(sigma=3.0, window=10, form="linear", normalisation="pixels")
    ours = loss(ours_logits, target, clicks)
    weights, _ = loss.weight_map(target, clicks, num_classes, torch.float32)
    one_hot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    per_pixel = torch.nn.CrossEntropyLoss(reduction="none")(one_hot, released_logits.softmax(dim=1))
    released = (per_pixel * weights).mean()
    offset = (math.log(math.e + num_classes - 1) - 1) * weights.sum().item() / (2 * height * width)
    assert ours.item() + offset == pytest.approx(released.item(), rel=1e-5)
    ours.backward()
    released.backward()
    assert ours_logits.grad is not None and released_logits.grad is not None
    assert torch.allclose(ours_logits.grad, released_logits.grad, atol=1e-7)


def test_bad_input_is_rejected() -> None:
    logits, target, _ = _one_click_case()
    loss = ClickCenteredGaussianLoss()
    with pytest.raises(ValueError, match="click lists"):
        loss(logits, target, [[], []])
    with pytest.raises(ValueError, match="row 3"):
        loss(logits, target, [[Click(3, 0, 1)]])
    with pytest.raises(ValueError, match="label 2"):
        loss(logits, target, [[Click(0, 0, 2)]])
    with pytest.raises(ValueError, match="target must be"):
        loss(logits, target[0], [[]])
    with pytest.raises(ValueError, match="form"):
        ClickCenteredGaussianLoss(form="square")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalisation"):
        ClickCenteredGaussianLoss(normalisation="batch")  # type: ignore[arg-type]
