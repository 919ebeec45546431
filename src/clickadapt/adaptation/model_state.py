"""The shared, adapting model: network + strategy + version counter + lock + update listeners.

One :class:`ModelState` is shared by every :class:`~clickadapt.adaptation.session.InteractiveSession`
working on the same model (a stream runner's sessions one after another, the web server's sessions side
by side). It serialises weight updates with a re-entrant lock, counts them in :attr:`ModelState.version`,
takes and restores bit-exact snapshots of the weights *and* the strategy's state (optimizer moments, a
teacher, random generators), and tells listeners about its two kinds of events — every change of the
weights (:class:`UpdateEvent`) and every finished image (:class:`FinishedImage`, announced by
``InteractiveSession.finish``) — so that a safety layer, an episodic reset or the server hang off the
model itself and no caller can finish an image around them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from clickadapt.adaptation.strategies import AdaptationStrategy, FrozenStrategy, StepReport
from clickadapt.adaptation.strategies.base import deep_copy_state
from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
from clickadapt.tasks import TaskSpec

UpdateKind = Literal["click", "image", "restore", "load"]
DEFAULT_MAX_KEPT_GRAPHS = 4
"""Sessions whose displayed forward's autograd graph is kept at once (the most recent ones)."""


@dataclass(frozen=True)
class UpdateEvent:
    """A change of the shared weights, as told to listeners.

    Attributes:
        kind: ``"click"`` (after-click update), ``"image"`` (after-image update), ``"restore"`` (a
            snapshot was restored: undo or rollback) or ``"load"`` (weights loaded from outside).
        version: The model version after the change.
        strategy: Name of the strategy in use.
        losses: Loss values of the update (empty for restore / load).
        image_id: Identifier of the image the update learnt from, if any.
        report: The strategy's full report, if any.
    """

    kind: UpdateKind
    version: int
    strategy: str
    losses: dict[str, float] = field(default_factory=dict)
    image_id: str = ""
    report: StepReport | None = None


UpdateListener = Callable[[UpdateEvent], None]


@dataclass(frozen=True)
class FinishedImage:
    """An image whose session finished on this model, as told to finish listeners (after the strategy's
    after-image update).

    Attributes:
        image: The image ``(C, H, W)`` as the network saw it (on the model's device).
        clicks: The user's clicks, in order.
        predictions: The prediction ``(H, W)`` int64 after each click, the last one replaced by the accepted
            final mask.
        image_id: The session's image id.
        click_sigma: σ of the click maps the session fed the network.
        first_version: The model version that produced the first prediction.
        report: The strategy's after-image report, if it ran.
    """

    image: torch.Tensor
    clicks: tuple[Click, ...]
    predictions: tuple[np.ndarray, ...]
    image_id: str = ""
    click_sigma: float = DEFAULT_CLICK_SIGMA
    first_version: int | None = None
    report: StepReport | None = None

    @property
    def final_mask(self) -> np.ndarray:
        """The accepted final mask ``(H, W)``."""
        return self.predictions[-1]


FinishListener = Callable[[FinishedImage], None]


@dataclass(frozen=True)
class KeptGraph:
    """A session's displayed forward with its autograd graph, kept for that session's next update.

    Attributes:
        logits: ``(1, K, H, W)`` logits carrying the graph.
        version: The model version whose weights recorded the graph.
        click_count: Number of clicks the forward was computed with.
    """

    logits: torch.Tensor
    version: int
    click_count: int


@dataclass(frozen=True)
class StateSnapshot:
    """A private, bit-exact copy of the model weights and the strategy's state.

    Attributes:
        version: Model version the snapshot was taken at.
        strategy: Name of the strategy whose state it holds.
        model_state: Cloned ``state_dict`` of the network (parameters and buffers).
        strategy_state: Deep copy of the strategy's ``state_dict``.
    """

    version: int
    strategy: str
    model_state: dict[str, torch.Tensor]
    strategy_state: dict[str, Any]


class ModelState:
    """The network, its adaptation strategy, a version counter, a lock and listeners.

    The network is put in evaluation mode and kept there (the reference U-Net's InstanceNorm behaves the
    same in both modes; for BatchNorm networks evaluation mode keeps single-image statistics out).

    Args:
        model: The network; moved to ``device``.
        task: Its task.
        strategy: The adaptation strategy (bound to ``model`` here); ``None`` = frozen.
        device: Where the network runs.
        version: Starting version (e.g. the version of a checkpoint the server resumed from).
        max_kept_graphs: How many sessions may keep the autograd graph of their displayed forward at once
            (see :meth:`keep_graph`); the least recently kept is dropped first.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        strategy: AdaptationStrategy | None = None,
        device: str | torch.device = "cpu",
        version: int = 0,
        max_kept_graphs: int = DEFAULT_MAX_KEPT_GRAPHS,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.strategy = strategy if strategy is not None else FrozenStrategy(task)
        self._check_strategy(self.strategy)
        self.strategy.bind(self.model)
        self.version = version
        self.lock = threading.RLock()
        self._listeners: list[UpdateListener] = []
        self._finish_listeners: list[FinishListener] = []
        self.max_kept_graphs = max_kept_graphs
        self._kept_graphs: OrderedDict[str, KeptGraph] = OrderedDict()

    def _check_strategy(self, strategy: AdaptationStrategy) -> None:
        if strategy.task != self.task:
            raise ValueError(
                f"strategy {strategy.name!r} was made for task {strategy.task.name!r}, the model is for "
                f"task {self.task.name!r}"
            )

    def set_strategy(self, strategy: AdaptationStrategy) -> None:
        """Switch strategy (e.g. adaptation on/off in the server); weights and version are unchanged.

        Raises:
            ValueError: If the strategy is for another task or bound to another model.
        """
        self._check_strategy(strategy)
        with self.lock:
            strategy.bind(self.model)
            self.strategy = strategy

    def add_listener(self, listener: UpdateListener) -> None:
        """Call ``listener(event)`` after every change of the weights (under the lock).

        A listener may itself restore a snapshot (the lock is re-entrant). An exception it raises
        propagates to whoever caused the update (a session then undoes that click's update).
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: UpdateListener) -> None:
        """Stop calling ``listener``; raises ``ValueError`` if it was not registered."""
        self._listeners.remove(listener)

    def _notify(self, event: UpdateEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def add_finish_listener(self, listener: FinishListener) -> None:
        """Call ``listener(finished)`` for every image finished on this model (under the lock), in the order
        the listeners were added. An exception it raises propagates to whoever finished the image."""
        self._finish_listeners.append(listener)

    def remove_finish_listener(self, listener: FinishListener) -> None:
        """Stop calling ``listener``; raises ``ValueError`` if it was not registered."""
        self._finish_listeners.remove(listener)

    def image_finished(self, finished: FinishedImage) -> None:
        """Announce a finished image to the finish listeners (``InteractiveSession.finish`` does this)."""
        with self.lock:
            for listener in list(self._finish_listeners):
                listener(finished)

    # ------------------------------------------------------------------ graphs kept between clicks
    def keep_graph(self, owner: str, logits: torch.Tensor, click_count: int) -> None:
        """Keep the graph-carrying displayed forward of session ``owner`` for its next update.

        Every kept graph is dropped at the next change of the weights (it would be stale), and at most
        ``max_kept_graphs`` are kept, so idle sessions do not hold activations.
        """
        with self.lock:
            self._kept_graphs.pop(owner, None)
            if self.max_kept_graphs < 1:
                return
            self._kept_graphs[owner] = KeptGraph(logits, self.version, click_count)
            while len(self._kept_graphs) > self.max_kept_graphs:
                self._kept_graphs.popitem(last=False)

    def take_graph(self, owner: str, click_count: int) -> torch.Tensor | None:
        """Remove and return ``owner``'s kept graph if it was computed with ``click_count`` clicks and the
        current weights; ``None`` otherwise."""
        with self.lock:
            kept = self._kept_graphs.pop(owner, None)
            if kept is None or kept.click_count != click_count or kept.version != self.version:
                return None
            return kept.logits

    def drop_graph(self, owner: str) -> None:
        """Forget ``owner``'s kept graph, if any."""
        with self.lock:
            self._kept_graphs.pop(owner, None)

    @property
    def kept_graph_count(self) -> int:
        """Number of sessions that currently keep a graph."""
        return len(self._kept_graphs)

    def record_update(self, kind: UpdateKind, report: StepReport | None = None, image_id: str = "") -> int:
        """Count one accepted weight change and tell the listeners.

        Args:
            kind: What caused it.
            report: The strategy's report, if any.
            image_id: The image it learnt from, if any.

        Returns:
            The new version.
        """
        with self.lock:
            self.version += 1
            self._kept_graphs.clear()  # recorded with the old weights: useless now, free their memory
            version = self.version
            losses = dict(report.losses) if report is not None else {}
            self._notify(UpdateEvent(kind, version, self.strategy.name, losses, image_id, report))
            return version

    def snapshot(self) -> StateSnapshot:
        """A private copy of weights and strategy state, taken under the lock."""
        with self.lock:
            model_state = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
            return StateSnapshot(
                version=self.version,
                strategy=self.strategy.name,
                model_state=model_state,
                strategy_state=deep_copy_state(self.strategy.state_dict()),
            )

    def restore(self, snapshot: StateSnapshot) -> int:
        """Put weights and strategy state back exactly as in ``snapshot`` (bit for bit).

        The version counter never goes back: a restore is a change of the weights and gets a new version
        (listeners see ``kind="restore"``). The snapshot itself stays intact and can be restored again.

        Returns:
            The new version.

        Raises:
            ValueError: If the snapshot holds another strategy's state.
        """
        with self.lock:
            if snapshot.strategy != self.strategy.name:
                raise ValueError(
                    f"snapshot holds the state of strategy {snapshot.strategy!r}, the model now uses "
                    f"{self.strategy.name!r}; use load_weights() to restore weights only"
                )
            with torch.no_grad():
                self.model.load_state_dict(snapshot.model_state)
            self.strategy.load_state_dict(deep_copy_state(snapshot.strategy_state))
            return self.record_update("restore")

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> int:
        """Load network weights from outside (e.g. a rollback to a stored checkpoint); strategy state stays.

        Returns:
            The new version (listeners see ``kind="load"``).
        """
        with self.lock:
            with torch.no_grad():
                self.model.load_state_dict(dict(state_dict))
            return self.record_update("load")
