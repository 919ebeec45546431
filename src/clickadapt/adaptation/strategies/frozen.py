"""No adaptation: the pre-trained model as shipped (the paper's ICNN* baseline)."""

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


class FrozenConfig(StrategyConfig):
    """The frozen strategy has no settings of its own (the optimizer settings are ignored)."""


class FrozenStrategy(AdaptationStrategy):
    """Never updates: no optimizer, no gradients; every click costs exactly one forward."""

    name = "frozen"

    def __init__(self, task: TaskSpec, config: FrozenConfig | None = None) -> None:
        super().__init__(task, config or FrozenConfig())

    def parameters_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        """Nothing is adapted, so no optimizer is built."""
        return []

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """Nothing to do."""
        return None

    def updates_after_image(self) -> bool:
        """Never at the end of an image."""
        return False

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """Nothing to do."""
        return None
