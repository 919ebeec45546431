"""The combined loss L_DF + β·L_CCG and its configuration."""

from __future__ import annotations

import pydantic
import pytest
import torch

from clickadapt.clicks.click import Click
from clickadapt.losses.click_gaussian import ClickCenteredGaussianLoss
from clickadapt.losses.combined import LossConfig, SegmentationLoss
from clickadapt.losses.dice_focal import DiceFocalLoss


def _batch() -> tuple[torch.Tensor, torch.Tensor, list[list[Click]]]:
    torch.manual_seed(0)
    target = torch.zeros((2, 16, 16), dtype=torch.int64)
    target[:, 4:12, 4:12] = 1
    logits = torch.randn((2, 2, 16, 16), requires_grad=True)
    return logits, target, [[Click(8, 8, 1)], [Click(1, 1, 0), Click(6, 6, 1)]]


def test_total_is_dice_focal_plus_beta_times_ccg() -> None:
    logits, target, clicks = _batch()
    loss = SegmentationLoss(beta=200.0)
    terms = loss.components(logits, target, clicks)
    assert terms.dice_focal.item() == pytest.approx(DiceFocalLoss()(logits, target).item())
    assert terms.click_gaussian.item() == pytest.approx(ClickCenteredGaussianLoss()(logits, target, clicks).item())
    assert terms.total.item() == pytest.approx(terms.dice_focal.item() + 200.0 * terms.click_gaussian.item())
    assert loss(logits, target, clicks).item() == pytest.approx(terms.total.item())
    assert set(terms.as_floats()) == {"dice_focal", "click_gaussian", "total"}
    loss(logits, target, clicks).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_custom_parts_are_used() -> None:
    logits, target, clicks = _batch()
    ccg = ClickCenteredGaussianLoss(sigma=2.0, window=4, form="linear", normalisation="pixels")
    loss = SegmentationLoss(beta=10.0, dice_focal=DiceFocalLoss(alpha=0.5), click_gaussian=ccg)
    expected = DiceFocalLoss(alpha=0.5)(logits, target) + 10.0 * ccg(logits, target, clicks)
    assert loss(logits, target, clicks).item() == pytest.approx(expected.item())


def test_no_clicks_leaves_the_dice_focal_term() -> None:
    logits, target, _ = _batch()
    assert SegmentationLoss()(logits, target, [[], []]).item() == pytest.approx(DiceFocalLoss()(logits, target).item())


def test_config_defaults_are_the_paper_values_and_build_the_loss() -> None:
    config = LossConfig()
    assert (config.alpha, config.gamma, config.beta, config.ccg_sigma) == (0.7, 2.0, 200.0, 3.0)
    assert (config.ccg_form, config.ccg_normalisation, config.class_constrained) == ("log", "clicks", True)
    released = LossConfig(ccg_window=10, ccg_form="linear", ccg_normalisation="pixels").build()
    assert released.click_gaussian.window == 10
    assert released.click_gaussian.form == "linear"
    assert released.beta == 200.0
    logits, target, clicks = _batch()
    assert config.build()(logits, target, clicks).item() == pytest.approx(
        SegmentationLoss()(logits, target, clicks).item()
    )


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError, match="betta"):
        LossConfig(betta=1.0)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="ccg_form"):
        LossConfig(ccg_form="square")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="alpha"):
        LossConfig(alpha=2.0)
