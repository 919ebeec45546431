"""Post-Interaction adaptation (PI, method.md §7.2): two steps when the user finishes an image.

Stage 1 teaches the first-glance localisation: P_1 = f(I, {c_1}), one step on L_DF(P_1, P_final)
(+ β·L_CCG on c_1 when ``stage1_click_loss``, as in the released code). Stage 2 teaches the use of
corrections: one synthetic click per false-positive / false-negative component of the Stage-1 output
against P_final (the ``max_synthetic_clicks`` largest, a random pixel each, class from P_final), then one
step on L_DF(f(I, synthetic clicks), P_final) + β·L_CCG on those clicks. The Stage-1 output compared
with P_final is the prediction P_1 computed for the Stage-1 loss (before its step), so Stage 2 needs no
extra forward; if it has no error, Stage 2 is skipped and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    StepReport,
    StrategyConfig,
    image_loss,
    pseudo_label,
    rng_state,
    set_rng_state,
)
from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import error_components, random_pixel
from clickadapt.losses.combined import LossConfig, SegmentationLoss
from clickadapt.tasks import TaskSpec


class PostInteractionConfig(StrategyConfig, LossConfig):
    """Settings of Post-Interaction adaptation: Adam (:class:`StrategyConfig`), the loss (:class:`LossConfig`).

    Attributes:
        stage1_click_loss: Add β·L_CCG on the first click to the Stage-1 loss (released code; the paper
            text uses L_DF alone).
        max_synthetic_clicks: Synthetic correction clicks in Stage 2 (one per error component, largest
            first).
        stage2_include_first_click: Feed c_1 together with the synthetic clicks in Stage 2 (the released
            code feeds only the synthetic clicks).
        seed: Seed of the generator that picks the synthetic clicks' pixels.
    """

    stage1_click_loss: bool = True
    max_synthetic_clicks: int = Field(default=10, ge=1)
    stage2_include_first_click: bool = False
    seed: int = 0


def synthetic_correction_clicks(
    pseudo_ground_truth: np.ndarray, prediction: np.ndarray, max_clicks: int, rng: np.random.Generator
) -> list[Click]:
    """One click per error component of ``prediction`` against ``pseudo_ground_truth``.

    Args:
        pseudo_ground_truth: P_final ``(H, W)`` int.
        prediction: The Stage-1 prediction ``(H, W)`` int.
        max_clicks: Keep the largest components only.
        rng: Picks a uniformly random pixel in each component.

    Returns:
        Clicks, largest component first, labelled with the class of P_final there.
    """
    clicks = []
    for component in error_components(pseudo_ground_truth, prediction, max_components=max_clicks):
        row, col = random_pixel(component.mask, rng)
        clicks.append(Click(row=row, col=col, label=int(pseudo_ground_truth[row, col])))
    return clicks


def post_interaction_update(
    strategy: AdaptationStrategy,
    loss: SegmentationLoss,
    event: ImageEvent,
    settings: PostInteractionConfig,
    rng: np.random.Generator,
) -> StepReport:
    """Run Stage 1 and (when the Stage-1 output has errors) Stage 2.

    Returns:
        A report with the losses of both stages (``stage1_*``, ``stage2_*``) and the number of synthetic
        clicks (``synthetic_clicks``).
    """
    target = event.final_mask.unsqueeze(0)
    first_click_logits = event.forward([event.first_click], grad=True)
    stage1_total, stage1_values = image_loss(
        loss, first_click_logits, target, [event.first_click] if settings.stage1_click_loss else []
    )
    values = {f"stage1_{key}": value for key, value in stage1_values.items()}
    steps = int(strategy.gradient_step(stage1_total))
    stage1_prediction = pseudo_label(first_click_logits)[0].cpu().numpy()
    final_mask = event.final_mask.cpu().numpy()
    clicks = synthetic_correction_clicks(final_mask, stage1_prediction, settings.max_synthetic_clicks, rng)
    values["synthetic_clicks"] = float(len(clicks))
    notes = [] if steps else ["stage 1: non-finite loss; step skipped"]
    if not clicks:
        notes.append("stage 2 skipped: the stage-1 prediction has no error against the final mask")
    else:
        stage2_clicks = [event.first_click, *clicks] if settings.stage2_include_first_click else clicks
        stage2_logits = event.forward(stage2_clicks, grad=True)
        stage2_total, stage2_values = image_loss(loss, stage2_logits, target, clicks)
        values.update({f"stage2_{key}": value for key, value in stage2_values.items()})
        stage2_stepped = strategy.gradient_step(stage2_total)
        steps += int(stage2_stepped)
        if not stage2_stepped:
            notes.append("stage 2: non-finite loss; step skipped")
    values["total"] = values["stage1_total"] + values.get("stage2_total", 0.0)
    return StepReport(updated=steps > 0, losses=values, steps=steps, note="; ".join(notes))


class PostInteractionStrategy(AdaptationStrategy):
    """PI: two steps per finished image on its final mask; nothing during the interaction."""

    name = "post"

    def __init__(self, task: TaskSpec, config: PostInteractionConfig | None = None) -> None:
        self.settings = config or PostInteractionConfig()
        super().__init__(task, self.settings)
        self.loss = self.settings.build()
        self.rng = np.random.default_rng(self.settings.seed)

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """PI does nothing during the interaction."""
        return None

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """Stage 1 and Stage 2 on the final mask."""
        return post_interaction_update(self, self.loss, event, self.settings, self.rng)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state and the synthetic-click generator's state."""
        return {**super().state_dict(), "rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizer and generator."""
        super().load_state_dict(state)
        set_rng_state(self.rng, state["rng"])
