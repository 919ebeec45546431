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
served by the source model itself with the ``frozen`` strategy: the images the model was validated on are
segmented exactly as before, whatever the stream did. The cost is that nothing learnt on one domain helps
another, and that an image filed under the wrong domain gets that domain's model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyMonitor, attach_safety
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.tasks import TaskSpec


class DomainScopedModels:
    """One :class:`ModelState` per domain, each starting from the source model; source domains stay frozen.

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

    Raises:
        ValueError: For an unknown strategy (at construction, before any domain exists).
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
    ) -> None:
        self.task = task
        self.strategy_name = strategy_name
        self.strategy_overrides = dict(strategy_overrides or {})
        make_strategy(strategy_name, task, **self.strategy_overrides)  # validates before any domain exists
        self.source_domains = frozenset(source_domains)
        self.safety = safety
        self.device = device
        self._source = copy.deepcopy(model).cpu()
        self._sentinel_images = list(sentinel_images)
        self._rehearsal_images = list(rehearsal_images)
        self._states: dict[str, ModelState] = {}
        self._monitors: dict[str, SafetyMonitor] = {}

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
            network = copy.deepcopy(self._source).to(self.device)
            if self.is_source(domain):
                self._states[domain] = ModelState(network, self.task, make_strategy("frozen", self.task), self.device)
            else:
                strategy = make_strategy(self.strategy_name, self.task, **self.strategy_overrides)
                state = ModelState(network, self.task, strategy, self.device)
                self._states[domain] = state
                if self.safety is not None:
                    self._monitors[domain] = attach_safety(
                        state, self.safety, self._sentinel_images, self._rehearsal_images
                    )
        return self._states[domain]

    def monitor(self, domain: str) -> SafetyMonitor | None:
        """The safety layer of ``domain``'s model (``None`` for source domains or without safety)."""
        self.state(domain)
        return self._monitors.get(domain)

    def monitors(self) -> dict[str, SafetyMonitor]:
        """The safety layers of the adapting domains, by domain."""
        return dict(self._monitors)

    def detach(self) -> None:
        """Detach every safety layer (their events stay readable)."""
        for monitor in self._monitors.values():
            monitor.detach()
