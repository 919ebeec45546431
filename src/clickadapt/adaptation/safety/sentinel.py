"""The source sentinel (off unless labelled source images are given): it notices forgetting and undoes it.

The drift monitor sees only the stream, so it cannot notice that adaptation erodes the source domain
(forgetting). Every ``sentinel.every`` finished images a simulated user segments a few labelled *source*
images (e.g. a sample of the training set the vendor ships with the model) with the live weights, frozen;
if their Dice at ``sentinel.budget`` clicks is more than ``sentinel.max_drop`` below the source model's,
the weights are pulled back along the straight line to the source weights, θ ← θ_src + α(θ − θ_src), with
the largest α of ``sentinel.blends`` that brings the sentinel back within the limit (a
``sentinel_pullback`` event; interpolating adapted and source weights keeps much of the adaptation, cf.
WiSE-FT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clickadapt.adaptation.model_state import FinishedImage, FinishListener, StateSnapshot
from clickadapt.adaptation.safety.events import SafetyEvent
from clickadapt.adaptation.safety.part import SafetyPart
from clickadapt.adaptation.safety.snapshots import SnapshotRecord
from clickadapt.adaptation.safety.source_images import _labelled_source_image
from clickadapt.clicks.simulators import make_simulated_user
from clickadapt.evaluation.metrics import mean_region_dice

if TYPE_CHECKING:
    from clickadapt.adaptation.safety.monitor import SafetyMonitor


class SourceSentinel(SafetyPart):
    """Every ``sentinel.every`` finished images, score the live weights on labelled source images with a
    simulated user; when they forgot, pull them back towards the source weights (``sentinel_pullback``)."""

    def __init__(self, monitor: SafetyMonitor, images: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(monitor)
        self.images = [_labelled_source_image(image, label, monitor.state, "sentinel") for image, label in images]
        self.source_score = self._score(monitor.source)

    def finish_listeners(self) -> list[FinishListener]:
        return [self.image_finished]

    def image_finished(self, finished: FinishedImage) -> None:
        """Check the sentinel when it is time."""
        monitor = self.monitor
        if monitor.replaying or (monitor.image_index + 1) % monitor.config.sentinel.every != 0:
            return
        self._check(finished.image_id)

    def _score(self, record: SnapshotRecord | None) -> float:
        """Mean Dice after ``sentinel.budget`` simulated clicks on the sentinel images, weights frozen."""
        monitor = self.monitor
        config = monitor.config.sentinel
        scores = []
        monitor.load_probe(record)
        for index, item in enumerate(self.images):
            user = make_simulated_user(config.user, seed=config.seed * 1_000_003 + index)
            clicks = [user.first_click(item.label)]
            while True:
                prediction = monitor.probe_prediction(item.image, clicks, monitor.click_sigma)
                if len(clicks) >= config.budget:
                    break
                click = user.next_click(item.label, prediction)
                if click is None:
                    break
                clicks.append(click)
            scores.append(mean_region_dice(prediction, item.label, monitor.state.task))
        return float(np.mean(scores))

    def _blend(self, alpha: float) -> SnapshotRecord:
        """A transient record of θ_src + α(θ_live − θ_src) (buffers of the live weights), labelled with the live
        weights' version and strategy (it is in no history, and the probe never reuses it by version)."""
        monitor = self.monitor
        live = monitor.state.model.state_dict()
        blended = {
            name: torch.lerp(monitor.source_parameters[name], tensor, alpha)
            if name in monitor.source_parameters
            else tensor
            for name, tensor in live.items()
        }
        snapshot = StateSnapshot(monitor.state.version, monitor.state.strategy.name, blended, {})
        return SnapshotRecord(monitor.image_index, "", snapshot, good=True, transient=True)

    def _check(self, image_id: str) -> SafetyEvent | None:
        """Score the live weights on the sentinel; pull them back towards the source when they forgot."""
        monitor = self.monitor
        config = monitor.config.sentinel
        live = self._score(None)
        check: dict[str, Any] = {
            "image_index": monitor.image_index,
            "score": live,
            "source_score": self.source_score,
            "alpha": None,
        }
        monitor.sentinel_checks.append(check)
        limit = self.source_score - config.max_drop
        if live >= limit:
            return None
        tried = []
        alpha, score = 0.0, self.source_score
        chosen: SnapshotRecord | None = None
        for candidate in config.blends:
            record = self._blend(candidate) if candidate > 0 else None
            candidate_score = self._score(record) if record is not None else self.source_score
            tried.append(f"α={candidate:g}: {candidate_score:.3f}")
            if candidate_score >= limit:
                alpha, score, chosen = candidate, candidate_score, record
                break
        if chosen is None:  # α = 0: back to the source weights
            chosen = self._blend(0.0)
        monitor.state.load_weights(chosen.snapshot.model_state)
        monitor.load_probe(None)
        check.update(alpha=alpha, blended_score=score)
        return monitor.record(
            SafetyEvent(
                kind="sentinel_pullback",
                image_id=image_id,
                reason=(
                    f"source sentinel Dice@{config.budget} {live:.3f} is {self.source_score - live:.3f} below "
                    f"the source model's {self.source_score:.3f} (limit {config.max_drop:g}); tried "
                    f"{', '.join(tried)}; weights set to θ_src + {alpha:g}·(θ − θ_src)"
                ),
                version=monitor.state.version,
                image_index=monitor.image_index,
            )
        )
