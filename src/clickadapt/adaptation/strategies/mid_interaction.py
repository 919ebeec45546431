"""Mid-Interaction adaptation (MI, method.md §7.1): one step after every click from the second on."""

from __future__ import annotations

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    StrategyConfig,
    image_loss,
    pseudo_label,
)
from clickadapt.losses.combined import LossConfig, SegmentationLoss
from clickadapt.tasks import TaskSpec


class MidInteractionConfig(StrategyConfig, LossConfig):
    """Settings of Mid-Interaction adaptation: Adam (:class:`StrategyConfig`), the loss (:class:`LossConfig`).

    Attributes:
        click_loss: Add β·L_CCG on the new click (``False`` is the ablation "MI without CCG", which
            collapses under large shift in the paper).
    """

    click_loss: bool = True


def mid_interaction_update(
    strategy: AdaptationStrategy, loss: SegmentationLoss, event: ClickEvent, click_loss: bool
) -> StepReport:
    """One MI step: L_DF(f(I, C_{t−1}), P_t^init) + β·L_CCG(c_t), P_t^init = f(I, C_t) without grad.

    Costs one no-grad forward (P_t^init) and one backward: f(I, C_{t−1}; θ) is the graph the session kept
    from the forward that displayed the previous mask (recomputed only when it was not kept).

    Args:
        strategy: Owner of the optimizer.
        loss: L_DF + β·L_CCG.
        event: The click event (its ``current_logits`` give the pseudo-label).
        click_loss: Include the CCG term on the new click (else that term is 0).

    Returns:
        The step report (``updated=False`` with a note if the loss was not finite).
    """
    target = pseudo_label(event.current_logits())
    previous_logits = event.previous_logits_with_graph()
    total, values = image_loss(loss, previous_logits, target, [event.new_click] if click_loss else [])
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
        self.loss = self.settings.build()

    def updates_on_click(self, click_index: int) -> bool:
        """From the second click on."""
        return click_index >= 1

    def backpropagates_through_previous_forward(self, click_index: int) -> bool:
        """Every MI step back-propagates through f(I, C_{t−1}; θ)."""
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
