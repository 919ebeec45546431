"""OAIMS: Mid-Interaction after every click from the second on, plus Post-Interaction per image."""

from __future__ import annotations

from typing import Any

import numpy as np

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    rng_state,
    set_rng_state,
)
from clickadapt.adaptation.strategies.mid_interaction import MidInteractionConfig, mid_interaction_update
from clickadapt.adaptation.strategies.post_interaction import PostInteractionConfig, post_interaction_update
from clickadapt.tasks import TaskSpec


class OaimsConfig(MidInteractionConfig, PostInteractionConfig):
    """Settings of PI+MI: the union of the MI and PI settings; one optimizer serves both."""


class OaimsStrategy(AdaptationStrategy):
    """PI+MI (the paper's full method): one step per click from the second on, two per image."""

    name = "oaims"

    def __init__(self, task: TaskSpec, config: OaimsConfig | None = None) -> None:
        self.settings = config or OaimsConfig()
        super().__init__(task, self.settings)
        self.loss = self.settings.build()
        self.rng = np.random.default_rng(self.settings.seed)

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

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """PI Stage 1 and Stage 2 on the final mask."""
        return post_interaction_update(self, self.loss, event, self.settings, self.rng)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state and the synthetic-click generator's state."""
        return {**super().state_dict(), "rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizer and generator."""
        super().load_state_dict(state)
        set_rng_state(self.rng, state["rng"])
