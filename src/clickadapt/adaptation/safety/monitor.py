"""Safe continual adaptation: an update guard, bounded snapshots, a drift monitor with rollback, an anchor.

A model that learns from its own refined outputs can accumulate errors over a long stream. This module
hangs a safety layer on the shared :class:`~clickadapt.adaptation.model_state.ModelState` without touching
the strategies, so it works with every updating strategy::

    state = ModelState(network, task, make_strategy("oaims", task))
    safety = attach_safety(state)                  # SafetyConfig() defaults: guard + monitor, no anchor
    session = InteractiveSession(state)
    ...                                            # set_image, add_click, …
    final_mask = session.finish()                  # the finished image reaches the safety layer's listeners
    safety.events                                  # [SafetyEvent(kind, image_id, reason, version, …)]

Each part below is a listener of the model state — of its weight updates or of its finished images —
composed by :func:`attach_safety`; the session announces every finished image to the model state, so no
caller can finish an image around them.

What it does:

- **Update guard** (an update listener, so it sees every weight change of every session): an update
  whose loss is not finite, whose weights are not finite, or whose step ‖Δθ‖ is abnormally large —
  relative to ‖θ‖, or to the running median of recent steps of the same kind — is undone at once: the
  weights *and* the strategy's state (Adam moments, generators) go back bit for bit to the last accepted
  state, which the guard keeps in a preallocated buffer (one in-place copy per accepted update). The
  session carries on with the restored weights; nothing is raised at the user.
- **Snapshots** at every finished image, in a bounded history: the last ``recent_snapshots`` images
  densely, plus one every ``sparse_snapshot_every`` images for the last ``sparse_snapshots`` of those,
  so that a rollback can reach back before a slow drift began. The weights the monitor was attached
  with (the source model) are pinned and always a candidate.
- **Drift monitor** on signals that need no ground truth, computed from each finished session:
  the agreement (Dice) between the first-click prediction and the final mask the user accepted, how
  many clicks it took until the prediction agreed with the final mask, and the fraction of the user's
  later clicks the first-click prediction already agreed with. The decision statistic is the first-click
  agreement, compared over a sliding window of ``window`` images either with the *source model on the
  same images* (``reference="source"``, default: one extra forward per image, and the difficulty of a
  new domain cancels out) or with the first ``window`` images after attaching (``reference="window"``).
  When it worsens by more than ``max_drop``, the candidates (source model and the history's good
  snapshots) are replayed on the window's images with their first clicks and scored against the
  accepted masks; the best one is restored if it beats the current weights by ``min_improvement``
  (a ``rollback`` event), otherwise a ``drift_unresolved`` event is recorded and nothing changes.
- **Anchor** (off by default, see ``bench/results/long_stream.md``): after each accepted update,
  θ ← θ − λ(θ − θ_source), an exponential pull towards the source weights that needs no change to the
  update losses.
- **Source sentinel** (off unless labelled source images are given): the drift monitor sees only the
  stream, so it cannot notice that adaptation erodes the source domain (forgetting). Every
  ``sentinel.every`` finished images a simulated user segments a few labelled *source* images (e.g. a
  sample of the training set the vendor ships with the model) with the live weights, frozen; if their
  Dice at ``sentinel.budget`` clicks is more than ``sentinel.max_drop`` below the source model's, the
  weights are pulled back along the straight line to the source weights, θ ← θ_src + α(θ − θ_src), with the
  largest α of ``sentinel.blends`` that brings the sentinel back within the limit (a ``sentinel_pullback``
  event; interpolating adapted and source weights keeps much of the adaptation, cf. WiSE-FT).
- **Source rehearsal** (off unless labelled source images are given): after every ``rehearsal.every``
  finished images, ``rehearsal.images`` labelled source images are replayed through the strategy's own
  image update, as if a user had segmented them (one simulated first click) and accepted their reference
  label: experience replay, the classic remedy for forgetting in continual learning, that needs no change
  to any strategy. These updates pass the guard and the anchor like any other.

The web server persists versions itself; the snapshots here live in memory.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import nn

from clickadapt.adaptation.model_state import (
    FinishedImage,
    FinishListener,
    ModelState,
    StateSnapshot,
    UpdateEvent,
    UpdateListener,
)
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA, model_input
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.evaluation.metrics import mean_region_dice
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)

SafetyEventKind = Literal["update_rejected", "rollback", "drift_unresolved", "sentinel_pullback"]
SAFETY_EVENT_KINDS: tuple[SafetyEventKind, ...] = (
    "update_rejected",
    "rollback",
    "drift_unresolved",
    "sentinel_pullback",
)


class SentinelConfig(BaseModel):
    """Settings of the source sentinel (see the module docstring).

    Attributes:
        every: Check after every n-th finished image.
        budget: Clicks of the simulated user on each sentinel image; the score is the Dice after the last.
        max_drop: Largest tolerated drop of the sentinel score below the source model's (Dice, 0–1).
        blends: Candidate α of θ_src + α(θ − θ_src), tried from the first; the first within the limit is used
            (0 = back to the source weights, always within it).
        user: Simulated user.
        seed: Seed of the simulated user (combined with each sentinel image's index).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: PositiveInt = 10
    budget: PositiveInt = 5
    max_drop: float = Field(default=0.005, ge=0.0, le=1.0)
    blends: tuple[float, ...] = (0.75, 0.5, 0.25, 0.0)
    user: str = "oaims"
    seed: int = 0


class RehearsalConfig(BaseModel):
    """Settings of the source rehearsal (see the module docstring).

    Attributes:
        every: Rehearse after every n-th finished image.
        images: Labelled source images replayed each time (taken in turn from a seeded shuffle).
        user: Simulated user who places the first click on each rehearsed image.
        seed: Seed of the shuffle and of the simulated user.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: PositiveInt = 1
    images: PositiveInt = 1
    user: str = "oaims"
    seed: int = 0


class SafetyConfig(BaseModel):
    """Settings of the safety layer (defaults are the ones the application uses).

    Attributes:
        guard: Check every weight update and undo the abnormal ones.
        max_relative_step: Reject an update whose step ‖Δθ‖ exceeds this fraction of ‖θ‖. Adam moves each
            weight by about the learning rate per step, so normal online steps are 1e-4–1e-2 of ‖θ‖.
        max_step_over_median: Reject an update whose ‖Δθ‖ exceeds this multiple of the median of the last
            accepted steps of the same kind (click or image updates).
        step_median_of: How many recent accepted steps of each kind the median is taken over.
        step_median_after: Accepted steps of a kind needed before the median test applies.
        recent_snapshots: Snapshots kept of the latest finished images (dense part of the history).
        sparse_snapshot_every: Also keep the snapshot of every n-th finished image …
        sparse_snapshots: … the latest this many of them (sparse part of the history, reaching back
            ``sparse_snapshot_every × sparse_snapshots`` images).
        monitor: Watch the ground-truth-free signals of finished images and roll back on drift.
        reference: ``"source"``: compare the first-click agreement with the accepted mask to that of the
            source model on the same images (one extra forward per image); ``"window"``: compare with the
            first ``window`` images after attaching (no extra forward; a harder domain also looks like
            drift).
        window: Images in the sliding window (and in the reference window).
        min_images: Images the window needs before the monitor may fire (also after a rollback).
        max_drop: Fire when the window's mean first-click agreement is this much (Dice, 0–1) below the
            reference.
        min_improvement: A rollback candidate must beat the current weights by this much (mean Dice of
            first-click predictions against the window's accepted masks) to be restored.
        agreement_threshold: Dice with the final mask from which a prediction counts as final (for the
            clicks-to-final signal).
        anchor_rate: λ of the anchor θ ← θ − λ(θ − θ_source) applied after each accepted update; 0 = off.
        sentinel: Source-sentinel settings; used only when labelled source images are given to
            :func:`attach_safety`.
        rehearsal: Source-rehearsal settings; used only when labelled rehearsal images are given to
            :func:`attach_safety`.
        signal_history: Finished images whose signals are kept for reports (oldest dropped first).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    guard: bool = True
    max_relative_step: PositiveFloat = 0.05
    max_step_over_median: PositiveFloat = 20.0
    step_median_of: PositiveInt = 50
    step_median_after: PositiveInt = 10
    recent_snapshots: int = Field(default=4, ge=1)
    sparse_snapshot_every: PositiveInt = 10
    sparse_snapshots: int = Field(default=6, ge=0)
    monitor: bool = True
    reference: Literal["source", "window"] = "source"
    window: int = Field(default=10, ge=2)
    min_images: int = Field(default=5, ge=1)
    max_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    min_improvement: float = Field(default=0.01, ge=0.0, le=1.0)
    agreement_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    anchor_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    sentinel: SentinelConfig = SentinelConfig()
    rehearsal: RehearsalConfig = RehearsalConfig()
    signal_history: PositiveInt = 10_000


@dataclass(frozen=True)
class SafetyEvent:
    """Something the safety layer did, for the server and reports.

    Attributes:
        kind: ``update_rejected`` (the guard undid an update), ``rollback`` (the monitor restored a
            snapshot), ``drift_unresolved`` (drift detected but no snapshot was better; nothing changed) or
            ``sentinel_pullback`` (the source sentinel pulled the weights back towards the source).
        image_id: The image the update learnt from, or the finished image that triggered the monitor.
        reason: A sentence saying why, with the numbers.
        version: The model version after the event.
        image_index: 0-based count of finished images (since attaching) when it happened.
        restored_version: For ``rollback``: the version of the restored snapshot (the source model's
            version when it rolled back to the source).
    """

    kind: SafetyEventKind
    image_id: str
    reason: str
    version: int
    image_index: int
    restored_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass(frozen=True)
class ImageSignals:
    """The ground-truth-free signals of one finished image.

    Attributes:
        image_index: 0-based count of finished images since attaching.
        image_id: The session's image id.
        version: Model version that produced the first-click prediction.
        clicks: Clicks the user made.
        first_final_dice: Mean over the task's regions of the Dice between the first-click prediction
            and the final (accepted) mask.
        clicks_to_final: First click whose prediction reached ``agreement_threshold`` Dice with the final
            mask.
        first_click_agreement: Fraction of the clicks after the first at whose pixel the first-click
            prediction already had the clicked class (NaN with a single click).
        source_first_final_dice: The same as ``first_final_dice`` for the source model with the same first
            click (``None`` unless ``reference="source"``).
    """

    image_index: int
    image_id: str
    version: int
    clicks: int
    first_final_dice: float
    clicks_to_final: int
    first_click_agreement: float
    source_first_final_dice: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return asdict(self)


@dataclass
class SnapshotRecord:
    """One snapshot of the history.

    Attributes:
        image_index: Finished images (since attaching) when it was taken; -1 for the pinned source.
        image_id: The image finished just before it ("" for the source).
        snapshot: Weights and strategy state.
        good: Whether the monitor saw no drift when it was taken (only good ones are rollback candidates).
    """

    image_index: int
    image_id: str
    snapshot: StateSnapshot
    good: bool = True

    @property
    def version(self) -> int:
        """The model version of the snapshot."""
        return self.snapshot.version


@dataclass(frozen=True)
class _ReplayItem:
    image: torch.Tensor  # (C, H, W) on the model's device
    first_click: Click
    final_mask: np.ndarray  # (H, W) int64
    click_sigma: float


RollbackHook = Callable[[SafetyEvent, StateSnapshot, StateSnapshot], None]
"""Called after a rollback with the event, the weights before it and the restored snapshot (benchmarks)."""


def image_signals(
    predictions: Sequence[np.ndarray],
    clicks: Sequence[Click],
    task: TaskSpec,
    agreement_threshold: float = 0.9,
) -> tuple[float, int, float]:
    """First-click agreement with the final mask, clicks until final, and clicks the first guess agreed with.

    Args:
        predictions: The prediction after each click; the last one is the final mask.
        clicks: The clicks, in order (as many as predictions).
        task: The task (regions).
        agreement_threshold: Dice with the final mask from which a prediction counts as final.

    Returns:
        ``(first_final_dice, clicks_to_final, first_click_agreement)`` as in :class:`ImageSignals`.

    Raises:
        ValueError: Without predictions, or when clicks and predictions differ in number.
    """
    if not predictions:
        raise ValueError("the session has no prediction; finish an image with at least one click")
    if len(predictions) != len(clicks):
        raise ValueError(f"{len(predictions)} predictions but {len(clicks)} clicks")
    final = predictions[-1]
    first = predictions[0]
    first_final = mean_region_dice(first, final, task)
    clicks_to_final = next(
        index
        for index, prediction in enumerate(predictions, start=1)
        if mean_region_dice(prediction, final, task) >= agreement_threshold
    )
    later = clicks[1:]
    agreement = float(np.mean([first[c.row, c.col] == c.label for c in later])) if later else math.nan
    return first_final, clicks_to_final, agreement


def _copy_into(target: Any, source: Any) -> Any:
    """Copy ``source`` (nested dicts/lists/tuples of tensors and values) into ``target``'s tensors in place.

    Tensors of matching shape, dtype and device are reused (no allocation); anything else is cloned.
    Returns the new ``target``.
    """
    if isinstance(source, torch.Tensor):
        if (
            isinstance(target, torch.Tensor)
            and target.shape == source.shape
            and target.dtype == source.dtype
            and target.device == source.device
        ):
            target.copy_(source)
            return target
        return source.detach().clone()
    if isinstance(source, dict):
        old = target if isinstance(target, dict) else {}
        return {key: _copy_into(old.get(key), value) for key, value in source.items()}
    if isinstance(source, list | tuple):
        previous = list(target) if isinstance(target, list | tuple) and len(target) == len(source) else []
        items = [_copy_into(previous[i] if previous else None, value) for i, value in enumerate(source)]
        return items if isinstance(source, list) else tuple(items)
    return copy.deepcopy(source)


class SafetyMonitor:
    """The safety layer attached to one :class:`ModelState`: what its parts share, and what they did.

    Make it with :func:`attach_safety`, which composes the parts, each a listener of the model state:
    :class:`UpdateGuard` and :class:`SourceAnchor` listen to weight updates; :class:`DriftMonitor`,
    :class:`SourceRehearsal`, :class:`SourceSentinel` and :class:`SnapshotHistory` to finished images. Since
    the model state announces every finished image (``InteractiveSession.finish``), no caller can finish an
    image around them.

    Args:
        state: The shared model state to protect.
        config: Settings (read at each use, so a changed config takes effect at once).

    Attributes:
        events: Everything the layer did, in order.
        sentinel_checks: Every sentinel check: image index, live score, source score, α applied (or ``None``).
        signals: The signals of the latest finished images.
        source: The pinned snapshot of the weights the layer was attached with (the source model).
        parts: The listeners the layer is made of, in the order they were attached.
    """

    def __init__(self, state: ModelState, config: SafetyConfig | None = None) -> None:
        self.state = state
        self.config = config or SafetyConfig()
        self.events: list[SafetyEvent] = []
        self.sentinel_checks: list[dict[str, Any]] = []
        self.signals: deque[ImageSignals] = deque(maxlen=self.config.signal_history)
        self.parts: list[SafetyPart] = []
        self.image_index = 0
        self.replaying = False
        self._rollback_hooks: list[RollbackHook] = []
        with state.lock:
            self.source = SnapshotRecord(image_index=-1, image_id="", snapshot=state.snapshot(), good=True)
            self.source_parameters = {
                name: self.source.snapshot.model_state[name] for name, _ in state.model.named_parameters()
            }
            self._probe: nn.Module = copy.deepcopy(state.model).eval()
            self._probe.requires_grad_(False)
            self._probe_version: int | None = self.source.version
        self._attached = True

    # ------------------------------------------------------------------ composition
    def attach(self, part: SafetyPart) -> None:
        """Add a part: its update and finish listeners are registered on the model state (in that order)."""
        with self.state.lock:
            self.parts.append(part)
            for listener in part.update_listeners():
                self.state.add_listener(listener)
            for finish_listener in part.finish_listeners():
                self.state.add_finish_listener(finish_listener)

    def part(self, kind: type[PartT]) -> PartT | None:
        """The attached part of a kind, if any."""
        return next((part for part in self.parts if isinstance(part, kind)), None)

    def detach(self) -> None:
        """Stop guarding (every listener is removed); the history and events stay readable."""
        if not self._attached:
            return
        with self.state.lock:
            for part in self.parts:
                for listener in part.update_listeners():
                    self.state.remove_listener(listener)
                for finish_listener in part.finish_listeners():
                    self.state.remove_finish_listener(finish_listener)
        self._attached = False

    # ------------------------------------------------------------------ public API
    @property
    def history(self) -> list[SnapshotRecord]:
        """The pinned source snapshot, then the kept snapshots of finished images, oldest first."""
        snapshots = self.part(SnapshotHistory)
        return [self.source, *(snapshots.records() if snapshots is not None else [])]

    @property
    def rehearsing(self) -> bool:
        """Whether the source rehearsal is on (labelled rehearsal images were given)."""
        return self.part(SourceRehearsal) is not None

    @property
    def rehearsals(self) -> int:
        """Rehearsed source images so far."""
        rehearsal = self.part(SourceRehearsal)
        return rehearsal.rehearsed if rehearsal is not None else 0

    @property
    def sentinel_source_score(self) -> float | None:
        """The source model's sentinel score (``None`` without a sentinel)."""
        sentinel = self.part(SourceSentinel)
        return sentinel.source_score if sentinel is not None else None

    @property
    def images_seen(self) -> int:
        """Finished images since attaching."""
        return self.image_index

    def add_rollback_hook(self, hook: RollbackHook) -> None:
        """Call ``hook(event, before, restored)`` after each rollback (e.g. a benchmark judging it)."""
        self._rollback_hooks.append(hook)

    def counts(self) -> dict[str, int]:
        """Number of events of each kind."""
        return {kind: sum(event.kind == kind for event in self.events) for kind in SAFETY_EVENT_KINDS}

    def record_image(
        self,
        image: np.ndarray | torch.Tensor,
        clicks: Sequence[Click],
        predictions: Sequence[np.ndarray],
        image_id: str = "",
        click_sigma: float = DEFAULT_CLICK_SIGMA,
        version: int | None = None,
    ) -> list[SafetyEvent]:
        """Announce a finished image given by its parts on the model state (what a session's ``finish`` does).

        Every finish listener of the state hears it, this layer's parts included.

        Args:
            image: The image ``(C, H, W)`` as the network saw it.
            clicks: The user's clicks, in order.
            predictions: The prediction after each click; the last one is the accepted final mask.
            image_id: Identifier for events.
            click_sigma: σ of the click maps the network expects.
            version: Model version that produced the first prediction (default: the current one).

        Returns:
            The events the layer recorded meanwhile.

        Raises:
            ValueError: For mismatching shapes or counts, or no click.
        """
        tensor = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image)
        tensor = tensor.to(device=self.state.device, dtype=torch.float32)
        task = self.state.task
        if tensor.ndim != 3 or tensor.shape[0] != task.image_channels:
            raise ValueError(
                f"image must have shape (C, H, W) with C = {task.image_channels} for task {task.name!r}, "
                f"got {tuple(tensor.shape)}"
            )
        shape = (int(tensor.shape[1]), int(tensor.shape[2]))
        for index, prediction in enumerate(predictions):
            if np.shape(prediction) != shape:
                raise ValueError(f"prediction {index} has shape {np.shape(prediction)}, the image is {shape}")
        if not predictions:
            raise ValueError("no prediction to record; a finished image has at least one click")
        if len(predictions) != len(clicks):
            raise ValueError(f"{len(predictions)} predictions but {len(clicks)} clicks")
        before = len(self.events)
        finished = FinishedImage(
            image=tensor,
            clicks=tuple(clicks),
            predictions=tuple(np.asarray(prediction, dtype=np.int64) for prediction in predictions),
            image_id=image_id,
            click_sigma=click_sigma,
            first_version=version,
        )
        self.state.image_finished(finished)
        return self.events[before:]

    # ------------------------------------------------------------------ shared by the parts
    def record(self, event: SafetyEvent) -> SafetyEvent:
        """Keep and log an event."""
        self.events.append(event)
        logger.warning("safety: %s", event.reason)
        return event

    def restore(self, snapshot: StateSnapshot) -> None:
        """Put a snapshot's weights back (and its strategy state when it is the current strategy's)."""
        if snapshot.strategy == self.state.strategy.name:
            self.state.restore(snapshot)
        else:
            self.state.load_weights(snapshot.model_state)

    def rolled_back(self, event: SafetyEvent, before: StateSnapshot, restored: StateSnapshot) -> None:
        """Tell the rollback hooks."""
        for hook in self._rollback_hooks:
            hook(event, before, restored)

    def load_probe(self, record: SnapshotRecord | None) -> None:
        """Put ``record``'s weights (``None`` = the live weights) into the probe network."""
        if record is None:
            with torch.no_grad():
                self._probe.load_state_dict(self.state.model.state_dict())
            self._probe_version = None
        elif self._probe_version != record.version:
            with torch.no_grad():
                self._probe.load_state_dict(record.snapshot.model_state)
            self._probe_version = record.version

    def probe_prediction(self, image: torch.Tensor, clicks: Sequence[Click], sigma: float) -> np.ndarray:
        """The class map ``(H, W)`` of the probe network (whatever weights it holds) on ``image`` with ``clicks``."""
        inputs = model_input(image, clicks, self.state.task.num_classes, sigma).unsqueeze(0)
        with torch.inference_mode():
            logits = self._probe(inputs)
        prediction: np.ndarray = logits.argmax(dim=1)[0].cpu().numpy().astype(np.int64)
        return prediction

    def first_click_prediction(
        self, record: SnapshotRecord | None, image: torch.Tensor, click: Click, sigma: float
    ) -> np.ndarray:
        """The prediction of ``record``'s weights (``None`` = live) with one click."""
        self.load_probe(record)
        return self.probe_prediction(image, [click], sigma)


class SafetyPart:
    """A part of the safety layer: listeners of the model state that share a :class:`SafetyMonitor`."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        self.monitor = monitor

    def update_listeners(self) -> list[UpdateListener]:
        """Listeners of weight updates, in order."""
        return []

    def finish_listeners(self) -> list[FinishListener]:
        """Listeners of finished images, in order."""
        return []


PartT = TypeVar("PartT", bound=SafetyPart)


class AcceptedWeights(SafetyPart):
    """The last accepted weights and strategy state, kept in preallocated buffers (one in-place copy per
    accepted update): what :class:`UpdateGuard` restores. Its listener remembers every update that is still
    current after the guard and the anchor, and every restore or load (undo, rollback)."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        super().__init__(monitor)
        self.model_state: dict[str, torch.Tensor] = {}
        self.strategy_state: dict[str, Any] = {}
        self.strategy = ""
        self.version = -1
        self.remember()

    def update_listeners(self) -> list[UpdateListener]:
        return [self.accept]

    def accept(self, event: UpdateEvent) -> None:
        """Remember the weights of a current update as accepted."""
        if event.version == self.monitor.state.version:
            self.remember()

    def remember(self) -> None:
        """Copy the live weights and strategy state into the buffers."""
        state = self.monitor.state
        with torch.no_grad():
            self.model_state = _copy_into(self.model_state, state.model.state_dict())
            self.strategy_state = _copy_into(self.strategy_state, state.strategy.state_dict())
        self.strategy = state.strategy.name
        self.version = state.version

    def snapshot(self) -> StateSnapshot:
        """The accepted state as a snapshot (its tensors are the buffers themselves)."""
        return StateSnapshot(self.version, self.strategy, self.model_state, self.strategy_state)


class UpdateGuard(SafetyPart):
    """Undo an update whose loss or weights are not finite or whose step is abnormally large (see the module
    docstring); the last accepted weights and strategy state are kept in preallocated buffers.

    Its listener :meth:`check` comes first; the accepted state is :class:`AcceptedWeights`, attached after
    the anchor. A listener acts only on an update that is still current (``event.version ==
    state.version``), so an update the guard undid reaches nobody after it.
    """

    def __init__(self, monitor: SafetyMonitor, accepted: AcceptedWeights) -> None:
        super().__init__(monitor)
        self.accepted = accepted
        self._step_norms: dict[str, deque[float]] = {}

    def update_listeners(self) -> list[UpdateListener]:
        return [self.check]

    def check(self, event: UpdateEvent) -> None:
        """Undo ``event``'s update if it is abnormal (an ``update_rejected`` event)."""
        if event.kind in ("restore", "load") or event.version != self.monitor.state.version:
            return
        reason = self._abnormal(event)
        if reason is not None:
            self._reject(event, reason)

    def _abnormal(self, event: UpdateEvent) -> str | None:
        """Why the update is abnormal, or ``None`` (and the step is recorded) if it is acceptable."""
        config = self.monitor.config
        bad_losses = {name: value for name, value in event.losses.items() if not math.isfinite(value)}
        if bad_losses:
            return f"loss not finite ({', '.join(f'{name}={value}' for name, value in bad_losses.items())})"
        step, norm = self._step_norm()
        if not (math.isfinite(step) and math.isfinite(norm)):
            return "weights not finite after the update"
        relative = step / max(norm, 1e-12)
        if relative > config.max_relative_step:
            return f"step ‖Δθ‖/‖θ‖ = {relative:.3g} above the limit {config.max_relative_step:g}"
        recent = self._step_norms.setdefault(event.kind, deque(maxlen=config.step_median_of))
        if len(recent) >= config.step_median_after:
            median = float(np.median(recent))
            if step > config.max_step_over_median * median:
                return (
                    f"step ‖Δθ‖ = {step:.3g} is {step / median:.1f}× the median {median:.3g} of the last "
                    f"{len(recent)} {event.kind} updates (limit {config.max_step_over_median:g}×)"
                )
        recent.append(step)
        return None

    def _step_norm(self) -> tuple[float, float]:
        """‖θ − θ_accepted‖ and ‖θ_accepted‖ over the floating-point entries of the state dict."""
        step_sq = 0.0
        norm_sq = 0.0
        with torch.no_grad():
            for name, tensor in self.monitor.state.model.state_dict().items():
                if not tensor.is_floating_point():
                    continue
                accepted = self.accepted.model_state[name]
                step_sq += float(torch.linalg.vector_norm(tensor - accepted)) ** 2
                norm_sq += float(torch.linalg.vector_norm(accepted)) ** 2
        return math.sqrt(step_sq), math.sqrt(norm_sq)

    def _reject(self, event: UpdateEvent, reason: str) -> None:
        state = self.monitor.state
        snapshot = self.accepted.snapshot()
        if snapshot.strategy == state.strategy.name:
            state.restore(snapshot)
            restored = "weights and strategy state restored"
        else:  # the strategy was switched since; its own state cannot come from the buffer
            state.load_weights(snapshot.model_state)
            restored = "weights restored (strategy switched since; its state kept)"
        self.monitor.record(
            SafetyEvent(
                kind="update_rejected",
                image_id=event.image_id,
                reason=f"{event.kind} update to version {event.version} rejected: {reason}; {restored}",
                version=state.version,
                image_index=self.monitor.image_index,
                restored_version=snapshot.version,
            )
        )


class SourceAnchor(SafetyPart):
    """After each accepted update, θ ← θ − λ(θ − θ_source) for every parameter (λ = ``anchor_rate``)."""

    def update_listeners(self) -> list[UpdateListener]:
        return [self.pull]

    def pull(self, event: UpdateEvent) -> None:
        """Pull the weights of a current click or image update towards the source weights."""
        state = self.monitor.state
        if event.kind in ("restore", "load") or event.version != state.version:
            return
        rate = self.monitor.config.anchor_rate
        with torch.no_grad():
            for name, parameter in state.model.named_parameters():
                parameter.lerp_(self.monitor.source_parameters[name], rate)


class DriftMonitor(SafetyPart):
    """The ground-truth-free signals of every finished image and, when ``config.monitor`` is on, the drift
    check over a sliding window with a rollback to the best candidate snapshot (see the module docstring)."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        super().__init__(monitor)
        config = monitor.config
        self._window: deque[float] = deque(maxlen=config.window)
        self._reference_values: list[float] = []
        self._replay: deque[_ReplayItem] = deque(maxlen=config.window)
        self.last_good = True

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Record the image's signals; on drift, replay the window and maybe roll back."""
        monitor = self.monitor
        if monitor.replaying:
            return
        config, task = monitor.config, monitor.state.task
        first_final, clicks_to_final, agreement = image_signals(
            finished.predictions, finished.clicks, task, config.agreement_threshold
        )
        final_mask = np.asarray(finished.final_mask, dtype=np.int64)
        image = finished.image.to(device=monitor.state.device, dtype=torch.float32)
        source_first_final: float | None = None
        if config.monitor and config.reference == "source":
            source_prediction = monitor.first_click_prediction(
                monitor.source, image, finished.clicks[0], finished.click_sigma
            )
            source_first_final = mean_region_dice(source_prediction, final_mask, task)
        signals = ImageSignals(
            image_index=monitor.image_index,
            image_id=finished.image_id,
            version=monitor.state.version if finished.first_version is None else finished.first_version,
            clicks=len(finished.clicks),
            first_final_dice=first_final,
            clicks_to_final=clicks_to_final,
            first_click_agreement=agreement,
            source_first_final_dice=source_first_final,
        )
        monitor.signals.append(signals)
        self.last_good = True
        if config.monitor:
            self._replay.append(
                _ReplayItem(image.detach().clone(), finished.clicks[0], final_mask.copy(), finished.click_sigma)
            )
            drift_reason = self._drift(signals)
            if drift_reason is not None:
                event = self._resolve_drift(drift_reason, finished.image_id)
                self.last_good = event.kind == "rollback"  # the restored weights, or drifting ones kept

    def _drift(self, signals: ImageSignals) -> str | None:
        """Update the window with this image; a sentence if it drifted beyond the threshold, else ``None``."""
        config = self.monitor.config
        if config.reference == "source":
            assert signals.source_first_final_dice is not None
            self._window.append(signals.first_final_dice - signals.source_first_final_dice)
            if len(self._window) < config.min_images:
                return None
            margin = float(np.mean(self._window))
            if margin >= -config.max_drop:
                return None
            return (
                f"first-click agreement with the accepted masks was {-margin:.3f} Dice below the source model's "
                f"over the last {len(self._window)} images (threshold {config.max_drop:g})"
            )
        if len(self._reference_values) < config.window:
            self._reference_values.append(signals.first_final_dice)
            return None
        self._window.append(signals.first_final_dice)
        if len(self._window) < config.min_images:
            return None
        reference = float(np.mean(self._reference_values))
        recent = float(np.mean(self._window))
        if recent >= reference - config.max_drop:
            return None
        return (
            f"first-click agreement with the accepted masks fell from {reference:.3f} (first "
            f"{len(self._reference_values)} images) to {recent:.3f} over the last {len(self._window)} images "
            f"(threshold {config.max_drop:g})"
        )

    def _resolve_drift(self, reason: str, image_id: str) -> SafetyEvent:
        """Replay the window on the candidates; restore the best if it beats the current weights."""
        monitor = self.monitor
        current = self._replay_score(None)
        candidates = [record for record in monitor.history if record.good]
        scored = [(self._replay_score(record), record) for record in candidates]
        best_score, best = max(scored, key=lambda item: (item[0], item[1].image_index))
        self._window.clear()
        summary = (
            f"{reason}; replaying the window's first clicks: current weights {current:.3f}, best candidate "
            f"{'source model' if best is monitor.source else f'snapshot after image {best.image_index}'} "
            f"(version {best.version}) {best_score:.3f}"
        )
        if best_score < current + monitor.config.min_improvement:
            return monitor.record(
                SafetyEvent(
                    kind="drift_unresolved",
                    image_id=image_id,
                    reason=f"{summary}; no candidate better by {monitor.config.min_improvement:g}, weights kept",
                    version=monitor.state.version,
                    image_index=monitor.image_index,
                )
            )
        before = monitor.state.snapshot()
        monitor.restore(best.snapshot)
        snapshots = monitor.part(SnapshotHistory)
        if snapshots is not None:  # the trajectory after the restored snapshot was the drifting one
            snapshots.mark_bad_after(best.image_index)
        event = monitor.record(
            SafetyEvent(
                kind="rollback",
                image_id=image_id,
                reason=f"{summary}; rolled back",
                version=monitor.state.version,
                image_index=monitor.image_index,
                restored_version=best.version,
            )
        )
        monitor.rolled_back(event, before, best.snapshot)
        return event

    def _replay_score(self, record: SnapshotRecord | None) -> float:
        """Mean Dice of the first-click predictions of ``record`` (``None`` = live weights) vs accepted masks."""
        monitor = self.monitor
        scores = [
            mean_region_dice(
                monitor.first_click_prediction(record, item.image, item.first_click, item.click_sigma),
                item.final_mask,
                monitor.state.task,
            )
            for item in self._replay
        ]
        return float(np.mean(scores)) if scores else math.nan


class SourceRehearsal(SafetyPart):
    """After every ``rehearsal.every`` finished images, replay ``rehearsal.images`` labelled source images
    through the strategy's own image update, as if a user had segmented them (one simulated first click)."""

    def __init__(self, monitor: SafetyMonitor, images: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(monitor)
        self.images = [_labelled_source_image(image, label, monitor.state, "rehearsal") for image, label in images]
        self._order = np.random.default_rng(monitor.config.rehearsal.seed).permutation(len(self.images))
        self.rehearsed = 0

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Rehearse when it is time (the rehearsed images themselves are not heard by the other parts)."""
        monitor = self.monitor
        if monitor.replaying or (monitor.image_index + 1) % monitor.config.rehearsal.every != 0:
            return
        config = monitor.config.rehearsal
        monitor.replaying = True
        try:
            for _ in range(config.images):
                index = int(self._order[self.rehearsed % len(self.images)])
                item = self.images[index]
                user = make_simulated_user(config.user, seed=config.seed * 1_000_003 + self.rehearsed)
                session = InteractiveSession(monitor.state, undo_depth=0, adapt=False)  # no click-time update
                session.set_image(item.image.cpu().numpy(), image_id=f"rehearsal:{index}")
                session.add_click(user.first_click(item.label))
                session.adapt = True  # only the image update: the reference label stands in for the user's mask
                session.finish(final_mask=item.label)
                self.rehearsed += 1
        finally:
            monitor.replaying = False


class SourceSentinel(SafetyPart):
    """Every ``sentinel.every`` finished images, score the live weights on labelled source images with a
    simulated user; when they forgot, pull them back towards the source weights (``sentinel_pullback``)."""

    def __init__(self, monitor: SafetyMonitor, images: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(monitor)
        self.images = [_labelled_source_image(image, label, monitor.state, "sentinel") for image, label in images]
        self._blends_made = 0
        self.source_score = self._score(monitor.source)

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Check the sentinel when it is time."""
        monitor = self.monitor
        if monitor.replaying or (monitor.image_index + 1) % monitor.config.sentinel.every != 0:
            return
        self._check(finished.image_id)

    def _score(self, record: SnapshotRecord | None) -> float:
        """Mean Dice after ``sentinel.budget`` simulated clicks on the sentinel images, weights frozen."""
        monitor = self.monitor
        config = monitor.config.sentinel
        scores = []
        monitor.load_probe(record)
        for index, item in enumerate(self.images):
            user = make_simulated_user(config.user, seed=config.seed * 1_000_003 + index)
            clicks = [user.first_click(item.label)]
            while True:
                prediction = monitor.probe_prediction(item.image, clicks, DEFAULT_CLICK_SIGMA)
                if len(clicks) >= config.budget:
                    break
                click = user.next_click(item.label, prediction)
                if click is None:
                    break
                clicks.append(click)
            scores.append(mean_region_dice(prediction, item.label, monitor.state.task))
        return float(np.mean(scores))

    def _blend(self, alpha: float) -> SnapshotRecord:
        """A transient record of θ_src + α(θ_live − θ_src) (buffers of the live weights)."""
        monitor = self.monitor
        live = monitor.state.model.state_dict()
        blended = {
            name: torch.lerp(monitor.source_parameters[name], tensor, alpha)
            if name in monitor.source_parameters
            else tensor
            for name, tensor in live.items()
        }
        self._blends_made += 1
        snapshot = StateSnapshot(-self._blends_made, monitor.state.strategy.name, blended, {})  # unique probe key
        return SnapshotRecord(monitor.image_index, "", snapshot, good=True)

    def _check(self, image_id: str) -> SafetyEvent | None:
        """Score the live weights on the sentinel; pull them back towards the source when they forgot."""
        monitor = self.monitor
        config = monitor.config.sentinel
        live = self._score(None)
        check: dict[str, Any] = {
            "image_index": monitor.image_index,
            "score": live,
            "source_score": self.source_score,
            "alpha": None,
        }
        monitor.sentinel_checks.append(check)
        limit = self.source_score - config.max_drop
        if live >= limit:
            return None
        tried = []
        alpha, score = 0.0, self.source_score
        chosen: SnapshotRecord | None = None
        for candidate in config.blends:
            record = self._blend(candidate) if candidate > 0 else None
            candidate_score = self._score(record) if record is not None else self.source_score
            tried.append(f"α={candidate:g}: {candidate_score:.3f}")
            if candidate_score >= limit:
                alpha, score, chosen = candidate, candidate_score, record
                break
        if chosen is None:  # α = 0: back to the source weights
            chosen = self._blend(0.0)
        monitor.state.load_weights(chosen.snapshot.model_state)
        monitor.load_probe(None)
        check.update(alpha=alpha, blended_score=score)
        return monitor.record(
            SafetyEvent(
                kind="sentinel_pullback",
                image_id=image_id,
                reason=(
                    f"source sentinel Dice@{config.budget} {live:.3f} is {self.source_score - live:.3f} below "
                    f"the source model's {self.source_score:.3f} (limit {config.max_drop:g}); tried "
                    f"{', '.join(tried)}; weights set to θ_src + {alpha:g}·(θ − θ_src)"
                ),
                version=monitor.state.version,
                image_index=monitor.image_index,
            )
        )


class SnapshotHistory(SafetyPart):
    """A bounded history of snapshots taken at every finished image (the rollback candidates), and the count
    of finished images; attached last, so that it keeps the weights every other part left."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        super().__init__(monitor)
        config = monitor.config
        self._recent: deque[SnapshotRecord] = deque(maxlen=config.recent_snapshots)
        self._sparse: deque[SnapshotRecord] = deque(maxlen=max(config.sparse_snapshots, 1))

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def records(self) -> list[SnapshotRecord]:
        """The kept snapshots, oldest first (the pinned source is the monitor's)."""
        kept = {id(record): record for record in (*self._sparse, *self._recent)}
        return sorted(kept.values(), key=lambda record: record.image_index)

    def mark_bad_after(self, image_index: int) -> None:
        """Stop offering the snapshots taken after ``image_index`` (a drifting trajectory)."""
        for record in self.records():
            if record.image_index > image_index:
                record.good = False

    def image_finished(self, finished: FinishedImage) -> None:
        """Keep a snapshot of the weights after the image, then count it."""
        monitor = self.monitor
        if monitor.replaying:
            return
        drift = monitor.part(DriftMonitor)
        good = drift.last_good if drift is not None else True
        record = SnapshotRecord(monitor.image_index, finished.image_id, monitor.state.snapshot(), good)
        self._recent.append(record)
        config = monitor.config
        if config.sparse_snapshots > 0 and monitor.image_index % config.sparse_snapshot_every == 0:
            self._sparse.append(record)
        monitor.image_index += 1


@dataclass(frozen=True)
class _LabelledSourceImage:
    image: torch.Tensor
    label: np.ndarray


def _labelled_source_image(image: np.ndarray, label: np.ndarray, state: ModelState, role: str) -> _LabelledSourceImage:
    """Validate one labelled source image (``role``: sentinel or rehearsal) and put it on the model's device."""
    task = state.task
    pixels = np.asarray(image, dtype=np.float32)
    classes = np.asarray(label)
    if pixels.ndim != 3 or pixels.shape[0] != task.image_channels or classes.shape != pixels.shape[1:]:
        raise ValueError(
            f"{role} images must be (C, H, W) with C = {task.image_channels} and labels (H, W) of the same "
            f"size, got {pixels.shape} and {classes.shape}"
        )
    if not np.any(classes > 0):
        raise ValueError(f"a {role} label has no foreground: the simulated user would have nothing to click")
    if classes.min() < 0 or classes.max() >= task.num_classes:
        raise ValueError(
            f"a {role} label holds classes {classes.min()}..{classes.max()}; task {task.name!r} has classes "
            f"0..{task.num_classes - 1}"
        )
    if not np.isfinite(pixels).all():
        raise ValueError(f"a {role} image contains NaN or infinite values")
    return _LabelledSourceImage(torch.as_tensor(pixels, device=state.device), classes.astype(np.int64))


def attach_safety(
    state: ModelState,
    config: SafetyConfig | None = None,
    sentinel_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    rehearsal_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> SafetyMonitor:
    """Protect a shared model with the safety layer (one call; the server switches it on with this line).

    Composes the parts as listeners of ``state``, in this order: weight updates — :class:`UpdateGuard`,
    :class:`SourceAnchor` (when ``anchor_rate`` > 0), :class:`AcceptedWeights`; finished images —
    :class:`DriftMonitor`, :class:`SourceRehearsal` and :class:`SourceSentinel` (when labelled source images
    are given), :class:`SnapshotHistory`. Every ``session.finish()`` on ``state`` then reaches them.

    Args:
        state: The shared model state.
        config: Settings; ``None`` = :class:`SafetyConfig` defaults.
        sentinel_images: Labelled source-domain ``(image, label)`` pairs for the source sentinel (none = off).
        rehearsal_images: Labelled source-domain pairs for the source rehearsal (none = off). Keep them apart
            from the sentinel's, or the sentinel measures what was rehearsed.

    Returns:
        The monitor: read :attr:`SafetyMonitor.events`, ``signals``, ``history``; ``detach()`` to stop.

    Raises:
        ValueError: For a labelled image of the wrong shape, classes or values (nothing is attached then).
    """
    monitor = SafetyMonitor(state, config)
    config = monitor.config
    sentinel = SourceSentinel(monitor, sentinel_images) if sentinel_images else None
    rehearsal = SourceRehearsal(monitor, rehearsal_images) if rehearsal_images else None
    accepted = AcceptedWeights(monitor) if config.guard else None
    if accepted is not None:
        monitor.attach(UpdateGuard(monitor, accepted))
    if config.anchor_rate > 0.0:
        monitor.attach(SourceAnchor(monitor))
    if accepted is not None:
        monitor.attach(accepted)
    monitor.attach(DriftMonitor(monitor))
    if rehearsal is not None:
        monitor.attach(rehearsal)
    if sentinel is not None:
        monitor.attach(sentinel)
    monitor.attach(SnapshotHistory(monitor))
    return monitor
