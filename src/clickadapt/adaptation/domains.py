"""Domain-scoped adaptation: one adapting copy of the model per image domain, the source domain frozen.

A single set of weights that adapts to every image it is shown forgets the domains it no longer sees
(``bench/results/long_stream.md``: 4–12 Dice@5 points on held-out source images after a few dozen target
images, whatever the safety layer does short of undoing the adaptation). Where the images say which domain
they come from — the site, scanner or protocol in their DICOM header, or the folder a user imported them
from — adaptation can be scoped instead::

    models = DomainScopedModels(network, task, "oaims", source_domains={"source"}, safety=SafetyConfig())
    state = models.state("site-B/T1c", image_id)  # created on first use as a copy of the source model
    session = InteractiveSession(state)
    ...
    session.finish()                              # reaches that model's safety layer (a listener of it)

Each domain gets its own :class:`ModelState` (and safety layer), created lazily from the source weights, so
adapting to one domain never changes the weights another domain is segmented with. The source domains are
served by the source model itself: with ``source_mode="frozen"`` by the ``frozen`` strategy (the images the
model was validated on are segmented exactly as before, whatever the stream did); with
``source_mode="episodic"`` each source image gets Mid-Interaction updates while it is being clicked (the
``mid`` strategy: one step per click from the second on) and the source weights are put back, bit for bit,
when it is finished (a finish listener of its model state), so a source image still profits from its own
clicks but nothing is carried to the next one. Several source images open at once (the server) each get
their own copy; a copy whose image is finished or released serves the next one. The cost of scoping is that
nothing learnt on one domain helps another, and that an image filed under the wrong domain gets that
domain's model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Literal, get_args

import numpy as np
from torch import nn

from clickadapt.adaptation.model_state import FinishedImage, ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyMonitor, attach_safety
from clickadapt.adaptation.strategies import MidInteractionConfig, make_strategy
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA
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
        session.finish()                      # final mask; the start weights are back

    The reset is a finish listener of :attr:`state`, added after the safety layer's, so the guard's
    bookkeeping sees the image first.

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
        self.state.add_finish_listener(self._image_finished)

    def _image_finished(self, finished: FinishedImage) -> None:
        self.reset()
        self.images += 1

    def reset(self) -> None:
        """Put the start weights and a fresh strategy state back (an image left unfinished)."""
        if self.state.version != self._start.version or self.state.strategy.name != self._start.strategy:
            self.state.restore(self._start)

    def detach(self) -> None:
        """Detach the guard (its events stay readable)."""
        if self.monitor is not None:
            self.monitor.detach()


class DomainScopedModels:
    """The router from an image's domain to the model that serves it; source weights never change.

    Every non-source domain has one adapting :class:`ModelState` made from the source model on first use
    (or one given with :meth:`adopt`, e.g. the server's shared model). Source domains are served by the
    frozen source model, or with ``source_mode="episodic"`` by :class:`EpisodicModel` copies: one per image
    in progress, back in the pool once its image is finished or :meth:`release`-d. Used by the server and
    by the long-stream benchmark.

    Args:
        model: The source model; copied, never changed.
        task: Its task.
        strategy_name: Strategy of every non-source domain (``make_strategy`` name).
        strategy_overrides: Its configuration overrides.
        source_domains: Domain names served by the source model.
        safety: Attach the safety layer with these settings to every adapting domain (and the guard to the
            episodic copies); ``None`` = none.
        device: Torch device of the models.
        sentinel_images: Labelled source images for each domain's source sentinel.
        rehearsal_images: Labelled source images for each domain's source rehearsal.
        source_mode: ``"frozen"``: source images are segmented by the source model as it is;
            ``"episodic"``: they get Mid-Interaction updates while clicked (the ``mid`` strategy with the
            MI settings among ``strategy_overrides``, guarded when ``safety`` is given; no drift monitor,
            sentinel or rehearsal, since nothing outlives the image) and the source weights come back when
            the image is finished.
        source_version: Version number of the source weights (e.g. the server's base model version).
        click_sigma: σ of the click maps the model expects; the sentinels and rehearsals click with it.

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
        source_version: int = 0,
        click_sigma: float = DEFAULT_CLICK_SIGMA,
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
        self.source_version = source_version
        self.click_sigma = click_sigma
        self._source = copy.deepcopy(model).cpu()
        self._sentinel_images = list(sentinel_images)
        self._rehearsal_images = list(rehearsal_images)
        self._states: dict[str, ModelState] = {}
        self._monitors: dict[str, SafetyMonitor] = {}
        self._episodic_copies: dict[str, list[EpisodicModel]] = {}  # every copy made, by domain
        self._idle: dict[str, list[EpisodicModel]] = {}
        self._in_progress: dict[str, EpisodicModel] = {}  # by image id

    @property
    def domains(self) -> list[str]:
        """The domains seen so far, in order of first use."""
        return list(dict.fromkeys([*self._states, *self._episodic_copies]))

    @property
    def source_model(self) -> nn.Module:
        """The source model (the router's private copy, on the CPU): what every source domain is served with
        between images. Do not change it."""
        return self._source

    def is_source(self, domain: str) -> bool:
        """Whether ``domain`` is served by the source model."""
        return domain in self.source_domains

    def is_episodic(self, domain: str) -> bool:
        """Whether ``domain``'s weights are put back to the source weights after every image."""
        return self.is_source(domain) and self.source_mode == "episodic"

    def adopt(self, domain: str, state: ModelState, monitor: SafetyMonitor | None = None) -> None:
        """Serve a non-source ``domain`` with an existing model state (and its safety layer).

        Raises:
            ValueError: For a source domain, a domain already served, or a state of another task.
        """
        if self.is_source(domain) or domain in self._states:
            raise ValueError(f"domain {domain!r} is a source domain or already has a model")
        if state.task != self.task:
            raise ValueError(f"the model state is for task {state.task.name!r}, the router for {self.task.name!r}")
        self._states[domain] = state
        if monitor is not None:
            self._monitors[domain] = monitor

    def state(self, domain: str, image_id: str = "") -> ModelState:
        """The model state that serves an image of ``domain``, made from the source model on first use.

        Args:
            domain: The image's domain.
            image_id: The image; for an episodic domain, each image in progress has its own copy (the same
                one on every call until the image is finished or released).

        Raises:
            ValueError: For an empty domain name.
        """
        if not domain:
            raise ValueError("a domain name is required (e.g. the site or scanner of the image)")
        if self.is_episodic(domain):
            return self.episodic_model(domain, image_id).state
        if domain not in self._states:
            network = copy.deepcopy(self._source).to(self.device)
            if self.is_source(domain):
                strategy = make_strategy("frozen", self.task)
                self._states[domain] = ModelState(network, self.task, strategy, self.device, self.source_version)
            else:
                strategy = make_strategy(self.strategy_name, self.task, **self.strategy_overrides)
                state = ModelState(network, self.task, strategy, self.device, version=self.source_version)
                self._states[domain] = state
                if self.safety is not None:
                    self._monitors[domain] = attach_safety(
                        state, self.safety, self._sentinel_images, self._rehearsal_images, click_sigma=self.click_sigma
                    )
        return self._states[domain]

    def episodic_model(self, domain: str, image_id: str = "") -> EpisodicModel:
        """The episodic copy that serves image ``image_id`` of an episodic ``domain`` (taken from the pool or
        made on first use).

        Raises:
            ValueError: If ``domain`` is not episodic.
        """
        if not self.is_episodic(domain):
            raise ValueError(f"domain {domain!r} is not an episodic source domain")
        if image_id in self._in_progress:
            return self._in_progress[image_id]
        idle = self._idle.setdefault(domain, [])
        if idle:
            episodic = idle.pop()
        else:
            episodic = EpisodicModel(
                self._source,
                self.task,
                self._episodic_overrides,
                safety=self.safety,
                device=self.device,
                version=self.source_version,
            )
            episodic.state.add_finish_listener(partial(self._episodic_finished, domain, episodic))
            self._episodic_copies.setdefault(domain, []).append(episodic)
        self._in_progress[image_id] = episodic
        return episodic

    def in_progress(self, image_id: str) -> EpisodicModel | None:
        """The episodic copy serving ``image_id`` now, if any."""
        return self._in_progress.get(image_id)

    def release(self, image_id: str) -> None:
        """Give back the episodic copy of an image left unfinished: its start weights come back, and it
        serves the next image. No-op for an image without one."""
        episodic = self._in_progress.get(image_id)
        if episodic is None:
            return
        episodic.reset()
        domain = next(name for name, copies in self._episodic_copies.items() if episodic in copies)
        self._episodic_finished(domain, episodic, None)

    def _episodic_finished(self, domain: str, episodic: EpisodicModel, finished: FinishedImage | None) -> None:
        for image_id, serving in list(self._in_progress.items()):
            if serving is episodic:
                del self._in_progress[image_id]
        if episodic not in self._idle.setdefault(domain, []):
            self._idle[domain].append(episodic)

    def monitor(self, domain: str, image_id: str = "") -> SafetyMonitor | None:
        """The safety layer of the model that serves an image of ``domain`` (``None`` for frozen source
        domains or without safety)."""
        if self.is_episodic(domain):
            return self.episodic_model(domain, image_id).monitor
        self.state(domain)
        return self._monitors.get(domain)

    def monitors(self) -> dict[str, SafetyMonitor]:
        """The safety layers of the adapting (non-source) domains, by domain."""
        return dict(self._monitors)

    def episodic_monitors(self) -> list[SafetyMonitor]:
        """The guards of every episodic copy made so far."""
        return [
            episodic.monitor
            for copies in self._episodic_copies.values()
            for episodic in copies
            if episodic.monitor is not None
        ]

    def detach(self) -> None:
        """Detach every safety layer (their events stay readable)."""
        for monitor in [*self._monitors.values(), *self.episodic_monitors()]:
            monitor.detach()
