"""Settings of the safety layer: :class:`SafetyConfig` and the nested sentinel and rehearsal settings.

Frozen pydantic models (unknown keys are rejected). The parts read thresholds and switches at each use (the drift
monitor once per finished image), so a replaced config changes them at once (a switched drift ``reference``
starts the drift window again); the sizes of the layer's buffers (``signal_history``, ``window``,
``recent_snapshots``, ``sparse_snapshots``) and which parts exist are fixed when :func:`attach_safety` builds the
layer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class SentinelConfig(BaseModel):
    """Settings of the source sentinel (see :mod:`clickadapt.adaptation.safety`).

    Attributes:
        every: Check after every n-th finished image.
        budget: Clicks of the simulated user on each sentinel image; the score is the Dice after the last.
        max_drop: Largest tolerated drop of the sentinel score below the source model's (Dice, 0–1).
        blends: Candidate α of θ_src + α(θ − θ_src), tried from the first; the first within the limit is used
            (0 = back to the source weights, always within it).
        user: Simulated user.
        seed: Seed of the simulated user (combined with each sentinel image's index).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: PositiveInt = 10
    budget: PositiveInt = 5
    max_drop: float = Field(default=0.005, ge=0.0, le=1.0)
    blends: tuple[Annotated[float, Field(ge=0.0, le=1.0)], ...] = Field(default=(0.75, 0.5, 0.25, 0.0), min_length=1)
    user: str = "oaims"
    seed: int = 0


class RehearsalConfig(BaseModel):
    """Settings of the source rehearsal (see :mod:`clickadapt.adaptation.safety`).

    Attributes:
        every: Rehearse after every n-th finished image.
        images: Labelled source images replayed each time (taken in turn from a seeded shuffle).
        user: Simulated user who places the first click on each rehearsed image.
        seed: Seed of the shuffle and of the simulated user.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: PositiveInt = 1
    images: PositiveInt = 1
    user: str = "oaims"
    seed: int = 0


class SafetyConfig(BaseModel):
    """Settings of the safety layer (defaults are the ones the application uses).

    Attributes:
        guard: Check every weight update and undo the abnormal ones.
        max_relative_step: Reject an update whose step ‖Δθ‖ exceeds this fraction of ‖θ‖. Adam moves each
            weight by about the learning rate per step, so normal online steps are 1e-4–1e-2 of ‖θ‖.
        max_step_over_median: Reject an update whose ‖Δθ‖ exceeds this multiple of the median of the last
            accepted steps of the same kind (click or image updates).
        step_median_of: How many recent accepted steps of each kind the median is taken over.
        step_median_after: Accepted steps of a kind needed before the median test applies.
        recent_snapshots: Snapshots kept of the latest finished images (dense part of the history).
        sparse_snapshot_every: Also keep the snapshot of every n-th finished image …
        sparse_snapshots: … the latest this many of them (sparse part of the history, reaching back
            ``sparse_snapshot_every × sparse_snapshots`` images).
        monitor: Watch the ground-truth-free signals of finished images and roll back on drift.
        reference: ``"source"``: compare the first-click agreement with the accepted mask to that of the
            source model on the same images (one extra forward per image); ``"window"``: compare with the
            first ``window`` images after attaching (no extra forward; a harder domain also looks like
            drift).
        window: Images in the sliding window (and in the reference window).
        min_images: Images the window needs before the monitor may fire (also after a rollback).
        max_drop: Fire when the window's mean first-click agreement is this much (Dice, 0–1) below the
            reference.
        min_improvement: A rollback candidate must beat the current weights by this much (mean Dice of
            first-click predictions against the window's accepted masks) to be restored.
        agreement_threshold: Dice with the final mask from which a prediction counts as final (for the
            clicks-to-final signal).
        anchor_rate: λ of the anchor θ ← θ − λ(θ − θ_source) applied after each accepted update; 0 = off.
        sentinel: Source-sentinel settings; used only when labelled source images are given to
            :func:`attach_safety`.
        rehearsal: Source-rehearsal settings; used only when labelled rehearsal images are given to
            :func:`attach_safety`.
        signal_history: Finished images whose signals are kept for reports (oldest dropped first).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    guard: bool = True
    max_relative_step: PositiveFloat = 0.05
    max_step_over_median: PositiveFloat = 20.0
    step_median_of: PositiveInt = 50
    step_median_after: PositiveInt = 10
    recent_snapshots: int = Field(default=4, ge=1)
    sparse_snapshot_every: PositiveInt = 10
    sparse_snapshots: int = Field(default=6, ge=0)
    monitor: bool = True
    reference: Literal["source", "window"] = "source"
    window: int = Field(default=10, ge=2)
    min_images: int = Field(default=5, ge=1)
    max_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    min_improvement: float = Field(default=0.01, ge=0.0, le=1.0)
    agreement_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    anchor_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    sentinel: SentinelConfig = SentinelConfig()
    rehearsal: RehearsalConfig = RehearsalConfig()
    signal_history: PositiveInt = 10_000
