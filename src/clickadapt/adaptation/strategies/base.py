"""The strategy interface: what an adaptation strategy sees, when it is called and what it reports.

A strategy plugs into :class:`~clickadapt.adaptation.session.InteractiveSession` at three moments:
when an image is opened (:meth:`AdaptationStrategy.begin_image`), after a click
(:meth:`AdaptationStrategy.after_click`) and when the user finishes an image
(:meth:`AdaptationStrategy.after_image`). It never runs the network or reads the session by itself: the
events carry the image, the clicks, the logits the session already computed and a ``forward`` callable
that runs the shared network on any set of clicks. The strategy owns its optimizer and any extra state
(a teacher, a random generator) and exposes it through :meth:`~AdaptationStrategy.state_dict` so that a
:class:`~clickadapt.adaptation.model_state.ModelState` snapshot restores it bit for bit.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from torch import nn

from clickadapt.clicks.click import Click
from clickadapt.losses.combined import SegmentationLoss
from clickadapt.tasks import TaskSpec

DEFAULT_LEARNING_RATES: dict[str, float] = {"fundus": 1e-4, "brain": 5e-5}
"""Adam learning rates of the paper's online adaptation (method.md §7), by task name."""
FALLBACK_LEARNING_RATE = 1e-4
"""Learning rate for a task the paper did not run (the fundus value)."""


def default_learning_rate(task: TaskSpec) -> float:
    """The paper's online learning rate for ``task`` (1e-4 fundus, 5e-5 brain, 1e-4 for other tasks)."""
    return DEFAULT_LEARNING_RATES.get(task.name, FALLBACK_LEARNING_RATE)


class StrategyConfig(BaseModel):
    """Settings every strategy understands: the Adam optimizer of its updates.

    Attributes:
        lr: Adam learning rate; ``None`` takes the task's default (:func:`default_learning_rate`).
        betas: Adam moment decay rates.
        eps: Adam epsilon.
        weight_decay: Adam (L2) weight decay; the paper uses none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: PositiveFloat | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: float = Field(default=0.0, ge=0.0)


class ForwardFn(Protocol):
    """Runs the session's (shared) network on the session's image with the given clicks."""

    def __call__(self, clicks: Sequence[Click], grad: bool = False) -> torch.Tensor:
        """Return logits ``(1, K, H, W)``; with ``grad=False`` they are computed without autograd."""
        ...


InputFn = Callable[[Sequence[Click]], torch.Tensor]
"""Builds the network input ``(1, C + K, H, W)`` of the session's image with the given clicks."""


@dataclass
class StepReport:
    """What one hook call of a strategy did.

    Attributes:
        updated: Whether the weights of the shared network changed (the session then counts a new
            model version and recomputes the displayed prediction).
        losses: Loss values, before the step(s), by name (``"total"`` always present when a step ran).
        steps: Number of optimizer steps taken.
        note: Why nothing happened, or anything worth logging (``"stage 2 skipped: no error"``).
    """

    updated: bool
    losses: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    note: str = ""


@dataclass(frozen=True)
class ImageStartEvent:
    """A new image was opened in a session.

    Attributes:
        image: The image ``(C, H, W)`` on the model's device.
        task: The task.
        image_id: Caller's identifier of the image (may be empty).
    """

    image: torch.Tensor
    task: TaskSpec
    image_id: str = ""


@dataclass
class ClickEvent:
    """A click was added; handed to :meth:`AdaptationStrategy.after_click` before the display forward.

    Attributes:
        image: The image ``(C, H, W)`` on the model's device.
        clicks: All clicks of the image so far, the new one last (C_t).
        previous_logits: Logits ``(1, K, H, W)`` on screen before this click (f(I, C_{t−1}) with the weights
            of that moment, no graph); ``None`` at the first click.
        forward: Runs the shared network on this image with any clicks.
        inputs: Builds the network input for any clicks (for strategies with a network of their own).
        task: The task.
        image_id: Caller's identifier of the image.
        previous_graph: The same logits as ``previous_logits`` but still carrying the autograd graph of the
            forward that displayed them, handed over by the session when the strategy asked for it
            (:meth:`AdaptationStrategy.backpropagates_through_previous_forward`) and the weights have not
            changed since; ``None`` otherwise. Read it through :meth:`previous_logits_with_graph`.
    """

    image: torch.Tensor
    clicks: tuple[Click, ...]
    previous_logits: torch.Tensor | None
    forward: ForwardFn
    inputs: InputFn
    task: TaskSpec
    image_id: str = ""
    previous_graph: torch.Tensor | None = field(default=None, repr=False)
    _current_logits: torch.Tensor | None = field(default=None, repr=False)

    @property
    def click_index(self) -> int:
        """0-based index of the new click (0 = first click)."""
        return len(self.clicks) - 1

    @property
    def new_click(self) -> Click:
        """The click just added (c_t)."""
        return self.clicks[-1]

    @property
    def first_click(self) -> Click:
        """The first click of the image (c_1)."""
        return self.clicks[0]

    def current_logits(self) -> torch.Tensor:
        """f(I, C_t; θ) before any update of this click, without graph (computed once, on demand)."""
        if self._current_logits is None:
            self._current_logits = self.forward(self.clicks, grad=False)
        return self._current_logits

    def previous_logits_with_graph(self) -> torch.Tensor:
        """f(I, C_{t−1}; θ) with its autograd graph, for one backward pass.

        The session's displayed forward of the previous click is reused when it kept its graph (the
        weights are then the same θ, so the values and gradients are those of a recomputation); otherwise
        the forward is recomputed here. The kept graph is handed out once: a second call recomputes.

        Raises:
            ValueError: At the first click (there is no previous forward).
        """
        if self.click_index < 1:
            raise ValueError("the first click has no previous forward")
        kept, self.previous_graph = self.previous_graph, None
        if kept is not None:
            return kept
        return self.forward(self.clicks[:-1], grad=True)

    @property
    def computed_current_logits(self) -> torch.Tensor | None:
        """The cached :meth:`current_logits` if a strategy asked for them, else ``None``."""
        return self._current_logits


@dataclass(frozen=True)
class ImageEvent:
    """The user finished an image; handed to :meth:`AdaptationStrategy.after_image`.

    Attributes:
        image: The image ``(C, H, W)`` on the model's device.
        clicks: All clicks of the image, in order.
        final_mask: The final prediction ``(H, W)`` int64 (the pseudo-label P_final).
        final_logits: The logits ``(1, K, H, W)`` that produced it (no graph).
        forward: Runs the shared network on this image with any clicks.
        inputs: Builds the network input for any clicks.
        task: The task.
        image_id: Caller's identifier of the image.
    """

    image: torch.Tensor
    clicks: tuple[Click, ...]
    final_mask: torch.Tensor
    final_logits: torch.Tensor
    forward: ForwardFn
    inputs: InputFn
    task: TaskSpec
    image_id: str = ""

    @property
    def first_click(self) -> Click:
        """The first click of the image (c_1)."""
        return self.clicks[0]


class AdaptationStrategy(abc.ABC):
    """Base class of the online adaptation strategies.

    Subclasses set :attr:`name`, implement :meth:`after_click` and :meth:`after_image`, and override
    :meth:`updates_on_click` to say at which clicks they may change weights (the session takes an undo
    snapshot only there, keeping the hot path of other clicks to one forward). A strategy is bound to
    exactly one network (:meth:`bind`) and owns its Adam optimizer.

    Args:
        task: The task (gives the default learning rate).
        config: The strategy's settings.
    """

    name: ClassVar[str] = "base"

    def __init__(self, task: TaskSpec, config: StrategyConfig) -> None:
        self.task = task
        self.config = config
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._trainable: list[nn.Parameter] = []

    @property
    def learning_rate(self) -> float:
        """The Adam learning rate in use (the config's or the task's default)."""
        return self.config.lr if self.config.lr is not None else default_learning_rate(self.task)

    @property
    def model(self) -> nn.Module:
        """The bound network; raises ``RuntimeError`` before :meth:`bind`."""
        if self._model is None:
            raise RuntimeError(f"strategy {self.name!r} is not bound to a model; call bind(model) first")
        return self._model

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The strategy's optimizer (``None`` for strategies that never update)."""
        return self._optimizer

    def bind(self, model: nn.Module) -> None:
        """Attach the strategy to ``model`` and build its optimizer over :meth:`parameters_to_adapt`.

        Raises:
            ValueError: If the strategy is already bound to another model, or has nothing to adapt.
        """
        if self._model is not None:
            if self._model is model:
                return
            raise ValueError(f"strategy {self.name!r} is already bound to another model; make a new one")
        parameters = self.parameters_to_adapt(model)
        self._model = model
        self._trainable = parameters
        if parameters:
            self._optimizer = torch.optim.Adam(
                parameters,
                lr=self.learning_rate,
                betas=self.config.betas,
                eps=self.config.eps,
                weight_decay=self.config.weight_decay,
            )

    def parameters_to_adapt(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the optimizer updates (default: every parameter of ``model``)."""
        return list(model.parameters())

    def updates_on_click(self, click_index: int) -> bool:
        """Whether :meth:`after_click` may change weights at the click with this 0-based index."""
        return False

    def backpropagates_through_previous_forward(self, click_index: int) -> bool:
        """Whether :meth:`after_click` at this click back-propagates through f(I, C_{t−1}; θ).

        When true, the session runs the displayed forward of the click before (index ``click_index − 1``)
        with autograd and keeps its graph, so the update needs no second forward on the same input with
        the same weights (see :meth:`ClickEvent.previous_logits_with_graph`). Default: ``False``.
        """
        return False

    def updates_after_image(self) -> bool:
        """Whether :meth:`after_image` may change weights (the session calls it only then)."""
        return True

    def begin_image(self, event: ImageStartEvent) -> StepReport | None:
        """Called when a session opens a new image (default: nothing)."""
        return None

    @abc.abstractmethod
    def after_click(self, event: ClickEvent) -> StepReport | None:
        """Called after a click when :meth:`updates_on_click` is true; ``None`` = nothing done."""

    @abc.abstractmethod
    def after_image(self, event: ImageEvent) -> StepReport | None:
        """Called when the user finishes an image and :meth:`updates_after_image` is true; ``None`` = nothing done."""

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the network weights that an update changes (optimizer moments, …).

        The returned tensors may alias live state; :class:`ModelState` deep-copies it.
        """
        return {"optimizer": self._optimizer.state_dict() if self._optimizer is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the caller passes a private copy)."""
        if self._optimizer is not None and state.get("optimizer") is not None:
            self._optimizer.load_state_dict(state["optimizer"])

    def gradient_step(self, loss: torch.Tensor) -> bool:
        """One Adam step on ``loss`` over the adapted parameters only.

        Gradients are computed with :func:`torch.autograd.grad` for the adapted parameters alone, so a
        strategy that adapts a few parameters (TENT) does not pay for the others.

        Returns:
            ``False`` (and no step) when the loss is not finite, ``True`` otherwise.

        Raises:
            RuntimeError: If the strategy has no optimizer.
        """
        if self._optimizer is None:
            raise RuntimeError(f"strategy {self.name!r} has no optimizer; it cannot take a gradient step")
        if not torch.isfinite(loss.detach()).all():
            return False
        gradients = torch.autograd.grad(loss, self._trainable, allow_unused=True)
        for parameter, gradient in zip(self._trainable, gradients, strict=True):
            parameter.grad = gradient
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return True

    def describe(self) -> dict[str, Any]:
        """Name, learning rate and settings, for logs and reports."""
        return {"name": self.name, "lr": self.learning_rate, **self.config.model_dump()}


def click_cross_entropy(logits: torch.Tensor, clicks: Sequence[Click]) -> torch.Tensor:
    """Mean cross-entropy at the clicked pixels only (clicks as sparse labels).

    Args:
        logits: ``(1, K, H, W)``.
        clicks: Clicks of that image (at least one).

    Returns:
        Scalar: mean over clicks of −log softmax(logits)[y_c] at (row_c, col_c).
    """
    rows = torch.tensor([c.row for c in clicks], device=logits.device)
    cols = torch.tensor([c.col for c in clicks], device=logits.device)
    labels = torch.tensor([c.label for c in clicks], device=logits.device)
    click_logits = logits[0, :, rows, cols].transpose(0, 1)  # (N, K)
    return nn.functional.cross_entropy(click_logits, labels)


def image_loss(
    loss: SegmentationLoss, logits: torch.Tensor, target: torch.Tensor, clicks: Sequence[Click]
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_DF + β·L_CCG`` of one image and its terms as floats, for a step and its report.

    Args:
        loss: The loss (built from the strategy's :class:`~clickadapt.losses.combined.LossConfig` settings).
        logits: ``(1, K, H, W)`` with graph.
        target: ``(1, H, W)`` int64 (pseudo-)label.
        clicks: Clicks of the CCG term; none makes that term 0.

    Returns:
        The total loss and ``{"dice_focal", "click_gaussian", "total"}`` as floats.
    """
    terms = loss.components(logits, target, [list(clicks)])
    return terms.total, terms.as_floats()


def pseudo_label(logits: torch.Tensor) -> torch.Tensor:
    """Hard label ``(B, H, W)`` int64 from logits ``(B, K, H, W)`` (detached): ``logits.argmax(dim=1)``.

    Computed as an argmax over the innermost axis of a channels-last copy, which gives the same indices
    (the first maximum on ties); PyTorch's CPU argmax over a non-innermost axis is much slower, and the
    inference logits are channels-last already (see ``ReferenceUNet.forward``), so the copy is free there.
    """
    return logits.detach().movedim(1, -1).contiguous().argmax(dim=-1)


def deep_copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of a (strategy or model) state dict: tensors cloned, everything else deep-copied."""
    copied: dict[str, Any] = _deep_copy(state)
    return copied


def _deep_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_deep_copy(item) for item in value)
    return copy.deepcopy(value)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The exact state of a numpy generator (restorable with :func:`set_rng_state`)."""
    return dict(copy.deepcopy(rng.bit_generator.state))


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Put a numpy generator back into a state from :func:`rng_state`."""
    rng.bit_generator.state = copy.deepcopy(state)
