"""The base of the safety layer's parts: :class:`SafetyPart`, and :data:`PartT` for looking a part up by kind.

A part is a set of listeners of the model state (of its weight updates or of its finished images) that share
one :class:`~clickadapt.adaptation.safety.monitor.SafetyMonitor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from clickadapt.adaptation.model_state import FinishListener, UpdateListener

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


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
