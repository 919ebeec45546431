"""One call that protects a shared model: :func:`attach_safety` composes the parts as listeners of it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety.anchor import SourceAnchor
from clickadapt.adaptation.safety.config import SafetyConfig
from clickadapt.adaptation.safety.drift import DriftMonitor
from clickadapt.adaptation.safety.guard import AcceptedWeights, UpdateGuard
from clickadapt.adaptation.safety.monitor import SafetyMonitor
from clickadapt.adaptation.safety.rehearsal import SourceRehearsal
from clickadapt.adaptation.safety.sentinel import SourceSentinel
from clickadapt.adaptation.safety.snapshots import SnapshotHistory
from clickadapt.clicks.encoding import DEFAULT_CLICK_SIGMA


def attach_safety(
    state: ModelState,
    config: SafetyConfig | None = None,
    sentinel_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    rehearsal_images: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    *,
    click_sigma: float = DEFAULT_CLICK_SIGMA,
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
        click_sigma: σ of the click maps the model expects (``LoadedModel.meta.preprocessing.click_sigma``);
            the sentinel and the rehearsal place their simulated clicks with it.

    Returns:
        The monitor: read :attr:`SafetyMonitor.events`, ``signals``, ``history``; ``detach()`` to stop.

    Raises:
        ValueError: For a labelled image of the wrong shape, classes or values (nothing is attached then).
    """
    monitor = SafetyMonitor(state, config, click_sigma=click_sigma)
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
