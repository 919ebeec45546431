"""The OAIMS update loss L_DF + β·L_CCG (method.md §4) with its terms reported separately."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clickadapt.adaptation.strategies.base import ClickLossSettings
from clickadapt.clicks.click import Click
from clickadapt.losses.click_gaussian import ClickCenteredGaussianLoss
from clickadapt.losses.dice_focal import DiceFocalLoss


class OaimsUpdateLoss:
    """Dice-Focal against a (pseudo-)label plus β times the click-centred Gaussian loss on some clicks.

    Args:
        settings: α, γ, β and the CCG options.
    """

    def __init__(self, settings: ClickLossSettings) -> None:
        self.beta = settings.beta
        self.dice_focal = DiceFocalLoss(alpha=settings.dice_focal_alpha, gamma=settings.focal_gamma)
        self.click_gaussian = ClickCenteredGaussianLoss(
            sigma=settings.ccg_sigma,
            window=settings.ccg_window,
            form=settings.ccg_form,
            normalisation=settings.ccg_normalisation,
            class_constrained=settings.ccg_class_constrained,
            flat_window=settings.ccg_flat_window,
        )

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, clicks: Sequence[Click] | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss for one image.

        Args:
            logits: ``(1, K, H, W)`` with graph.
            target: ``(1, H, W)`` int64 (pseudo-)label.
            clicks: Clicks for the CCG term; ``None`` (or β = 0) leaves the term out.

        Returns:
            The total loss and its terms as floats (``dice_focal``, ``ccg`` when used, ``total``).
        """
        dice_focal = self.dice_focal(logits, target)
        values = {"dice_focal": float(dice_focal.detach())}
        total = dice_focal
        if clicks is not None and self.beta > 0:
            ccg = self.click_gaussian(logits, target, [list(clicks)])
            values["ccg"] = float(ccg.detach())
            total = dice_focal + self.beta * ccg
        values["total"] = float(total.detach())
        return total, values
