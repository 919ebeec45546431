"""Slice propagation: settings, automatic seed clicks, and what a propagation did.

After a slice is accepted, :meth:`~clickadapt.volumes.session.VolumeSession.propagate` segments its
neighbours one after the other in both directions. The network takes only an image and clicks, so the
previous slice's mask enters each neighbour's prediction as *seed clicks*: one positive click at the deepest
interior pixel (Euclidean distance transform maximum) of each of the previous mask's largest components, in
their class. Components of the new prediction that do not overlap the previous mask are dropped (a lesion
continues from slice to slice; a blob elsewhere is a false positive). Propagation in a direction stops when
the lesion vanishes (no seed, or a mask smaller than :attr:`PropagationConfig.min_area`), when the new mask
no longer resembles the previous one (Dice below :attr:`PropagationConfig.min_dice`), when the new mask no
longer looks like the accepted lesion (its mean normalised intensity is more than
:attr:`PropagationConfig.max_intensity_shift` of the source lesion's standard deviations away from the source
lesion's mean: "faded"), at a slice with user clicks, at the volume's edge, or when a slice already shows
(nearly) the same mask (nothing beyond it would change).

Why the intensity rule: a click-driven network answers a positive seed click with a blob wherever the click
lands, so past a lesion's end neither the area nor the Dice with the previous slice drop (measured on BRATS
validation volumes with the shipped brain model: blobs of 100-900 pixels with Dice 0.5-0.9 to the previous
slice on every lesion-free slice). The lesion's intensity does drop there. The threshold's default was tuned on
BRATS *validation* volumes (``bench/propagation_tuning.py`` → ``bench/results/propagation_tuning.md``), never on
the test volumes of ``bench/results/volumes.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from clickadapt.clicks.click import Click
from clickadapt.clicks.simulators import EIGHT_CONNECTIVITY, distance_to_boundary
from clickadapt.volumes.geometry import VolumeOrientation
from clickadapt.volumes.records import SliceRecord


class PropagationConfig(BaseModel):
    """How slice propagation seeds and stops.

    Attributes:
        max_seeds: Seed clicks per slice: one per component of the previous mask, largest first.
        min_seed_area: Components of the previous mask smaller than this (pixels) give no seed.
        min_area: A propagated mask with fewer foreground pixels than this means the lesion has vanished.
        min_dice: A propagated mask whose Dice with the previous slice's mask is below this is not kept and
            stops the direction (the prediction lost the lesion).
        converged_dice: Stop when the slice already holds a propagated mask with at least this Dice with
            the new one (what lies beyond was propagated from nearly the same mask); ``None`` = never.
        max_slices: At most this many slices per direction; ``None`` = up to the volume's edge.
        keep_overlapping_only: Drop components of the new mask that do not overlap the previous mask.
        max_intensity_shift: A propagated mask whose mean normalised intensity lies more than this many
            standard deviations of the source slice's lesion intensities from their mean is not kept and stops
            the direction ("faded": the lesion ended); ``None`` = no intensity rule.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_seeds: int = Field(default=3, ge=1)
    min_seed_area: int = Field(default=4, ge=1)
    min_area: int = Field(default=10, ge=1)
    min_dice: float = Field(default=0.3, ge=0.0, le=1.0)
    converged_dice: float | None = Field(default=0.98, ge=0.0, le=1.0)
    max_slices: int | None = Field(default=None, ge=1)
    keep_overlapping_only: bool = True
    max_intensity_shift: float | None = Field(default=1.5, gt=0.0)  # bench/results/propagation_tuning.md


@dataclass(frozen=True)
class PropagationReport:
    """What one propagation did.

    Attributes:
        axis: File axis of the slices.
        source: Index of the slice propagated from.
        written: Slice indices written, in the order they were predicted.
        cleared: Slices emptied because an earlier propagation from ``source`` had reached them and this
            one stopped before them.
        stops: Why each direction stopped: ``{+1: reason, -1: reason}``, reason one of ``"edge"``,
            ``"user slice"``, ``"vanished"``, ``"diverged"``, ``"faded"``, ``"converged"``, ``"limit"``.
        forwards: Network forwards run.
    """

    axis: int
    source: int
    written: tuple[int, ...]
    cleared: tuple[int, ...]
    stops: dict[int, str]
    forwards: int


def foreground_dice(first: np.ndarray, second: np.ndarray) -> float:
    """Dice of the foreground (class > 0) of two masks; 1.0 when both are empty."""
    a, b = np.asarray(first) > 0, np.asarray(second) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def seed_clicks(mask: np.ndarray, max_seeds: int = 3, min_area: int = 4) -> list[Click]:
    """Positive clicks at the interior of a mask's components: the deepest pixel of each, largest first.

    Args:
        mask: ``(H, W)`` classes (0 = background).
        max_seeds: At most this many clicks.
        min_area: Components smaller than this give no click.

    Returns:
        Clicks ``(row, col, class)`` in ``mask``'s coordinates, one per component (8-connected, per class),
        by decreasing area; ties in depth go to the first pixel in raster order.
    """
    labels = np.asarray(mask)
    found: list[tuple[int, Click]] = []
    for class_index in (int(c) for c in np.unique(labels) if c > 0):
        components, count = ndimage.label(labels == class_index, structure=EIGHT_CONNECTIVITY)
        if count == 0:
            continue
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for index in range(1, count + 1):
            if areas[index] < min_area:
                continue
            depth = distance_to_boundary(components == index)
            row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
            found.append((int(areas[index]), Click(int(row), int(col), class_index)))
    found.sort(key=lambda item: -item[0])
    return [click for _, click in found[:max_seeds]]


def keep_overlapping(mask: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``mask`` without the foreground components (8-connected) that do not touch ``previous``'s foreground."""
    labels = np.asarray(mask)
    components, count = ndimage.label(labels > 0, structure=EIGHT_CONNECTIVITY)
    if count == 0:
        return labels.copy()
    touching = np.unique(components[(np.asarray(previous) > 0) & (components > 0)])
    return np.where(np.isin(components, touching), labels, 0).astype(labels.dtype)


MIN_LESION_SPREAD = 0.25
"""Floor of the source lesion's intensity standard deviation (z-score units) in the "faded" rule, so that a
uniform lesion does not stop propagation at the first slice of slightly different brightness."""


@dataclass(frozen=True)
class LesionIntensity:
    """Mean and spread of the normalised intensities under a mask (the "faded" stop rule's reference)."""

    mean: float
    spread: float

    @classmethod
    def of(cls, pixels: np.ndarray, mask: np.ndarray) -> LesionIntensity | None:
        """The intensities of ``pixels`` under ``mask``'s foreground; ``None`` for an empty mask."""
        values = np.asarray(pixels)[np.asarray(mask) > 0]
        if values.size == 0:
            return None
        return cls(float(values.mean()), max(float(values.std()), MIN_LESION_SPREAD))

    def shift(self, pixels: np.ndarray, mask: np.ndarray) -> float:
        """How many spreads the mean of ``pixels`` under ``mask`` lies from this mean (``inf`` when empty)."""
        values = np.asarray(pixels)[np.asarray(mask) > 0]
        return float("inf") if values.size == 0 else abs(float(values.mean()) - self.mean) / self.spread


SlicePredictor = Callable[[int, int, Sequence[Click]], tuple[np.ndarray | None, list[Click]]]
"""``(axis, index, seeds) -> (mask or None, seeds used)``: one forward of slice ``index`` after the seeds."""


def propagate_slices(
    label: np.ndarray,
    orientation: VolumeOrientation,
    records: dict[tuple[int, int], SliceRecord],
    config: PropagationConfig,
    axis: int,
    index: int,
    predict: SlicePredictor,
    normalised_slice: Callable[[int, int], np.ndarray],
) -> PropagationReport:
    """Propagate the mask of a slice to its neighbours in both directions (module docstring). Slices with
    user clicks are never overwritten.

    Args:
        label: The label volume (file order), written in place.
        orientation: The volume's orientation.
        records: The session's slice records by ``(axis, index)``, updated in place: written slices become
            propagated records with their seeds, cleared ones are removed.
        config: Propagation settings.
        axis: File axis of the slices.
        index: Slice to propagate from.
        predict: One forward (no update) of a slice after seed clicks.
        normalised_slice: ``(axis, index) ->`` the slice's normalised intensities (the "faded" rule).

    Returns:
        What was written, cleared, and why each direction stopped.

    Raises:
        ValueError: A slice outside the volume.
    """
    source_mask = orientation.slice_view(label, axis, index)  # validates axis and index
    written: list[int] = []
    cleared: list[int] = []
    stops: dict[int, str] = {}
    forwards = 0
    reference = (
        None if config.max_intensity_shift is None else LesionIntensity.of(normalised_slice(axis, index), source_mask)
    )
    for direction in (1, -1):
        previous = source_mask
        position = index + direction
        steps = 0
        reason = "edge"
        while 0 <= position < orientation.shape[axis]:
            record = records.get((axis, position))
            if record is not None and record.origin == "user" and record.clicks:  # not when all were undone
                reason = "user slice"
                break
            if config.max_slices is not None and steps >= config.max_slices:
                reason = "limit"
                break
            mask, seeds = predict(axis, position, seed_clicks(previous, config.max_seeds, config.min_seed_area))
            forwards += int(mask is not None)
            if mask is not None and config.keep_overlapping_only:
                mask = keep_overlapping(mask, previous)
            if mask is None or int((mask > 0).sum()) < config.min_area:
                reason = "vanished"
                break
            if foreground_dice(mask, previous) < config.min_dice:
                reason = "diverged"
                break
            if (
                reference is not None
                and config.max_intensity_shift is not None
                and reference.shift(normalised_slice(axis, position), mask) > config.max_intensity_shift
            ):
                reason = "faded"
                break
            current = orientation.slice_view(label, axis, position)
            if (
                record is not None
                and config.converged_dice is not None
                and foreground_dice(mask, current) >= config.converged_dice
            ):
                reason = "converged"
                break
            orientation.write_slice(label, axis, position, mask.astype(np.uint8))
            records[(axis, position)] = SliceRecord(axis, position, "propagated", seeds, source=index)
            written.append(position)
            previous = mask
            position += direction
            steps += 1
        stops[direction] = reason
        if reason in ("vanished", "diverged", "faded"):
            cleared.extend(clear_propagated(label, orientation, records, axis, position, direction, index))
    return PropagationReport(axis, index, tuple(written), tuple(cleared), stops, forwards)


def clear_propagated(
    label: np.ndarray,
    orientation: VolumeOrientation,
    records: dict[tuple[int, int], SliceRecord],
    axis: int,
    start: int,
    direction: int,
    source: int,
) -> list[int]:
    """Empty the run of slices from ``start`` on (going ``direction``, +1 or -1) that an earlier propagation
    from ``source`` wrote: in ``label`` and ``records`` (both in place); returns their indices."""
    cleared = []
    position = start
    while 0 <= position < orientation.shape[axis]:
        record = records.get((axis, position))
        if record is None or record.origin != "propagated" or record.source != source:
            break
        shape = orientation.slice_shape(axis)
        orientation.write_slice(label, axis, position, np.zeros(shape, np.uint8))
        del records[(axis, position)]
        cleared.append(position)
        position += direction
    return cleared
