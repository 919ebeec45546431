"""Click-Centered Gaussian (CCG) loss of method.md §4.

For clicks ``C`` (click ``c`` at ``(i_c, j_c)`` with class ``y_c``), a (pseudo-)label ``P`` and
logits ``P̂``::

    G_c(i, j) = exp(−((i − i_c)² + (j − j_c)²) / (2σ²))   if |i − i_c| ≤ w and |j − j_c| ≤ w, else 0
    W(i, j)   = Σ_c G_c(i, j) · 1[P(i, j) = y_c]
    L_CCG     = Σ_(i,j) W(i, j) · ℓ(P̂(i, j), P(i, j)) / (|C|·H·W)

The indicator ("class-constrained") makes a click of class ``y`` teach only the nearby pixels that
``P`` also labels ``y``. Options for the ablations and for the authors' released code:

- ``window`` ``w``: half-width of the square window, default ``ceil(3σ)``; the released code uses
  10 with σ = 3.
- ``class_constrained=False`` drops the indicator; ``flat_window=True`` uses ``G_c = 1`` inside the
  window.
- ``form="log"``: ``ℓ = −log softmax(P̂)[P]``, the textbook cross-entropy of the paper.
  ``form="linear"``: ``ℓ = 1 − softmax(P̂)[P]``. The released code calls
  ``nn.CrossEntropyLoss()(one_hot(P), softmax(P̂))``, i.e. with the one-hot label as *logits* and the
  probabilities as *soft target*, which per pixel equals
  ``−Σ_k p_k · log_softmax(one_hot(P))_k = log(e + K − 1) − p_P``: linear in the true-class
  probability. ``1 − p_P`` differs from it only by the constant ``log(e + K − 1) − 1`` (0.551 for
  K = 3, 0.313 for K = 2) per unit of weight, so it has exactly the same gradient, and it is 0 for a
  perfect prediction.
- ``normalisation="clicks"``: per batch element ``Σ/(|C_b|·H·W)``, then the mean over the elements
  that have clicks (the paper). ``"pixels"``: ``Σ/(B·H·W)`` over the batch (the released code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.losses.dice_focal import check_logits_and_target

DEFAULT_CCG_SIGMA = 3.0
"""σ of the Gaussian around each click, in pixels (method.md §4)."""

LossForm = Literal["log", "linear"]
Normalisation = Literal["clicks", "pixels"]
LOSS_FORMS: tuple[str, ...] = ("log", "linear")
NORMALISATIONS: tuple[str, ...] = ("clicks", "pixels")


class ClickCenteredGaussianLoss(nn.Module):
    """Class-constrained, click-centred Gaussian-weighted cross-entropy (see the module docstring).

    Args:
        sigma: Gaussian σ in pixels (paper: 3).
        window: Half-width ``w`` of the square window around each click; ``None`` → ``ceil(3σ)``.
        form: ``"log"`` (cross-entropy) or ``"linear"`` (``1 − p_true``, the released code's variant).
        normalisation: ``"clicks"`` (paper) or ``"pixels"`` (released code).
        class_constrained: Keep the indicator ``1[P(i, j) = y_c]`` (ablation: ``False``).
        flat_window: Weight 1 everywhere inside the window instead of the Gaussian (ablation).
    """

    def __init__(
        self,
        sigma: float = DEFAULT_CCG_SIGMA,
        window: int | None = None,
        form: LossForm = "log",
        normalisation: Normalisation = "clicks",
        class_constrained: bool = True,
        flat_window: bool = False,
    ) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if window is not None and window < 0:
            raise ValueError(f"window must be non-negative, got {window}")
        if form not in LOSS_FORMS:
            raise ValueError(f"form must be one of {LOSS_FORMS}, got {form!r}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        self.sigma = float(sigma)
        self.window = math.ceil(3 * sigma) if window is None else int(window)
        self.form = form
        self.normalisation = normalisation
        self.class_constrained = class_constrained
        self.flat_window = flat_window

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return (
            f"sigma={self.sigma}, window={self.window}, form={self.form!r}, normalisation={self.normalisation!r}, "
            f"class_constrained={self.class_constrained}, flat_window={self.flat_window}"
        )

    def _profile(self, offsets: torch.Tensor) -> torch.Tensor:
        """1D weight along one axis: Gaussian (or 1) inside the window, 0 outside."""
        inside = (offsets.abs() <= self.window).to(offsets.dtype)
        if self.flat_window:
            return inside
        return torch.exp(-(offsets**2) / (2 * self.sigma**2)) * inside

    def weight_map(
        self, target: torch.Tensor, clicks: Sequence[Sequence[Click]], num_classes: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-pixel weights ``W`` ``(B, H, W)`` and the number of clicks per element ``(B,)``.

        Built for all clicks at once: the 2D Gaussian is separable, so the weights of the clicks of
        class ``k`` in element ``b`` are a sum of outer products ``g_row ⊗ g_col``, computed as one
        batched matrix product; the indicator then picks, at each pixel, the map of the class ``P``
        has there.

        Raises:
            ValueError: If the number of click lists differs from the batch size, or a click lies
                outside the image or has an unknown class.
        """
        batch_size, height, width = target.shape
        if len(clicks) != batch_size:
            raise ValueError(f"got {len(clicks)} click lists for a batch of {batch_size}")
        device = target.device
        entries = []
        for element, element_clicks in enumerate(clicks):
            for click in element_clicks:
                click.validate((height, width), num_classes)
                entries.append((element, click.row, click.col, click.label))
        counts = torch.tensor([len(element_clicks) for element_clicks in clicks], device=device, dtype=dtype)
        if not entries:
            return torch.zeros((batch_size, height, width), device=device, dtype=dtype), counts
        table = torch.tensor(entries, device=device, dtype=torch.long)
        elements, rows, cols, classes = table.unbind(dim=1)
        row_offsets = torch.arange(height, device=device, dtype=dtype)[None, :] - rows[:, None].to(dtype)
        col_offsets = torch.arange(width, device=device, dtype=dtype)[None, :] - cols[:, None].to(dtype)
        row_weights = self._profile(row_offsets)  # (N, H)
        col_weights = self._profile(col_offsets)  # (N, W)
        groups = F.one_hot(elements * num_classes + classes, batch_size * num_classes).to(dtype)  # (N, B·K)
        # per_class[m] = Σ_n groups[n, m] · row_weights[n] ⊗ col_weights[n]
        per_class = torch.matmul((groups.T[:, :, None] * row_weights[None]).transpose(1, 2), col_weights)
        per_class = per_class.view(batch_size, num_classes, height, width)
        if self.class_constrained:
            weights = per_class.gather(1, target.long().unsqueeze(1)).squeeze(1)
        else:
            weights = per_class.sum(dim=1)
        return weights, counts

    def pixel_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unweighted per-pixel term ``ℓ`` ``(B, H, W)`` of the chosen ``form``."""
        if self.form == "log":
            return F.cross_entropy(logits, target.long(), reduction="none")
        probabilities = logits.softmax(dim=1)
        return 1.0 - probabilities.gather(1, target.long().unsqueeze(1)).squeeze(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, clicks: Sequence[Sequence[Click]]) -> torch.Tensor:
        """The CCG loss as a scalar tensor.

        Args:
            logits: ``(B, K, H, W)`` raw network outputs.
            target: ``(B, H, W)`` int64 (pseudo-)label ``P``.
            clicks: One sequence of clicks per batch element.

        Returns:
            The loss; 0 (still attached to ``logits``' graph) when there are no clicks at all.
        """
        check_logits_and_target(logits, target)
        batch_size, num_classes, height, width = logits.shape
        if target.min() < 0 or target.max() >= num_classes:
            raise ValueError(f"target holds classes outside 0..{num_classes - 1}")
        weights, counts = self.weight_map(target, clicks, num_classes, logits.dtype)
        if not bool((counts > 0).any()):
            return logits.sum() * 0.0
        per_element = (weights * self.pixel_terms(logits, target)).sum(dim=(1, 2))
        if self.normalisation == "pixels":
            return per_element.sum() / (batch_size * height * width)
        has_clicks = counts > 0
        return (per_element[has_clicks] / (counts[has_clicks] * height * width)).mean()
