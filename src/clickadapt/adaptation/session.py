"""The interactive session: one image, its clicks, the predictions, and the hooks of adaptation.

Benchmarks (through simulated users) and people (through the server) drive the same object::

    session = InteractiveSession(model_state)           # or InteractiveSession(network, task, "oaims")
    session.set_image(image)                            # (C, H, W) float32
    prediction = session.add_click(Click(40, 52, 1))    # (H, W) int64, after strategy.after_click
    session.undo()                                      # also undoes that click's weight update
    final_mask = session.finish()                       # runs strategy.after_image

Per click the session does only what the strategy needs: a strategy that does not update at this click
costs exactly one inference forward (the displayed one). When it may update, the session snapshots the
weights and strategy state (for undo), hands the strategy a :class:`ClickEvent` (whose
``current_logits()`` is the no-grad forward f(I, C_t) computed on demand and cached), counts the update
as a new model version, and runs the displayed forward with the new weights; a strategy that decides not
to update leaves the cached forward to be displayed. All work that touches the shared weights runs under
the :class:`ModelState` lock, so several sessions may share one model from several threads.

No forward is computed twice: when the strategy's next update back-propagates through the forward on
screen (Mid-Interaction: L_DF(f(I, C_{t−1}; θ), P_t^init)), the displayed forward runs with autograd and
its graph is kept for that update (``reuse_displayed_forward``), as long as the weights do not change in
between; so an MI click costs one no-grad forward (P_t^init), one backward and the displayed forward,
instead of three forwards and a backward. Every other forward runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat
from torch import nn

from clickadapt.adaptation.model_state import FinishedImage, ModelState, StateSnapshot
from clickadapt.adaptation.strategies import (
    AdaptationStrategy,
    ClickEvent,
    ImageEvent,
    ImageStartEvent,
    StepReport,
    make_strategy,
)
from clickadapt.adaptation.strategies.base import pseudo_label
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA, model_input
from clickadapt.tasks import TaskSpec


class SessionConfig(BaseModel):
    """Settings of an interactive session.

    Attributes:
        click_sigma: σ of the Gaussian click maps fed to the network (method.md §2: 5 px).
        undo_depth: How many of the latest clicks keep a snapshot from before their weight update, i.e.
            how many consecutive undos can restore weights bit for bit (each snapshot holds the weights
            and optimizer state, about 3× the weights with Adam; 0 = undo never restores weights and failed
            updates are not rolled back, which saves the copy on every updating click: benchmarks with
            simulated users, which never undo, should use 0).
        min_image_size: Smallest accepted image height and width.
        reuse_displayed_forward: Keep the autograd graph of the displayed forward when the strategy's next
            update back-propagates through it, instead of recomputing that forward (same values and
            gradients; costs the graph's memory between two clicks). ``False`` = the naive path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    click_sigma: PositiveFloat = DEFAULT_CLICK_SIGMA
    undo_depth: int = Field(default=3, ge=0)
    min_image_size: int = Field(default=8, ge=1)
    reuse_displayed_forward: bool = True


@dataclass(frozen=True)
class StepTiming:
    """Wall-clock seconds of one click (or of ``finish``, where ``forward_s`` is 0).

    Attributes:
        forward_s: The displayed forward.
        update_s: The strategy hook (its own forwards and backward passes included).
        snapshot_s: Copying weights and strategy state before an update (for undo and for rolling back a
            failed update; 0 with ``undo_depth=0``).
    """

    forward_s: float
    update_s: float
    snapshot_s: float = 0.0

    @property
    def total_s(self) -> float:
        """Everything the click (or finish) cost."""
        return self.forward_s + self.update_s + self.snapshot_s


@dataclass(frozen=True)
class UndoOutcome:
    """What the last :meth:`InteractiveSession.undo` did.

    Attributes:
        click: The click removed.
        restored_weights: Whether weights and strategy state went back to before that click's update.
        reason: A sentence saying why (or why not).
    """

    click: Click
    restored_weights: bool
    reason: str


@dataclass
class _ClickRecord:
    click: Click
    logits: torch.Tensor  # displayed logits (1, K, H, W), no graph
    prediction: np.ndarray  # read-only (H, W) int64
    version: int  # model version that produced the prediction
    timing: StepTiming
    report: StepReport | None
    update_version: int | None  # version right after this click's weight update; None = no update
    snapshot: StateSnapshot | None  # weights + strategy state from before the update (for undo)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _prediction(logits: torch.Tensor) -> np.ndarray:
    """The read-only ``(H, W)`` int64 class map of logits ``(1, K, H, W)`` (a fast exact argmax)."""
    return _read_only(pseudo_label(logits)[0].cpu().numpy())


class InteractiveSession:
    """Segment one image after another by clicks, with online adaptation through a strategy.

    Args:
        state: The shared :class:`ModelState`, or a bare network (then ``task`` is required and a private
            ``ModelState`` is made with ``strategy``, frozen by default).
        task: The task; must match the ``ModelState``'s if both are given.
        strategy: Only with a bare network: a strategy or a strategy name (see ``make_strategy``).
        click_sigma: σ of the click maps.
        device: Only with a bare network: where it runs.
        undo_depth: See :class:`SessionConfig`.
        adapt: ``False`` runs no strategy hook at all (e.g. when the server replays stored clicks).
        reuse_displayed_forward: See :class:`SessionConfig`.

    Raises:
        ValueError: For a missing or mismatching task, or a strategy given together with a ModelState.
    """

    def __init__(
        self,
        state: ModelState | nn.Module,
        task: TaskSpec | None = None,
        strategy: AdaptationStrategy | str | None = None,
        click_sigma: float = DEFAULT_CLICK_SIGMA,
        device: str | torch.device = "cpu",
        undo_depth: int = 3,
        adapt: bool = True,
        reuse_displayed_forward: bool = True,
    ) -> None:
        if isinstance(state, ModelState):
            if task is not None and task != state.task:
                raise ValueError(f"task {task.name!r} does not match the model state's task {state.task.name!r}")
            if strategy is not None:
                raise ValueError("the ModelState owns the strategy; pass strategy=None or use ModelState.set_strategy")
            self.state = state
        elif isinstance(state, nn.Module):
            if task is None:
                raise ValueError("task is required when the session is given a bare network")
            if isinstance(strategy, str):
                strategy = make_strategy(strategy, task)
            self.state = ModelState(state, task, strategy, device)
        else:
            raise TypeError(f"state must be a ModelState or an nn.Module, got {type(state).__name__}")
        self.task = self.state.task
        self.config = SessionConfig(
            click_sigma=click_sigma, undo_depth=undo_depth, reuse_displayed_forward=reuse_displayed_forward
        )
        self.adapt = adapt
        self.session_id = uuid.uuid4().hex
        self.image_id = ""
        self.final_mask: np.ndarray | None = None
        self.finish_timing: StepTiming | None = None
        self.finish_report: StepReport | None = None
        self.begin_report: StepReport | None = None
        self.last_undo: UndoOutcome | None = None
        self._image: torch.Tensor | None = None
        self._records: list[_ClickRecord] = []
        self._finished = False

    # ------------------------------------------------------------------ read-only views
    @property
    def strategy(self) -> AdaptationStrategy:
        """The shared model's current strategy."""
        return self.state.strategy

    @property
    def model_version(self) -> int:
        """Current version of the shared model (+1 per weight change, counted over all its sessions)."""
        return self.state.version

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the open image, ``None`` before :meth:`set_image`."""
        if self._image is None:
            return None
        return int(self._image.shape[-2]), int(self._image.shape[-1])

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` ran on the open image."""
        return self._finished

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The clicks of the open image, in order."""
        return tuple(record.click for record in self._records)

    @property
    def predictions(self) -> list[np.ndarray]:
        """The prediction after each click (read-only ``(H, W)`` int64 arrays)."""
        return [record.prediction for record in self._records]

    @property
    def versions(self) -> list[int]:
        """The model version that produced each prediction."""
        return [record.version for record in self._records]

    @property
    def timings(self) -> list[StepTiming]:
        """Per click: seconds of the displayed forward and of the strategy's update."""
        return [record.timing for record in self._records]

    @property
    def reports(self) -> list[StepReport | None]:
        """Per click: the strategy's report (``None`` when it was not called or did nothing)."""
        return [record.report for record in self._records]

    @property
    def image(self) -> torch.Tensor | None:
        """The open image ``(C, H, W)`` as the network sees it (float32, on the model's device); ``None``
        before :meth:`set_image`. It stays readable after :meth:`finish` (the safety layer replays it)."""
        return self._image

    @property
    def prediction(self) -> np.ndarray | None:
        """The latest prediction, ``None`` before the first click."""
        return self._records[-1].prediction if self._records else None

    @property
    def first_click_prediction(self) -> np.ndarray | None:
        """The prediction after the first click (the model's first-glance mask)."""
        return self._records[0].prediction if self._records else None

    @property
    def logits(self) -> torch.Tensor | None:
        """Logits ``(1, K, H, W)`` of the latest prediction (no autograd graph), ``None`` before the first click."""
        return self._records[-1].logits if self._records else None

    @property
    def probabilities(self) -> np.ndarray | None:
        """Softmax ``(K, H, W)`` float32 of the latest prediction (computed on request)."""
        if not self._records:
            return None
        probabilities = torch.softmax(self._records[-1].logits[0].float(), dim=0)
        return probabilities.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ network access for strategies
    def _require_image(self) -> torch.Tensor:
        if self._image is None:
            raise ValueError("no image is open; call set_image(image) first")
        return self._image

    def _require_open(self) -> torch.Tensor:
        image = self._require_image()
        if self._finished:
            raise ValueError(f"image {self.image_id!r} is already finished; call set_image for the next image")
        return image

    def _inputs(self, clicks: Sequence[Click]) -> torch.Tensor:
        """Network input ``(1, C + K, H, W)`` of the open image with ``clicks``."""
        image = self._require_image()
        return model_input(image, clicks, self.task.num_classes, self.config.click_sigma).unsqueeze(0)

    def _forward(self, clicks: Sequence[Click], grad: bool = False) -> torch.Tensor:
        """Logits ``(1, K, H, W)`` of the shared network; without grad under ``torch.inference_mode``."""
        inputs = self._inputs(clicks)
        if grad:
            logits: torch.Tensor = self.state.model(inputs)
            return logits
        with torch.inference_mode():
            logits = self.state.model(inputs)
        return logits.clone()  # a normal tensor, usable as a target in a later autograd computation

    # ------------------------------------------------------------------ interaction
    def set_image(self, image: np.ndarray, image_id: str = "") -> None:
        """Open a new image (any unfinished image is abandoned) and call the strategy's ``begin_image``.

        Args:
            image: ``(C, H, W)`` real array with C = the task's image channels, finite, H and W ≥ 8; it is
                copied as float32.
            image_id: Identifier for logs and update events.

        Raises:
            ValueError: For a wrong type, shape, channel count, size or non-finite values (the session is
                left unchanged).
        """
        if not isinstance(image, np.ndarray):
            raise ValueError(f"image must be a numpy array (C, H, W), got {type(image).__name__}")
        if image.ndim != 3:
            raise ValueError(f"image must have shape (C, H, W), got shape {image.shape}")
        if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
            raise ValueError(f"image must hold real numbers, got dtype {image.dtype}")
        channels, height, width = image.shape
        if channels != self.task.image_channels:
            raise ValueError(
                f"image has {channels} channels, task {self.task.name!r} expects {self.task.image_channels} "
                f"(shape {image.shape}, channels first)"
            )
        minimum = self.config.min_image_size
        if height < minimum or width < minimum:
            raise ValueError(f"image is {height}×{width} pixels; at least {minimum}×{minimum} is needed")
        if not np.isfinite(image).all():
            raise ValueError(f"image {image_id!r} contains NaN or infinite values")
        tensor = torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).to(self.state.device)
        with self.state.lock:
            self._image = tensor
            self.image_id = image_id
            self._records = []
            self.state.drop_graph(self.session_id)
            self._finished = False
            self.final_mask = None
            self.finish_timing = None
            self.finish_report = None
            self.last_undo = None
            self.begin_report = None
            if self.adapt:
                report = self.state.strategy.begin_image(ImageStartEvent(tensor, self.task, image_id))
                self.begin_report = report
                if report is not None and report.updated:
                    self.state.record_update("image", report, image_id)

    def add_click(self, click: Click) -> np.ndarray:
        """Add a click, let the strategy adapt, and return the new prediction.

        Args:
            click: Position and class; must lie inside the image with a class of the task.

        Returns:
            The prediction ``(H, W)`` int64 (a copy).

        Raises:
            ValueError: Without an open image, after ``finish``, or for an invalid click (state unchanged).
        """
        image = self._require_open()
        if not isinstance(click, Click):
            raise ValueError(f"click must be a Click(row, col, label), got {type(click).__name__}")
        click.validate((int(image.shape[-2]), int(image.shape[-1])), self.task.num_classes)
        clicks = (*self.clicks, click)
        index = len(self._records)
        with self.state.lock:
            strategy = self.state.strategy
            report: StepReport | None = None
            update_version: int | None = None
            snapshot: StateSnapshot | None = None
            update_s = snapshot_s = 0.0
            logits: torch.Tensor | None = None
            previous_graph = self.state.take_graph(self.session_id, len(clicks) - 1)
            try:
                if self.adapt and strategy.updates_on_click(index):
                    if self.config.undo_depth > 0:
                        start = time.perf_counter()
                        snapshot = self.state.snapshot()
                        snapshot_s = time.perf_counter() - start
                    event = ClickEvent(
                        image=image,
                        clicks=clicks,
                        previous_logits=self._records[-1].logits if self._records else None,
                        forward=self._forward,
                        inputs=self._inputs,
                        task=self.task,
                        image_id=self.image_id,
                        previous_graph=previous_graph,
                    )
                    previous_graph = None
                    start = time.perf_counter()
                    report = strategy.after_click(event)
                    event.previous_graph = None  # in case the strategy did not use it
                    if report is not None and report.updated:
                        update_version = self.state.record_update("click", report, self.image_id)
                    update_s = time.perf_counter() - start
                    if update_version is None:
                        snapshot = None  # nothing to undo; the strategy's no-grad forward is the display
                        logits = event.computed_current_logits
                del previous_graph  # not needed any more: free its activations before the next forward
                start = time.perf_counter()
                if logits is None:
                    if self._keeps_graph(strategy, index + 1):
                        graph_logits = self._forward(clicks, grad=True)
                        self.state.keep_graph(self.session_id, graph_logits, len(clicks))
                        logits = graph_logits.detach()
                    else:
                        logits = self._forward(clicks)
                forward_s = time.perf_counter() - start
            except BaseException as error:  # a failed update (or display) must not leave half-learnt weights
                self._roll_back(snapshot, error)
                raise
            version = self.state.version
        prediction = _prediction(logits)
        self._records.append(
            _ClickRecord(
                click=click,
                logits=logits,
                prediction=prediction,
                version=version,
                timing=StepTiming(forward_s=forward_s, update_s=update_s, snapshot_s=snapshot_s),
                report=report,
                update_version=update_version,
                snapshot=snapshot,
            )
        )
        self._trim_snapshots()
        return prediction.copy()

    def _keeps_graph(self, strategy: AdaptationStrategy, next_click_index: int) -> bool:
        """Whether the displayed forward should keep its graph for the update at the next click."""
        return (
            self.adapt
            and self.config.reuse_displayed_forward
            and strategy.updates_on_click(next_click_index)
            and strategy.backpropagates_through_previous_forward(next_click_index)
        )

    def _roll_back(self, snapshot: StateSnapshot | None, error: BaseException) -> None:
        """Undo a failed update (strategy or listener error) before the error propagates."""
        if snapshot is None:
            return
        try:
            self.state.restore(snapshot)
        except Exception as restore_error:  # weights load before listeners run; one may refuse again
            error.add_note(f"while rolling the update back: {restore_error!r}")

    def _trim_snapshots(self) -> None:
        depth = self.config.undo_depth
        for record in self._records[: max(len(self._records) - depth, 0)]:
            record.snapshot = None

    def undo(self) -> np.ndarray | None:
        """Remove the last click, and its weight update if no other update came after it.

        If the shared model's version is still the one that click's update produced, weights and strategy
        state go back bit for bit to before that update (the version counter still moves forward, as for
        every change). Otherwise (another session updated the model since, or the snapshot is beyond
        ``undo_depth``) the click is removed and the weights are kept. :attr:`last_undo` says which.

        Returns:
            The prediction for the remaining clicks (a copy), or ``None`` when no click is left.

        Raises:
            ValueError: Without an open image, after ``finish``, or when there is no click to undo.
        """
        self._require_open()
        if not self._records:
            raise ValueError("nothing to undo: the image has no click")
        with self.state.lock:
            self.state.drop_graph(self.session_id)
            record = self._records.pop()
            restored = False
            if record.update_version is None:
                reason = "the click did not change the weights"
            elif record.snapshot is None:
                reason = f"the click's update is beyond the undo depth ({self.config.undo_depth}); weights kept"
            elif self.state.version != record.update_version:
                reason = (
                    f"the model changed after this click's update (version {record.update_version} → "
                    f"{self.state.version}); weights kept"
                )
            else:
                new_version = self.state.restore(record.snapshot)
                restored = True
                reason = "weights and strategy state restored to before the click's update"
                for earlier in reversed(self._records):  # those weights are again the ones it produced
                    if earlier.update_version is not None:
                        if earlier.update_version == record.snapshot.version:
                            earlier.update_version = new_version
                        break
            self.last_undo = UndoOutcome(click=record.click, restored_weights=restored, reason=reason)
            if not self._records:
                return None
            previous = self._records[-1]
            if restored and record.snapshot is not None:
                unchanged = record.snapshot.version == previous.version
            else:
                unchanged = self.state.version == previous.version
            if not unchanged:
                start = time.perf_counter()
                logits = self._forward(self.clicks)
                previous.logits = logits
                previous.prediction = _prediction(logits)
                previous.version = self.state.version
                previous.timing = StepTiming(
                    time.perf_counter() - start, previous.timing.update_s, previous.timing.snapshot_s
                )
            return previous.prediction.copy()

    def reset(self) -> None:
        """Drop every click of the open image; the weights are untouched.

        Raises:
            ValueError: Without an open image, or after ``finish``.
        """
        self._require_open()
        self._records = []
        self.state.drop_graph(self.session_id)
        self.last_undo = None

    def finish(self, final_mask: np.ndarray | None = None) -> np.ndarray:
        """Accept the image's final mask, run the strategy's ``after_image`` with it as pseudo-label, and
        announce the finished image to the model's finish listeners (the safety layer, an episodic reset…).

        Args:
            final_mask: The mask the user accepted, ``(H, W)`` of class indices, when it is not the latest
                prediction (edited with another tool, or the reference label of a labelled image replayed
                for rehearsal); ``None`` = the latest prediction.

        Returns:
            The final mask ``(H, W)`` int64 (a copy).

        Raises:
            ValueError: Without an open image, with no click, when already finished, or for a ``final_mask``
                of another shape or with classes outside the task (state unchanged).
        """
        image = self._require_open()
        if not self._records:
            raise ValueError(f"cannot finish image {self.image_id!r}: it has no click yet")
        last = self._records[-1]
        accepted = last.prediction if final_mask is None else self._accepted_mask(final_mask)
        report: StepReport | None = None
        update_s = snapshot_s = 0.0
        self.state.drop_graph(self.session_id)  # no click follows: free the graph's activations first
        with self.state.lock:
            strategy = self.state.strategy
            if self.adapt and strategy.updates_after_image():
                snapshot = None
                if self.config.undo_depth > 0:
                    start = time.perf_counter()
                    snapshot = self.state.snapshot()
                    snapshot_s = time.perf_counter() - start
                event = ImageEvent(
                    image=image,
                    clicks=self.clicks,
                    final_mask=torch.from_numpy(accepted.copy()).to(self.state.device),
                    final_logits=last.logits,
                    forward=self._forward,
                    inputs=self._inputs,
                    task=self.task,
                    image_id=self.image_id,
                )
                start = time.perf_counter()
                try:
                    report = strategy.after_image(event)
                    if report is not None and report.updated:
                        self.state.record_update("image", report, self.image_id)
                except BaseException as error:
                    self._roll_back(snapshot, error)
                    raise
                update_s = time.perf_counter() - start
        for record in self._records:
            record.snapshot = None
        self._finished = True
        self.final_mask = accepted
        self.finish_report = report
        self.finish_timing = StepTiming(forward_s=0.0, update_s=update_s, snapshot_s=snapshot_s)
        self.state.image_finished(
            FinishedImage(
                image=image,
                clicks=self.clicks,
                predictions=(*self.predictions[:-1], accepted),
                image_id=self.image_id,
                click_sigma=self.config.click_sigma,
                first_version=self._records[0].version,
                report=report,
            )
        )
        return accepted.copy()

    def _accepted_mask(self, final_mask: np.ndarray) -> np.ndarray:
        """A caller's final mask checked against the open image and the task (read-only int64 copy)."""
        mask = np.asarray(final_mask)
        shape = self.image_shape
        if mask.shape != shape:
            raise ValueError(f"final_mask has shape {mask.shape}, the image {self.image_id!r} is {shape}")
        if mask.dtype.kind not in "iub":
            raise ValueError(f"final_mask must hold integer class indices, got dtype {mask.dtype}")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= self.task.num_classes):
            raise ValueError(
                f"final_mask holds classes {int(mask.min())}..{int(mask.max())}; task {self.task.name!r} has "
                f"classes 0..{self.task.num_classes - 1}"
            )
        return _read_only(mask.astype(np.int64, copy=True))
