"""The safety layer attached to one model state: :class:`SafetyMonitor`, what its parts share and what they did.

It holds the settings, the events, the signals of the latest finished images, the pinned source snapshot
and a probe network (a frozen copy of the model) on which the parts score candidate weights.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from clickadapt.adaptation.model_state import FinishedImage, ModelState, StateSnapshot
from clickadapt.adaptation.safety.config import SafetyConfig
from clickadapt.adaptation.safety.events import SAFETY_EVENT_KINDS, RollbackHook, SafetyEvent
from clickadapt.adaptation.safety.part import PartT, SafetyPart
from clickadapt.adaptation.safety.rehearsal import SourceRehearsal
from clickadapt.adaptation.safety.sentinel import SourceSentinel
from clickadapt.adaptation.safety.signals import ImageSignals
from clickadapt.adaptation.safety.snapshots import SOURCE_IMAGE_INDEX, SnapshotHistory, SnapshotRecord
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA, model_input

logger = logging.getLogger("clickadapt.adaptation.safety")  # the name it had as one module


class SafetyMonitor:
    """The safety layer attached to one :class:`ModelState`: what its parts share, and what they did.

    Make it with :func:`attach_safety`, which composes the parts, each a listener of the model state:
    :class:`UpdateGuard` and :class:`SourceAnchor` listen to weight updates; :class:`DriftMonitor`,
    :class:`SourceRehearsal`, :class:`SourceSentinel` and :class:`SnapshotHistory` to finished images. Since
    the model state announces every finished image (``InteractiveSession.finish``), no caller can finish an
    image around them.

    Args:
        state: The shared model state to protect.
        config: Settings (see :mod:`~clickadapt.adaptation.safety.config` for what a replaced config changes).
        click_sigma: σ of the click maps the model expects (its checkpoint's); the sentinel and the rehearsal
            place their simulated clicks with it.

    Attributes:
        events: Everything the layer did, in order.
        sentinel_checks: Every sentinel check: image index, live score, source score, α applied (or ``None``).
        signals: The signals of the latest finished images.
        source: The pinned snapshot of the weights the layer was attached with (the source model).
        parts: The listeners the layer is made of, in the order they were attached.
    """

    def __init__(
        self, state: ModelState, config: SafetyConfig | None = None, *, click_sigma: float = DEFAULT_CLICK_SIGMA
    ) -> None:
        self.state = state
        self.config = config or SafetyConfig()
        self.click_sigma = click_sigma
        self.events: list[SafetyEvent] = []
        self.sentinel_checks: list[dict[str, Any]] = []
        self.signals: deque[ImageSignals] = deque(maxlen=self.config.signal_history)
        self.parts: list[SafetyPart] = []
        self.image_index = 0
        self.replaying = False
        self._rollback_hooks: list[RollbackHook] = []
        with state.lock:
            self.source = SnapshotRecord(SOURCE_IMAGE_INDEX, image_id="", snapshot=state.snapshot(), good=True)
            self.source_parameters = {
                name: self.source.snapshot.model_state[name] for name, _ in state.model.named_parameters()
            }
            self._probe: nn.Module = copy.deepcopy(state.model).eval()
            self._probe.requires_grad_(False)
            # The version of the kept snapshot the probe holds; None: live or transient weights (reloaded each use).
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
        """Put ``record``'s weights (``None`` = the live weights) into the probe network.

        A kept snapshot already in the probe (same version) is not loaded again; live weights and transient
        records (:attr:`SnapshotRecord.transient`) always are.
        """
        if record is None:
            with torch.no_grad():
                self._probe.load_state_dict(self.state.model.state_dict())
            self._probe_version = None
        elif record.transient:
            with torch.no_grad():
                self._probe.load_state_dict(record.snapshot.model_state)
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
