"""IA+SA baseline (Kontogianni et al., ECCV 2020): clicks as sparse labels plus a mask prior.

Per click, a few Adam steps on

    L = CE at the clicked pixels (labels = the clicks' classes)
        + λ · CE(f(I, C_t), M) over all other pixels,

where the mask prior M is the model's own prediction f(I, C_t) before this click's update (detached,
fixed over the steps of the click). Image-adaptive (IA): the updates happen during the interaction.
Set-adaptive (SA): the weights carry over to the next image (``carry_across_images=True``, default);
with ``False`` ("IA only") the weights and optimizer state of the image start are restored when the
image is finished (or abandoned for a new image).

Choices made here (the paper adapts a 2-class DeepLab on natural images; its exact step count and
loss weight were not transferred): ``steps_per_click=3`` Adam steps per click, a few back-propagations
per click as in the paper's per-correction updates; the learning rate is the task default shared by all
strategies; λ = 1; ``click_radius=0`` uses exactly the clicked pixel as a label (a larger radius labels a
small disk). All are settings of :class:`IaSaConfig`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from clickadapt.adaptation.strategies.base import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    ImageStartEvent,
    StepReport,
    StrategyConfig,
    deep_copy_state,
    pseudo_label,
)
from clickadapt.tasks import TaskSpec

IGNORE_INDEX = -100


class IaSaConfig(StrategyConfig):
    """Settings of IA+SA.

    Attributes:
        steps_per_click: Adam steps after each click.
        prior_weight: λ, weight of the mask-prior cross-entropy.
        click_radius: Pixels within this distance of a click are labelled with its class (0 = the pixel).
        carry_across_images: SA: keep the adapted weights for the next image; ``False`` = IA only.
    """

    steps_per_click: int = Field(default=3, ge=1)
    prior_weight: float = Field(default=1.0, ge=0.0)
    click_radius: int = Field(default=0, ge=0)
    carry_across_images: bool = True


def sparse_click_labels(shape: tuple[int, int], event: ClickEvent, radius: int) -> torch.Tensor:
    """``(1, H, W)`` int64 map: click classes at (and within ``radius`` of) the clicks, ``IGNORE_INDEX`` elsewhere.

    Later clicks overwrite earlier ones where their disks overlap.
    """
    height, width = shape
    labels = torch.full((1, height, width), IGNORE_INDEX, dtype=torch.int64, device=event.image.device)
    rows = torch.arange(height, device=labels.device)[:, None]
    cols = torch.arange(width, device=labels.device)[None, :]
    for click in event.clicks:
        disk = (rows - click.row) ** 2 + (cols - click.col) ** 2 <= radius**2
        labels[0][disk] = click.label
    return labels


class IaSaStrategy(AdaptationStrategy):
    """IA+SA: a few steps per click on sparse click labels plus the model's own prior mask."""

    name = "ia-sa"

    def __init__(self, task: TaskSpec, config: IaSaConfig | None = None) -> None:
        self.settings = config or IaSaConfig()
        super().__init__(task, self.settings)
        self._image_start: dict[str, Any] | None = None

    def updates_on_click(self, click_index: int) -> bool:
        """Every click, the first included (every click is a correction)."""
        return True

    def begin_image(self, event: ImageStartEvent) -> StepReport | None:
        """IA only: undo an abandoned image's updates, then remember the weights at the image start."""
        if self.settings.carry_across_images:
            return None
        report = self._restore_image_start("weights of the unfinished previous image restored")
        self._image_start = deep_copy_state(self._current_state())
        return report

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """``steps_per_click`` steps on the sparse click loss plus λ · mask-prior loss."""
        if not self.settings.carry_across_images and self._image_start is None:
            self._image_start = deep_copy_state(self._current_state())
        shape = (int(event.image.shape[-2]), int(event.image.shape[-1]))
        click_labels = sparse_click_labels(shape, event, self.settings.click_radius)
        prior = pseudo_label(event.current_logits())
        prior = prior.masked_fill(click_labels != IGNORE_INDEX, IGNORE_INDEX)
        losses: dict[str, float] = {}
        steps = 0
        for step in range(self.settings.steps_per_click):
            logits = event.forward(event.clicks, grad=True)
            click_loss = nn.functional.cross_entropy(logits, click_labels, ignore_index=IGNORE_INDEX)
            prior_loss = nn.functional.cross_entropy(logits, prior, ignore_index=IGNORE_INDEX)
            total = click_loss + self.settings.prior_weight * prior_loss
            if step == 0:
                losses = {"click": float(click_loss.detach()), "prior": float(prior_loss.detach())}
                losses["total"] = float(total.detach())
            if not self.gradient_step(total):
                break
            steps += 1
        return StepReport(updated=steps > 0, losses=losses, steps=steps, note="" if steps else "non-finite loss")

    def updates_after_image(self) -> bool:
        """In IA-only mode (the image-start weights are restored)."""
        return not self.settings.carry_across_images

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """IA only: restore the weights and optimizer state of the image start; SA: nothing."""
        if self.settings.carry_across_images:
            return None
        return self._restore_image_start("IA only: weights of the image start restored")

    def _current_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "strategy": super().state_dict()}

    def _restore_image_start(self, note: str) -> StepReport | None:
        if self._image_start is None:
            return None
        start = deep_copy_state(self._image_start)
        self._image_start = None
        self.model.load_state_dict(start["model"])
        super().load_state_dict(start["strategy"])
        return StepReport(updated=True, note=note)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state and, in IA-only mode, the saved image-start state."""
        return {**super().state_dict(), "image_start": self._image_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizer state and image-start state."""
        super().load_state_dict(state)
        self._image_start = state.get("image_start")
