"""TENT baseline (Wang et al., ICLR 2021): entropy minimisation on normalisation affine parameters only.

A test-time-adaptation reference without user input (asked for by the paper's reviewers): one Adam step
on the mean per-pixel entropy of the softmax of f(I, C_t), over the affine (scale and shift) parameters of
the normalisation layers only; every other parameter stays fixed. By default one step per click on the
forward of the click being displayed (``mode="click"``); ``mode="image"`` takes one step per finished
image instead. The model must have affine normalisation (``ReferenceUNet(affine_norm=True)``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    StrategyConfig,
)
from clickadapt.tasks import TaskSpec

NORMALISATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


class TentConfig(StrategyConfig):
    """Settings of TENT.

    Attributes:
        mode: ``"click"``: one step per click; ``"image"``: one step per finished image.
    """

    mode: Literal["click", "image"] = "click"


def normalisation_affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable scale and shift parameters of every normalisation layer of ``model``."""
    parameters: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, NORMALISATION_TYPES):
            for parameter in (getattr(module, "weight", None), getattr(module, "bias", None)):
                if isinstance(parameter, nn.Parameter):
                    parameters.append(parameter)
    return parameters


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the softmax entropy −Σ_k p_k log p_k of logits ``(B, K, H, W)``."""
    log_probabilities = torch.log_softmax(logits, dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1).mean()


class TentStrategy(AdaptationStrategy):
    """TENT: entropy minimisation of the displayed prediction, normalisation affine parameters only."""

    name = "tent"

    def __init__(self, task: TaskSpec, config: TentConfig | None = None) -> None:
        self.settings = config or TentConfig()
        super().__init__(task, self.settings)

    def parameters_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        """Normalisation affine parameters.

        Raises:
            ValueError: If the model has none.
        """
        parameters = normalisation_affine_parameters(model)
        if not parameters:
            raise ValueError(
                "TENT adapts only the affine parameters of normalisation layers, and this model has none; "
                "build it with affine normalisation (ReferenceUNet(..., affine_norm=True) / ModelConfig.affine_norm)"
            )
        return parameters

    def updates_on_click(self, click_index: int) -> bool:
        """Every click in ``mode="click"``."""
        return self.settings.mode == "click"

    def updates_after_image(self) -> bool:
        """In ``mode="image"``."""
        return self.settings.mode == "image"

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """One entropy step on f(I, C_t) (``mode="click"``)."""
        if self.settings.mode != "click":
            return None
        return self._entropy_step(event.forward(event.clicks, grad=True))

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """One entropy step on f(I, all clicks) (``mode="image"``)."""
        if self.settings.mode != "image":
            return None
        return self._entropy_step(event.forward(event.clicks, grad=True))

    def _entropy_step(self, logits: torch.Tensor) -> StepReport:
        entropy = mean_entropy(logits)
        stepped = self.gradient_step(entropy)
        return StepReport(
            updated=stepped,
            losses={"entropy": float(entropy.detach()), "total": float(entropy.detach())},
            steps=int(stepped),
            note="" if stepped else "non-finite loss; step skipped",
        )
