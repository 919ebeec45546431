"""Domain-scoped adaptation: one adapting copy of the model per image domain, the source domain frozen.

A single set of weights that adapts to every image it is shown forgets the domains it no longer sees
(``bench/results/long_stream.md``: 4–12 Dice@5 points on held-out source images after a few dozen target
images, whatever the safety layer does short of undoing the adaptation). Where the images say which domain
they come from — the site, scanner or protocol in their DICOM header, or the folder a user imported them
from — adaptation can be scoped instead::

    models = DomainScopedModels(network, task, "oaims", source_domains={"source"}, safety=SafetyConfig())
    state = models.state("site-B/T1c")            # created on first use as a copy of the source model
    session = InteractiveSession(state)
    ...
    models.monitor("site-B/T1c").finish(session)  # the safety layer of that domain's model

Each domain gets its own :class:`ModelState` (and safety layer), created lazily from the source weights, so
adapting to one domain never changes the weights another domain is segmented with. The source domains are
served by the source model itself: with ``source_mode="frozen"`` by the ``frozen`` strategy (the images the
model was validated on are segmented exactly as before, whatever the stream did); with
``source_mode="episodic"`` each source image gets Mid-Interaction updates while it is being clicked (the
``mid`` strategy: one step per click from the second on) and the source weights are put back, bit for bit,
when it is finished (:meth:`DomainScopedModels.finish`), so a source image still profits from its own clicks
but nothing is carried to the next one. The cost of scoping is that nothing learnt on one domain helps
another, and that an image filed under the wrong domain gets that domain's model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyMonitor, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import MidInteractionConfig, make_strategy
from clickadapt.tasks import TaskSpec

SourceMode = Literal["frozen", "episodic"]
"""How source-domain images are served: by the frozen source model, or with per-image (episodic) MI updates."""
SOURCE_MODES: tuple[str, ...] = get_args(SourceMode)


def mid_interaction_overrides(strategy_overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings among ``strategy_overrides`` that the ``mid`` strategy has (e.g. OAIMS's ``lr``)."""
    return {key: value for key, value in strategy_overrides.items() if key in MidInteractionConfig.model_fields}


class EpisodicModel:
    """A model that learns only within an image: Mid-Interaction updates while it is clicked, then the
    weights it started from come back, bit for bit, with a fresh optimizer.

    Use it for images of the domain the model was built for: each such image still profits from its own
    clicks (one MI step per click from the second on), but nothing is carried to the next image, so the
    model's accuracy on that domain can never erode::

        episodic = EpisodicModel(network, task, safety=SafetyConfig())
        session = InteractiveSession(episodic.state)
        ...                                   # clicks: MI updates of episodic.state
        episodic.finish(session)              # final mask; the start weights are back

    Args:
        model: The weights to start every image from; copied, never changed.
        task: Its task.
        strategy_overrides: Settings of the ``mid`` strategy (others are refused; see
            :func:`mid_interaction_overrides`).
        safety: Guard every update with these settings (the drift monitor is switched off: nothing outlives
            the image); ``None`` = unguarded.
        device: Torch device.
        version: Version number of the start weights (e.g. the server's base model version).

    Raises:
        ValueError: For a setting the ``mid`` strategy does not have.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        strategy_overrides: dict[str, Any] | None = None,
        *,
        safety: SafetyConfig | None = None,
        device: str = "cpu",
        version: int = 0,
    ) -> None:
        strategy = make_strategy("mid", task, **(strategy_overrides or {}))
        self.state = ModelState(copy.deepcopy(model), task, strategy, device, version=version)
        self.monitor: SafetyMonitor | None = (
            attach_safety(self.state, safety.model_copy(update={"monitor": False})) if safety is not None else None
        )
        self._start = self.state.snapshot()
        self.images = 0

    def finish(self, session: InteractiveSession, final_mask: np.ndarray | None = None) -> np.ndarray:
        """Finish ``session`` (through the guard's bookkeeping) and put the start weights back.

        Args:
            session: A session on :attr:`state`.
            final_mask: The mask the user accepted, if edited (see ``InteractiveSession.finish``).

        Returns:
            The final mask.

        Raises:
            ValueError: As ``InteractiveSession.finish`` does, or for a session on another model; nothing
                changes then.
        """
        if session.state is not self.state:
            raise ValueError(f"session on image {session.image_id!r} is not on this episodic model")
        mask = _finish(session, self.monitor, final_mask)
        self.state.restore(self._start)
        self.images += 1
        return mask

    def detach(self) -> None:
        """Detach the guard (its events stay readable)."""
        if self.monitor is not None:
            self.monitor.detach()


class DomainScopedModels:
    """One :class:`ModelState` per domain, each starting from the source model; source weights never change.

    Args:
        model: The source model; copied, never changed.
        task: Its task.
        strategy_name: Strategy of every non-source domain (``make_strategy`` name).
        strategy_overrides: Its configuration overrides.
        source_domains: Domain names served by the frozen source model.
        safety: Attach the safety layer with these settings to every adapting domain; ``None`` = none.
        device: Torch device of the models.
        sentinel_images: Labelled source images for each domain's source sentinel.
        rehearsal_images: Labelled source images for each domain's source rehearsal.
        source_mode: ``"frozen"``: source images are segmented by the source model as it is;
            ``"episodic"``: they get Mid-Interaction updates while clicked (the ``mid`` strategy with the
            MI settings among ``strategy_overrides``, guarded when ``safety`` is given; no drift monitor,
            sentinel or rehearsal, since nothing outlives the image) and :meth:`finish` restores the source
            weights afterwards.

    Raises:
        ValueError: For an unknown strategy or source mode (at construction, before any domain exists).
    """

    def __init__(
        self,
        model: nn.Module,
        task: TaskSpec,
        strategy_name: str,
        strategy_overrides: dict[str, Any] | None = None,
        *,
        source_domains: Iterable[str] = (),
        safety: SafetyConfig | None = None,
        device: str = "cpu",
        sentinel_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
        rehearsal_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
        source_mode: SourceMode = "frozen",
    ) -> None:
        if source_mode not in SOURCE_MODES:
            raise ValueError(f"unknown source_mode {source_mode!r}; known: {list(SOURCE_MODES)}")
        self.task = task
        self.strategy_name = strategy_name
        self.strategy_overrides = dict(strategy_overrides or {})
        make_strategy(strategy_name, task, **self.strategy_overrides)  # validates before any domain exists
        self.source_domains = frozenset(source_domains)
        self.source_mode: SourceMode = source_mode
        self._episodic_overrides = mid_interaction_overrides(self.strategy_overrides)
        if source_mode == "episodic":
            make_strategy("mid", task, **self._episodic_overrides)
        self.safety = safety
        self.device = device
        self._source = copy.deepcopy(model).cpu()
        self._sentinel_images = list(sentinel_images)
        self._rehearsal_images = list(rehearsal_images)
        self._states: dict[str, ModelState] = {}
        self._monitors: dict[str, SafetyMonitor] = {}
        self._episodic: dict[str, EpisodicModel] = {}

    @property
    def domains(self) -> list[str]:
        """The domains seen so far, in order of first use."""
        return list(self._states)

    def is_source(self, domain: str) -> bool:
        """Whether ``domain`` is served by the frozen source model."""
        return domain in self.source_domains

    def state(self, domain: str) -> ModelState:
        """The model state of ``domain``, made from the source model on first use.

        Raises:
            ValueError: For an empty domain name.
        """
        if not domain:
            raise ValueError("a domain name is required (e.g. the site or scanner of the image)")
        if domain not in self._states:
            if self.is_episodic(domain):  # EpisodicModel makes its own copy of the source model
                episodic = EpisodicModel(
                    self._source, self.task, self._episodic_overrides, safety=self.safety, device=self.device
                )
                self._episodic[domain] = episodic
                self._states[domain] = episodic.state
                if episodic.monitor is not None:  # the guard still vets every step inside the image
                    self._monitors[domain] = episodic.monitor
            elif self.is_source(domain):
                network = copy.deepcopy(self._source).to(self.device)
                self._states[domain] = ModelState(network, self.task, make_strategy("frozen", self.task), self.device)
            else:
                network = copy.deepcopy(self._source).to(self.device)
                strategy = make_strategy(self.strategy_name, self.task, **self.strategy_overrides)
                state = ModelState(network, self.task, strategy, self.device)
                self._states[domain] = state
                if self.safety is not None:
                    self._monitors[domain] = attach_safety(
                        state, self.safety, self._sentinel_images, self._rehearsal_images
                    )
        return self._states[domain]

    def is_episodic(self, domain: str) -> bool:
        """Whether ``domain``'s weights are put back to the source weights after every image."""
        return self.is_source(domain) and self.source_mode == "episodic"

    def monitor(self, domain: str) -> SafetyMonitor | None:
        """The safety layer of ``domain``'s model (``None`` for frozen source domains or without safety)."""
        self.state(domain)
        return self._monitors.get(domain)

    def finish(self, domain: str, session: InteractiveSession, final_mask: np.ndarray | None = None) -> np.ndarray:
        """Finish ``session`` (an image of ``domain``) through the domain's safety layer, if any.

        For an episodic source domain the source weights and a fresh strategy state are restored afterwards,
        so the next source image starts from the source model again.

        Args:
            domain: The image's domain.
            session: A session on ``self.state(domain)``.
            final_mask: The mask the user accepted, if edited (see ``InteractiveSession.finish``).

        Returns:
            The final mask.

        Raises:
            ValueError: As ``InteractiveSession.finish`` does, or for a session on another domain's model.
        """
        state = self.state(domain)
        if session.state is not state:
            raise ValueError(f"session on image {session.image_id!r} is not on the model of domain {domain!r}")
        if domain in self._episodic:
            return self._episodic[domain].finish(session, final_mask)
        return _finish(session, self._monitors.get(domain), final_mask)

    def monitors(self) -> dict[str, SafetyMonitor]:
        """The safety layers of the adapting domains, by domain."""
        return dict(self._monitors)

    def detach(self) -> None:
        """Detach every safety layer (their events stay readable)."""
        for monitor in self._monitors.values():
            monitor.detach()


def _finish(session: InteractiveSession, monitor: SafetyMonitor | None, final_mask: np.ndarray | None) -> np.ndarray:
    """Finish a session through its model's safety layer, or directly when the model has none."""
    return monitor.finish(session, final_mask) if monitor is not None else session.finish(final_mask)
