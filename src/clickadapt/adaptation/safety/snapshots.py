"""Bounded snapshots: the rollback candidates, taken at every finished image.

A bounded history keeps the last ``recent_snapshots`` images densely, plus one every
``sparse_snapshot_every`` images for the last ``sparse_snapshots`` of those, so that a rollback can reach
back before a slow drift began. The weights the monitor was attached with (the source model) are pinned
(:attr:`~clickadapt.adaptation.safety.monitor.SafetyMonitor.source`) and always a candidate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clickadapt.adaptation.model_state import FinishedImage, FinishListener, StateSnapshot
from clickadapt.adaptation.safety.part import SafetyPart

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


SOURCE_IMAGE_INDEX = -1
"""The :attr:`SnapshotRecord.image_index` of the pinned source snapshot: taken before any finished image, so it
sorts before (and is older than) every snapshot of the history."""


@dataclass
class SnapshotRecord:
    """One snapshot of the history.

    Attributes:
        image_index: Finished images (since attaching) when it was taken; :data:`SOURCE_IMAGE_INDEX` for the
            pinned source.
        image_id: The image finished just before it ("" for the source).
        snapshot: Weights and strategy state; its version is a real model version.
        good: Whether the monitor saw no drift when it was taken (only good ones are rollback candidates).
        transient: Made for one probe (a sentinel blend of the source and live weights) and in no history: its
            snapshot carries the version of the live weights it was made from without holding them, so the
            probe network never reuses it (or mistakes it) by version.
    """

    image_index: int
    image_id: str
    snapshot: StateSnapshot
    good: bool = True
    transient: bool = False

    @property
    def version(self) -> int:
        """The model version of the snapshot."""
        return self.snapshot.version


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
        from clickadapt.adaptation.safety.drift import DriftMonitor  # not at the top: drift.py imports this module

        drift = monitor.part(DriftMonitor)
        good = drift.last_good if drift is not None else True
        record = SnapshotRecord(monitor.image_index, finished.image_id, monitor.state.snapshot(), good)
        self._recent.append(record)
        config = monitor.config
        if config.sparse_snapshots > 0 and monitor.image_index % config.sparse_snapshot_every == 0:
            self._sparse.append(record)
        monitor.image_index += 1
