"""TSCA baseline (Atanyan et al., WACV 2024): a student learns from the clicks, an EMA teacher displays.

The shared network of the session is the *teacher*: it produces every displayed prediction and it is
what carries over from image to image. The strategy owns a *student* copy and its Adam optimizer. At
each click (the first included) the student takes ``steps_per_click`` steps on

    L = CE at the clicked pixels (labels = the clicks' classes)
        + w · soft CE(student(I, C_t), softmax(teacher(I, C_t)))   (consistency with the teacher),

and after every student step the teacher follows by an exponential moving average,
θ_teacher ← m·θ_teacher + (1 − m)·θ_student (buffers copied). The slow teacher is the guard against
forgetting. At the start of each image the student is reset to the teacher (``reset_student_each_image``),
so that only the teacher's weights are carried across images.

Choices made here: m = 0.99, w = 1, 5 student steps per click ("many back-propagations per image",
method.md §8); the teacher's target is its prediction before this click's steps, fixed over the steps.
The student is shared by all sessions of one model (one interaction at a time is the intended use).
"""

from __future__ import annotations

import copy
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
    click_cross_entropy,
)
from clickadapt.tasks import TaskSpec


class TscaConfig(StrategyConfig):
    """Settings of TSCA.

    Attributes:
        steps_per_click: Student Adam steps after each click.
        teacher_momentum: EMA momentum m of the teacher (per student step).
        consistency_weight: w, weight of the consistency with the teacher's prediction.
        reset_student_each_image: Copy the teacher into the student when a new image opens.
    """

    steps_per_click: int = Field(default=5, ge=1)
    teacher_momentum: float = Field(default=0.99, ge=0.0, le=1.0)
    consistency_weight: float = Field(default=1.0, ge=0.0)
    reset_student_each_image: bool = True


class TscaStrategy(AdaptationStrategy):
    """Teacher-student continuous adaptation; the bound model is the teacher."""

    name = "tsca"

    def __init__(self, task: TaskSpec, config: TscaConfig | None = None) -> None:
        self.settings = config or TscaConfig()
        super().__init__(task, self.settings)
        self._student: nn.Module | None = None

    @property
    def student(self) -> nn.Module:
        """The student network (a copy of the teacher made at :meth:`bind`)."""
        if self._student is None:
            raise RuntimeError("TSCA strategy is not bound to a model; call bind(model) first")
        return self._student

    def parameters_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        """The student's parameters (created here as a copy of the teacher)."""
        if self._student is None:
            self._student = copy.deepcopy(model)
            self._student.requires_grad_(True)
        return list(self._student.parameters())

    def updates_on_click(self, click_index: int) -> bool:
        """Every click (the teacher moves after each student step)."""
        return True

    def begin_image(self, event: ImageStartEvent) -> StepReport | None:
        """Reset the student to the teacher (the teacher's weights do not change)."""
        if self.settings.reset_student_each_image:
            self.student.load_state_dict(self.model.state_dict())
        return None

    def after_click(self, event: ClickEvent) -> StepReport | None:
        """Student steps on click labels + teacher consistency, each followed by the teacher EMA."""
        teacher_probabilities = torch.softmax(event.current_logits(), dim=1)
        inputs = event.inputs(event.clicks)
        losses: dict[str, float] = {}
        steps = 0
        for step in range(self.settings.steps_per_click):
            student_logits = self.student(inputs)
            click_loss = click_cross_entropy(student_logits, event.clicks)
            log_probabilities = torch.log_softmax(student_logits, dim=1)
            consistency = -(teacher_probabilities * log_probabilities).sum(dim=1).mean()
            total = click_loss + self.settings.consistency_weight * consistency
            if step == 0:
                losses = {"click": float(click_loss.detach()), "consistency": float(consistency.detach())}
                losses["total"] = float(total.detach())
            if not self.gradient_step(total):
                break
            self._update_teacher()
            steps += 1
        return StepReport(updated=steps > 0, losses=losses, steps=steps, note="" if steps else "non-finite loss")

    def updates_after_image(self) -> bool:
        """Never at the end of an image."""
        return False

    def after_image(self, event: ImageEvent) -> StepReport | None:
        """Nothing: all updates happen during the interaction."""
        return None

    @torch.no_grad()
    def _update_teacher(self) -> None:
        momentum = self.settings.teacher_momentum
        for teacher, student in zip(self.model.parameters(), self.student.parameters(), strict=True):
            teacher.lerp_(student, 1.0 - momentum)
        for teacher_buffer, student_buffer in zip(self.model.buffers(), self.student.buffers(), strict=True):
            teacher_buffer.copy_(student_buffer)

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state and the student's weights."""
        return {**super().state_dict(), "student": self.student.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore optimizer state and student weights."""
        super().load_state_dict(state)
        self.student.load_state_dict(state["student"])
