"""Dice-Focal loss (method.md §4): (1 − α)·Dice(foreground) + α·softmax Focal(all classes)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceLoss, FocalLoss

from clickadapt.losses.dice_focal import DiceFocalLoss


def _confident_logits(target: torch.Tensor, num_classes: int, margin: float = 30.0) -> torch.Tensor:
    one_hot = torch.nn.functional.one_hot(target, num_classes).permute(0, 3, 1, 2).float()
    return margin * (2 * one_hot - 1)


def _fundus_target() -> torch.Tensor:
    target = torch.zeros((2, 16, 16), dtype=torch.int64)
    target[:, 3:13, 3:13] = 1
    target[:, 6:10, 6:10] = 2
    target[1, 0:2, 0:2] = 2
    return target


def test_perfect_confident_prediction_is_near_zero_and_a_wrong_one_is_large() -> None:
    target = _fundus_target()
    loss = DiceFocalLoss()
    assert loss(_confident_logits(target, 3), target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = (target + 1) % 3
    assert loss(_confident_logits(wrong, 3), target).item() > 5.0  # focal of a confident mistake is huge
    uniform = loss(torch.zeros((2, 3, 16, 16)), target).item()
    assert 0.1 < uniform < loss(_confident_logits(wrong, 3), target).item()


def test_equals_the_weighted_sum_of_monai_parts() -> None:
    torch.manual_seed(0)
    target = _fundus_target()
    logits = torch.randn((2, 3, 16, 16))
    alpha = 0.7
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)(logits, target[:, None])
    # MONAI's "mean" reduction also averages over the K class channels; the per-pixel focal loss is their sum.
    focal = 3 * FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)(logits, target[:, None])
    combined = DiceFocalLoss(alpha=alpha, gamma=2.0)
    assert combined(logits, target).item() == pytest.approx(((1 - alpha) * dice + alpha * focal).item(), rel=1e-6)
    dice_part, focal_part = combined.components(logits, target)
    assert dice_part.item() == pytest.approx(dice.item(), rel=1e-6)
    assert focal_part.item() == pytest.approx(focal.item(), rel=1e-6)


def test_focal_term_by_hand() -> None:
    # One pixel, two classes, logits (0, ln 3): p = (1/4, 3/4).
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    loss = DiceFocalLoss(alpha=1.0, gamma=2.0)
    expected_true_one = -((1 - 0.75) ** 2) * math.log(0.75)
    expected_true_zero = -((1 - 0.25) ** 2) * math.log(0.25)
    assert loss(logits, torch.ones((1, 1, 1), dtype=torch.int64)).item() == pytest.approx(expected_true_one, rel=1e-5)
    assert loss(logits, torch.zeros((1, 1, 1), dtype=torch.int64)).item() == pytest.approx(expected_true_zero, rel=1e-5)


def test_dice_term_by_hand_ignores_the_background_class() -> None:
    # Two pixels, two classes, foreground probabilities 0.75 and 0.25, target (1, 0).
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, -math.log(3.0)]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    smooth = 1e-5
    expected = 1 - (2 * 0.75 + smooth) / (0.75 + 0.25 + 1 + smooth)  # the background Dice would differ
    assert DiceFocalLoss(alpha=0.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_empty_foreground_predicted_empty_costs_no_dice() -> None:
    target = torch.zeros((1, 8, 8), dtype=torch.int64)
    assert DiceFocalLoss(alpha=0.0)(_confident_logits(target, 2), target).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_to_the_logits() -> None:
    logits = torch.randn((1, 2, 8, 8), requires_grad=True)
    target = torch.zeros((1, 8, 8), dtype=torch.int64)
    target[0, 2:5, 2:5] = 1
    DiceFocalLoss()(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_bad_input_is_rejected() -> None:
    logits = torch.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="target must be"):
        DiceFocalLoss()(logits, torch.zeros((1, 1, 4, 4), dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        DiceFocalLoss()(logits, torch.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="alpha"):
        DiceFocalLoss(alpha=1.5)
