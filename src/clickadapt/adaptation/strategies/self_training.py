"""Self-training baseline: after each image, one step of cross-entropy on the model's own final mask.

A test-time-adaptation reference asked for by the paper's reviewers: the final mask (the model's own
prediction after the user's clicks) is the label for f(I, all clicks). It differs from Post-Interaction
in having no first-click stage, no synthetic clicks and no click loss.
"""

from __future__ import annotations

from torch import nn

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    StrategyConfig,
)
from clickadapt.tasks import TaskSpec


class SelfTrainingConfig(StrategyConfig):
    """Self-training has only the optimizer settings."""


class SelfTrainingStrategy(AdaptationStrategy):
    """One cross-entropy step per finished image on its own final mask."""

    name = "self-train"

    def __init__(self, task: TaskSpec, config: SelfTrainingConfig | None = None) -> None:
        super().__init__(task, config or SelfTrainingConfig())

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """Nothing during the interaction."""
        return None

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """CE(f(I, all clicks), final mask), one step."""
        logits = event.forward(event.clicks, grad=True)
        loss = nn.functional.cross_entropy(logits, event.final_mask.unsqueeze(0))
        stepped = self.gradient_step(loss)
        value = float(loss.detach())
        return StepReport(
            updated=stepped,
            losses={"cross_entropy": value, "total": value},
            steps=int(stepped),
            note="" if stepped else "non-finite loss; step skipped",
        )
