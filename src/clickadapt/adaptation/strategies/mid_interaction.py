"""Mid-Interaction adaptation (MI, method.md §7.1): one step after every click from the second on."""

from __future__ import annotations

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ClickLossSettings,
    ImageEvent,
    StepReport,
    StrategyConfig,
    pseudo_label,
)
from clickadapt.adaptation.strategies.click_losses import OaimsUpdateLoss
from clickadapt.tasks import TaskSpec


class MidInteractionConfig(StrategyConfig, ClickLossSettings):
    """Settings of Mid-Interaction adaptation.

    Attributes:
        click_loss: Add β·L_CCG on the new click (``False`` is the ablation "MI without CCG", which
            collapses under large shift in the paper).
    """

    click_loss: bool = True


def mid_interaction_update(
    strategy: AdaptationStrategy, loss: OaimsUpdateLoss, event: ClickEvent, click_loss: bool
) -> StepReport:
    """One MI step: L_DF(f(I, C_{t−1}), P_t^init) + β·L_CCG(c_t), P_t^init = f(I, C_t) without grad.

    Args:
        strategy: Owner of the optimizer.
        loss: The OAIMS loss.
        event: The click event (its ``current_logits`` give the pseudo-label).
        click_loss: Include the CCG term on the new click.

    Returns:
        The step report (``updated=False`` with a note if the loss was not finite).
    """
    target = pseudo_label(event.current_logits())
    previous_logits = event.forward(event.clicks[:-1], grad=True)
    total, values = loss(previous_logits, target, [event.new_click] if click_loss else None)
    stepped = strategy.gradient_step(total)
    return StepReport(
        updated=stepped, losses=values, steps=int(stepped), note="" if stepped else "non-finite loss; step skipped"
    )


class MidInteractionStrategy(AdaptationStrategy):
    """MI: after click t ≥ 2, learn to predict the new pseudo-label from the previous clicks."""

    name = "mid"

    def __init__(self, task: TaskSpec, config: MidInteractionConfig | None = None) -> None:
        self.settings = config or MidInteractionConfig()
        super().__init__(task, self.settings)
        self.loss = OaimsUpdateLoss(self.settings)

    def updates_on_click(self, click_index: int) -> bool:
        """From the second click on."""
        return click_index >= 1

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """One MI step (nothing at the first click)."""
        if event.click_index < 1:
            return None
        return mid_interaction_update(self, self.loss, event, self.settings.click_loss)

    def updates_after_image(self) -> bool:
        """Never at the end of an image."""
        return False

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """MI does nothing when the image is finished."""
        return None
