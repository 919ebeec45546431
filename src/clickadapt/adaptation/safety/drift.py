"""The drift monitor with rollback, on signals that need no ground truth.

The decision statistic is the first-click agreement with the accepted mask
(:mod:`~clickadapt.adaptation.safety.signals`), compared over a sliding window of ``window`` images either
with the *source model on the same images* (``reference="source"``, default: one extra forward per image,
and the difficulty of a new domain cancels out) or with the first ``window`` images after attaching
(``reference="window"``). When it worsens by more than ``max_drop``, the candidates (source model and the
history's good snapshots) are replayed on the window's images with their first clicks and scored against
the accepted masks; the best one is restored if it beats the current weights by ``min_improvement`` (a
``rollback`` event), otherwise a ``drift_unresolved`` event is recorded and nothing changes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from clickadapt.adaptation.model_state import FinishedImage, FinishListener
from clickadapt.adaptation.safety.config import SafetyConfig
from clickadapt.adaptation.safety.events import SafetyEvent
from clickadapt.adaptation.safety.part import SafetyPart
from clickadapt.adaptation.safety.signals import ImageSignals, image_signals
from clickadapt.adaptation.safety.snapshots import SnapshotHistory, SnapshotRecord
from clickadapt.clicks.click import Click
from clickadapt.evaluation.metrics import mean_region_dice

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


@dataclass(frozen=True)
class _ReplayItem:
    image: torch.Tensor  # (C, H, W) on the model's device
    first_click: Click
    final_mask: np.ndarray  # (H, W) int64
    click_sigma: float


class DriftMonitor(SafetyPart):
    """The ground-truth-free signals of every finished image and, when ``config.monitor`` is on, the drift
    check over a sliding window with a rollback to the best candidate snapshot (see the module docstring)."""

    def __init__(self, monitor: SafetyMonitor) -> None:
        super().__init__(monitor)
        config = monitor.config
        self._window: deque[float] = deque(maxlen=config.window)
        self._reference_values: list[float] = []
        self._replay: deque[_ReplayItem] = deque(maxlen=config.window)
        self._window_reference = config.reference  # what the window's values are measured against
        self.last_good = True

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Record the image's signals; on drift, replay the window and maybe roll back."""
        monitor = self.monitor
        if monitor.replaying:
            return
        config, task = monitor.config, monitor.state.task  # one config for the whole image (it may be replaced)
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
            drift_reason = self._drift(signals, config)
            if drift_reason is not None:
                event = self._resolve_drift(drift_reason, finished.image_id)
                self.last_good = event.kind == "rollback"  # the restored weights, or drifting ones kept

    def _drift(self, signals: ImageSignals, config: SafetyConfig) -> str | None:
        """Update the window with this image; a sentence if it drifted beyond the threshold, else ``None``.

        ``config`` is the one the image's signals were computed with. After a replaced config switched the
        reference, the window starts again (its values were measured against the other reference).

        Raises:
            ValueError: ``reference="source"`` but the signals lack the source model's agreement.
        """
        if config.reference != self._window_reference:
            self._window.clear()
            self._window_reference = config.reference
        if config.reference == "source":
            source = signals.source_first_final_dice
            if source is None:
                raise ValueError(
                    f"image {signals.image_index}: the drift reference is the source model, but its first-click "
                    "agreement was not computed"
                )
            self._window.append(signals.first_final_dice - source)
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
