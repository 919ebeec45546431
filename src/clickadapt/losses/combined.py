"""The training and adaptation loss ``L = L_DF + β·L_CCG`` (method.md §4) and its configuration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.losses.click_gaussian import DEFAULT_CCG_SIGMA, ClickCenteredGaussianLoss, LossForm, Normalisation
from clickadapt.losses.dice_focal import DEFAULT_DICE_FOCAL_ALPHA, DEFAULT_FOCAL_GAMMA, DiceFocalLoss

DEFAULT_CCG_BETA = 200.0
"""Weight β of the CCG term (method.md §4)."""


class LossTerms(NamedTuple):
    """The parts of :class:`SegmentationLoss` for logging.

    Attributes:
        dice_focal: ``L_DF``.
        click_gaussian: ``L_CCG``, unweighted.
        total: ``L_DF + β·L_CCG``.
    """

    dice_focal: torch.Tensor
    click_gaussian: torch.Tensor
    total: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        """The three values as plain floats (for logs and JSON)."""
        return {name: float(value.detach()) for name, value in self._asdict().items()}


class SegmentationLoss(nn.Module):
    """``L_DF + β·L_CCG``: Dice-Focal on the whole image plus the click-centred Gaussian term.

    Args:
        beta: Weight of the CCG term (paper: 200).
        dice_focal: The Dice-Focal term; default ``DiceFocalLoss()`` (α = 0.7, γ = 2).
        click_gaussian: The CCG term; default ``ClickCenteredGaussianLoss()`` (σ = 3, paper form).
    """

    def __init__(
        self,
        beta: float = DEFAULT_CCG_BETA,
        dice_focal: DiceFocalLoss | None = None,
        click_gaussian: ClickCenteredGaussianLoss | None = None,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.beta = beta
        self.dice_focal = dice_focal if dice_focal is not None else DiceFocalLoss()
        self.click_gaussian = click_gaussian if click_gaussian is not None else ClickCenteredGaussianLoss()

    def components(self, logits: torch.Tensor, target: torch.Tensor, clicks: Sequence[Sequence[Click]]) -> LossTerms:
        """Both terms and their weighted sum.

        Args:
            logits: ``(B, K, H, W)`` raw network outputs.
            target: ``(B, H, W)`` int64 ground truth or pseudo-label.
            clicks: One sequence of clicks per batch element (for the CCG term).
        """
        dice_focal = self.dice_focal(logits, target)
        click_gaussian = self.click_gaussian(logits, target, clicks)
        return LossTerms(dice_focal, click_gaussian, dice_focal + self.beta * click_gaussian)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, clicks: Sequence[Sequence[Click]]) -> torch.Tensor:
        """``L_DF + β·L_CCG`` as a scalar tensor."""
        return self.components(logits, target, clicks).total


class LossConfig(BaseModel):
    """Settings of :class:`SegmentationLoss`, with the paper's defaults (method.md §4).

    The released code's variant is ``ccg_window=10, ccg_form="linear", ccg_normalisation="pixels"``.
    """

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(DEFAULT_DICE_FOCAL_ALPHA, ge=0.0, le=1.0, description="weight of the focal term")
    gamma: float = Field(DEFAULT_FOCAL_GAMMA, ge=0.0, description="focal exponent")
    beta: float = Field(DEFAULT_CCG_BETA, ge=0.0, description="weight of the CCG term")
    ccg_sigma: float = Field(DEFAULT_CCG_SIGMA, gt=0.0, description="σ of the click Gaussian (px)")
    ccg_window: int | None = Field(None, ge=0, description="half-width of the window; None = ceil(3σ)")
    ccg_form: LossForm = "log"
    ccg_normalisation: Normalisation = "clicks"
    class_constrained: bool = True
    flat_window: bool = False

    def build(self) -> SegmentationLoss:
        """The loss these settings describe."""
        return SegmentationLoss(
            beta=self.beta,
            dice_focal=DiceFocalLoss(alpha=self.alpha, gamma=self.gamma),
            click_gaussian=ClickCenteredGaussianLoss(
                sigma=self.ccg_sigma,
                window=self.ccg_window,
                form=self.ccg_form,
                normalisation=self.ccg_normalisation,
                class_constrained=self.class_constrained,
                flat_window=self.flat_window,
            ),
        )
