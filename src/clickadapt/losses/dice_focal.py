"""Dice-Focal loss of method.md §4: ``L_DF = (1 − α)·Dice + α·Focal``, built from MONAI's parts.

Why not ``monai.losses.DiceFocalLoss`` itself: in MONAI 1.4–1.6 its ``include_background`` switch
applies to *both* terms and its focal term is the sigmoid (one-vs-rest) focal loss, whereas the
method needs the Dice over the foreground classes only and a softmax focal loss over all classes
(the authors' code: ``monai.losses.DiceLoss(include_background=False, softmax=True,
to_onehot_y=True)`` plus its own softmax focal loss). So the two MONAI parts are combined here:

- Dice: ``monai.losses.DiceLoss(include_background=False, to_onehot_y=True, softmax=True)``, the
  soft Dice of each foreground class per batch element, averaged.
- Focal: ``monai.losses.FocalLoss(include_background=True, to_onehot_y=True, use_softmax=True,
  gamma=γ, reduction="none")`` summed over the class axis and averaged over pixels, i.e. the
  per-pixel softmax focal loss ``−(1 − p_t)^γ · log p_t`` of the true class ``t``, averaged over
  ``B·H·W``. (MONAI's ``reduction="mean"`` would also divide by the number of classes ``K``.)
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn

DEFAULT_DICE_FOCAL_ALPHA = 0.7
"""Weight of the focal term (method.md §4)."""

DEFAULT_FOCAL_GAMMA = 2.0
"""Focal exponent γ (method.md §4)."""


def check_logits_and_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``(B, K, H, W)`` and ``target`` a matching ``(B, H, W)`` class map."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    if target.ndim != 3 or target.shape[0] != logits.shape[0] or target.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"target must be (B, H, W) matching logits {tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least two classes (background and one more), got {logits.shape[1]}")


class DiceFocalLoss(nn.Module):
    """``(1 − α)·Dice + α·Focal`` on softmax outputs (see the module docstring for the exact terms).

    Args:
        alpha: Weight of the focal term, in ``[0, 1]`` (paper: 0.7). Not MONAI's focal ``alpha``
            (class balancing), which is not used.
        gamma: Focal exponent (paper: 2).
    """

    def __init__(self, alpha: float = DEFAULT_DICE_FOCAL_ALPHA, gamma: float = DEFAULT_FOCAL_GAMMA) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma
        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)
        self.focal = FocalLoss(
            include_background=True, to_onehot_y=True, use_softmax=True, gamma=gamma, reduction="none"
        )

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unweighted ``(dice, focal)`` terms.

        Args:
            logits: ``(B, K, H, W)`` raw network outputs.
            target: ``(B, H, W)`` int64 class indices (ground truth or pseudo-label).
        """
        check_logits_and_target(logits, target)
        target_channel = target.long().unsqueeze(1)
        dice = self.dice(logits, target_channel)
        focal = self.focal(logits, target_channel).sum(dim=1).mean()
        return dice, focal

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(1 − α)·Dice + α·Focal`` as a scalar tensor."""
        dice, focal = self.components(logits, target)
        return (1.0 - self.alpha) * dice + self.alpha * focal
