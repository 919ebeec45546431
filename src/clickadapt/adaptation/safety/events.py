"""What the safety layer did: :class:`SafetyEvent`, its kinds, and the hook called after a rollback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from clickadapt.adaptation.model_state import StateSnapshot

SafetyEventKind = Literal["update_rejected", "rollback", "drift_unresolved", "sentinel_pullback"]
SAFETY_EVENT_KINDS: tuple[SafetyEventKind, ...] = (
    "update_rejected",
    "rollback",
    "drift_unresolved",
    "sentinel_pullback",
)


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


RollbackHook = Callable[[SafetyEvent, StateSnapshot, StateSnapshot], None]
"""Called after a rollback with the event, the weights before it and the restored snapshot (benchmarks)."""
