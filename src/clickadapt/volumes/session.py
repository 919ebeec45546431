"""Segment a volume by clicks on its slices with the 2D network, and propagate accepted slices.

::

    from clickadapt import load_predictor
    from clickadapt.volumes import VolumeSession, read_volume

    session = VolumeSession(load_predictor("brain", adapt="oaims"))
    session.set_volume(read_volume("flair.nii.gz"))           # file voxel order and affine kept
    label = session.add_click([120, 96, 70], "lesion")          # voxel [i, j, k]; slice k of the last axis
    label = session.add_click([118, 90, 70], 0)                 # a correction on the same slice
    report = session.accept()                                   # after-image update, then propagation
    session.add_click([119, 94, 81], 0)                         # correct a propagated slice like any other
    session.save_label("label.nii.gz")                          # the image's exact shape and affine

Each slice is one image of the :class:`~clickadapt.predictor.Predictor`: it is normalised with the whole
volume's intensity statistics and shown upright exactly as the data readers show training slices
(:mod:`clickadapt.volumes.geometry`), user clicks run the strategy's per-click update (Mid-Interaction for
``oaims``), and accepting a slice (explicitly, or by clicking on another slice) runs its after-image update
(Post-Interaction). Propagated slices are predicted with the current weights and no update: their seed clicks
are automatic, not the user's. A user click on a propagated slice replays its seeds (without update) first,
so the correction starts from the mask on screen; that slice then belongs to the user and propagation stops
at it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import model_input
from clickadapt.data.prepare import Geometry, PreparedImage, logits_to_source, source_to_model_point, window_to_uint8
from clickadapt.data.preprocess import (
    BrainIntensityStats,
    apply_brain_intensity_stats,
    brain_intensity_stats,
    finish_brain_slice,
    resolve_brain_mask,
)
from clickadapt.predictor import Predictor
from clickadapt.volumes.geometry import VolumeOrientation
from clickadapt.volumes.io import Volume, write_label
from clickadapt.volumes.propagation import (
    LesionIntensity,
    PropagationConfig,
    PropagationReport,
    foreground_dice,
    keep_overlapping,
    seed_clicks,
)

DEFAULT_AXIS = 2
"""Slices are taken across the last file axis unless told otherwise (MONAI Label's ``slice: k``)."""


@dataclass(frozen=True)
class VolumeClick:
    """A user click on a volume.

    Attributes:
        voxel: ``(i, j, k)`` in the file's voxel order.
        label: Class index.
        axis: File axis of the slice it was made on.
    """

    voxel: tuple[int, int, int]
    label: int
    axis: int


@dataclass
class SliceRecord:
    """What the session knows about one slice.

    Attributes:
        axis: File axis the slice is across.
        index: Its index along that axis.
        origin: ``"user"`` (clicked by the user) or ``"propagated"``.
        seeds: Automatic seed clicks (upright-slice coordinates) of its propagation, replayed before the
            user's clicks when the user corrects it.
        clicks: The user's clicks on it, upright-slice coordinates, in order.
        source: For a propagated slice, the slice it was propagated from.
        accepted: Whether its after-image update has run since its last user click.
    """

    axis: int
    index: int
    origin: Literal["user", "propagated"]
    seeds: list[Click] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    source: int | None = None
    accepted: bool = False


@contextmanager
def _adaptation_off(predictor: Predictor) -> Iterator[None]:
    """Run clicks without the strategy's per-click update (replaying clicks that are not new)."""
    previous = predictor.session.adapt
    predictor.session.adapt = False
    try:
        yield
    finally:
        predictor.session.adapt = previous


class VolumeSession:
    """Click-driven segmentation of one volume after another with a 2D predictor; see the module docstring.

    Args:
        predictor: A predictor of a grey (one-channel) model, e.g. ``load_predictor("brain")``; its model
            state (weights, strategy, safety layer) is shared, so the volume adapts the same model.
        propagation: Settings of slice propagation.

    Raises:
        ValueError: A colour model (volumes are grey).
    """

    def __init__(self, predictor: Predictor, propagation: PropagationConfig | None = None) -> None:
        if predictor.task.image_channels != 1:
            raise ValueError(f"volumes need a grey model; task {predictor.task.name!r} takes colour pictures")
        self.predictor = predictor
        self.propagation = propagation or PropagationConfig()
        self.volume_id = ""
        self._volume: Volume | None = None
        self._orientation: VolumeOrientation | None = None
        self._brain: np.ndarray | None = None
        self._stats: BrainIntensityStats | None = None
        self._label: np.ndarray | None = None
        self._records: dict[tuple[int, int], SliceRecord] = {}
        self._clicks: list[VolumeClick] = []
        self._open: tuple[int, int] | None = None
        self._new_clicks = 0  # user clicks on the open slice since it was opened (undoable, to be accepted)

    # ------------------------------------------------------------------ read-only views
    @property
    def volume(self) -> Volume:
        """The open volume (file order).

        Raises:
            ValueError: Before :meth:`set_volume`.
        """
        if self._volume is None:
            raise ValueError("no volume is open; call set_volume(volume) first")
        return self._volume

    @property
    def orientation(self) -> VolumeOrientation:
        """How the open volume's voxel order maps onto the upright slices."""
        self.volume  # noqa: B018 - raises without a volume
        assert self._orientation is not None
        return self._orientation

    @property
    def label(self) -> np.ndarray:
        """The label volume ``uint8`` in the volume's shape and voxel order (a read-only view; copy to keep)."""
        self.volume  # noqa: B018
        assert self._label is not None
        view = self._label.view()
        view.setflags(write=False)
        return view

    @property
    def clicks(self) -> list[VolumeClick]:
        """The user's clicks on the volume, in order (MONAI Label clients send this whole list every time)."""
        return list(self._clicks)

    @property
    def open_slice(self) -> tuple[int, int] | None:
        """``(axis, index)`` of the slice the predictor has open, if any."""
        return self._open

    @property
    def slices(self) -> dict[tuple[int, int], SliceRecord]:
        """Records of the slices clicked on or propagated, by ``(axis, index)`` (a copy of the mapping)."""
        return dict(self._records)

    # ------------------------------------------------------------------ volume
    def set_volume(
        self,
        volume: Volume,
        brain_mask: np.ndarray | None = None,
        intensity_stats: BrainIntensityStats | None = None,
        volume_id: str = "",
    ) -> None:
        """Open a volume (an unaccepted slice of the previous one is accepted first) with an empty label.

        Args:
            volume: Values and affine in the file's voxel order (:func:`~clickadapt.volumes.io.read_volume`).
            brain_mask: Boolean brain voxels, same shape; ``None`` = the non-zero voxels (as the readers do for
                skull-stripped volumes without a mask).
            intensity_stats: Clipping and z-score parameters to use instead of the volume's own (e.g. those of
                a whole volume of which ``volume`` is a crop); default: computed from the brain voxels with the
                model's clipping percentiles.
            volume_id: A name for logs and safety events.

        Raises:
            ValueError: A volume that is not 3D, non-finite, with a wrong affine or a brain mask of another
                shape.
        """
        data = np.asarray(volume.data)
        if data.ndim != 3 or min(data.shape) < 1:
            raise ValueError(f"a volume has 3 non-empty axes, got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
            raise ValueError("the volume must hold finite numbers")
        orientation = VolumeOrientation(data.shape, volume.affine)
        brain = resolve_brain_mask(data, brain_mask)
        clip = self.predictor.meta.preprocessing.clip_percentiles
        stats = intensity_stats if intensity_stats is not None else brain_intensity_stats(data, brain, clip)
        self._accept_open()
        self._volume, self._orientation, self._brain, self._stats = volume, orientation, brain, stats
        self._label = np.zeros(data.shape, dtype=np.uint8)
        self._records, self._clicks, self._open, self._new_clicks = {}, [], None, 0
        self.volume_id = volume_id

    def normalised_slice(self, axis: int, index: int) -> np.ndarray:
        """Slice ``index`` across file axis ``axis``, upright, clipped and z-scored with the volume's statistics
        (the intensities the network sees, before padding or cropping to its size)."""
        orientation = self.orientation
        assert self._brain is not None and self._stats is not None
        picture = orientation.slice_view(self.volume.data, axis, index)
        return apply_brain_intensity_stats(picture, orientation.slice_view(self._brain, axis, index), self._stats)

    def prepared_slice(self, axis: int, index: int) -> PreparedImage:
        """Slice ``index`` across file axis ``axis`` as the network sees it: upright, normalised with the
        volume's statistics and padded or cropped, exactly like a training slice of the data readers."""
        normalised = self.normalised_slice(axis, index)
        size = self.predictor.image_size
        pixels = finish_brain_slice(normalised, size)
        geometry = Geometry(
            kind="pad-crop", source_shape=(int(normalised.shape[0]), int(normalised.shape[1])), size=size
        )
        return PreparedImage(pixels, window_to_uint8(pixels[0]), geometry)

    # ------------------------------------------------------------------ clicks
    def add_click(self, voxel: Sequence[int], label: int | str = 1, axis: int = DEFAULT_AXIS) -> np.ndarray:
        """Click voxel ``[i, j, k]`` (file order) on its slice across ``axis`` and segment that slice.

        Clicking on another slice than the open one accepts the open one first (its after-image update runs;
        no propagation). The slice's prediction replaces that plane of the label volume.

        Args:
            voxel: ``[i, j, k]`` in the file's voxel order.
            label: Class index or name (0 / ``"background"`` for a negative click).
            axis: File axis of the slice (default the last: MONAI Label's ``slice: k``).

        Returns:
            The label volume (a copy, ``uint8``, the volume's shape and voxel order).

        Raises:
            ValueError: Without a volume, a voxel outside it or in a margin the model does not see, an unknown
                class or axis.
        """
        orientation = self.orientation
        class_index = self._class_index(label)
        point = orientation.voxel_to_view(tuple(int(v) for v in voxel), axis)  # type: ignore[arg-type]
        record = self._open_slice(axis, point.index)
        mask = self.predictor.add_click(point.row, point.col, class_index)
        click = Click(point.row, point.col, class_index)
        record.clicks.append(click)
        record.origin, record.source, record.accepted = "user", None, False
        self._new_clicks += 1
        self._clicks.append(VolumeClick(orientation.view_to_voxel(point), class_index, axis))
        assert self._label is not None
        orientation.write_slice(self._label, axis, point.index, mask.astype(np.uint8))
        return self._label.copy()

    def undo(self) -> np.ndarray:
        """Remove the last click on the open slice (and its weight update when possible, see the predictor).

        Returns:
            The label volume (a copy); the slice shows the remaining clicks' mask (empty when none is left).

        Raises:
            ValueError: No click on the open slice since it was opened.
        """
        if self._open is None or self._new_clicks == 0:
            raise ValueError("no click to undo on the open slice")
        axis, index = self._open
        record = self._records[self._open]
        mask = self.predictor.undo()
        record.clicks.pop()
        self._clicks.pop()
        self._new_clicks -= 1
        assert self._label is not None
        shape = self.orientation.slice_shape(axis)
        picture = np.zeros(shape, np.uint8) if mask is None else mask.astype(np.uint8)
        self.orientation.write_slice(self._label, axis, index, picture)
        if not record.clicks:
            record.origin = "propagated" if record.seeds else "user"
        return self._label.copy()

    def accept(self, propagate: bool = True) -> PropagationReport | None:
        """Accept the open slice: run its after-image update (when it has new clicks), then propagate from it.

        Returns:
            The propagation's report, or ``None`` when ``propagate`` is false.

        Raises:
            ValueError: No slice is open.
        """
        if self._open is None:
            raise ValueError("no slice is open; click on a slice first")
        axis, index = self._open
        self._accept_open()
        return self.propagate(axis, index) if propagate else None

    def finish(self, label: np.ndarray | None = None) -> np.ndarray:
        """Accept the open slice (no propagation) and return the label volume (a copy).

        Args:
            label: The label volume the user accepted, when it is not the session's own (e.g. edited in a
                viewer and saved back): integer classes in the volume's shape and voxel order. It becomes the
                session's label, and the open slice's after-image update learns from its plane of it.

        Raises:
            ValueError: Without a volume, or a label of another shape or with classes the task does not have.
        """
        self.volume  # noqa: B018
        assert self._label is not None
        if label is not None:
            accepted = np.asarray(label)
            if accepted.shape != self.volume.shape:
                raise ValueError(f"label has shape {accepted.shape}, the volume {self.volume.shape}")
            classes = self.predictor.task.num_classes
            if accepted.dtype.kind not in "iub" or (
                accepted.size and not 0 <= int(accepted.min()) <= int(accepted.max()) < classes
            ):
                raise ValueError(f"the label must hold class indices 0..{classes - 1}")
            self._label = accepted.astype(np.uint8, copy=True)
            record = self._records.get(self._open) if self._open is not None else None
            if self._open is not None and self._new_clicks > 0 and record is not None and not record.accepted:
                axis, index = self._open
                self.predictor.finish(self.orientation.slice_view(self._label, axis, index).astype(np.int64))
                record.accepted = True
                self._open, self._new_clicks = None, 0
        self._accept_open()
        return self._label.copy()

    def save_label(self, path: str | Path) -> Path:
        """Write the label volume with the volume's exact shape, voxel order and affine (NIfTI or NRRD by the
        file ending)."""
        return write_label(path, self.label, self.volume)

    # ------------------------------------------------------------------ propagation
    def propagate(self, axis: int | None = None, index: int | None = None) -> PropagationReport:
        """Propagate the mask of a slice to its neighbours in both directions (module docstring of
        :mod:`clickadapt.volumes.propagation`). Slices the user clicked on are never overwritten.

        Args:
            axis: File axis; default the open slice's (with ``index``: the last axis).
            index: Slice to propagate from; default the open slice.

        Returns:
            What was written, cleared, and why each direction stopped.

        Raises:
            ValueError: No slice given and none open, or a slice outside the volume.
        """
        if index is None:
            if self._open is None or axis not in (None, self._open[0]):
                raise ValueError("no slice of that axis is open; give the axis and index to propagate from")
            axis, index = self._open
        elif axis is None:
            axis = DEFAULT_AXIS
        orientation = self.orientation
        assert self._label is not None
        source_mask = orientation.slice_view(self._label, axis, index)  # validates axis and index
        config = self.propagation
        written: list[int] = []
        cleared: list[int] = []
        stops: dict[int, str] = {}
        forwards = 0
        reference = (
            None
            if config.max_intensity_shift is None
            else LesionIntensity.of(self.normalised_slice(axis, index), source_mask)
        )
        for direction in (1, -1):
            previous = source_mask
            position = index + direction
            steps = 0
            reason = "edge"
            while 0 <= position < orientation.shape[axis]:
                record = self._records.get((axis, position))
                if record is not None and record.origin == "user":
                    reason = "user slice"
                    break
                if config.max_slices is not None and steps >= config.max_slices:
                    reason = "limit"
                    break
                mask, seeds = self._predict(
                    axis, position, seed_clicks(previous, config.max_seeds, config.min_seed_area)
                )
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
                    and reference.shift(self.normalised_slice(axis, position), mask) > config.max_intensity_shift
                ):
                    reason = "faded"
                    break
                current = orientation.slice_view(self._label, axis, position)
                if (
                    record is not None
                    and config.converged_dice is not None
                    and foreground_dice(mask, current) >= config.converged_dice
                ):
                    reason = "converged"
                    break
                orientation.write_slice(self._label, axis, position, mask.astype(np.uint8))
                self._records[(axis, position)] = SliceRecord(axis, position, "propagated", seeds, source=index)
                if self._open == (axis, position):
                    self._open = None  # the predictor's view of it is stale
                written.append(position)
                previous = mask
                position += direction
                steps += 1
            stops[direction] = reason
            if reason in ("vanished", "diverged", "faded"):
                cleared.extend(self._clear_propagated(axis, position, direction, index))
        return PropagationReport(axis, index, tuple(written), tuple(cleared), stops, forwards)

    def _clear_propagated(self, axis: int, start: int, direction: int, source: int) -> list[int]:
        """Empty the run of slices from ``start`` on that an earlier propagation from ``source`` wrote."""
        cleared = []
        position = start
        assert self._label is not None
        while 0 <= position < self.orientation.shape[axis]:
            record = self._records.get((axis, position))
            if record is None or record.origin != "propagated" or record.source != source:
                break
            shape = self.orientation.slice_shape(axis)
            self.orientation.write_slice(self._label, axis, position, np.zeros(shape, np.uint8))
            del self._records[(axis, position)]
            cleared.append(position)
            position += direction
        return cleared

    def _predict(self, axis: int, index: int, seeds: Sequence[Click]) -> tuple[np.ndarray | None, list[Click]]:
        """The mask the predictor would show on slice ``index`` after the ``seeds`` (one forward, no update),
        and the seeds used: those in the part of the slice the model sees (no mask when there is none)."""
        prepared = self.prepared_slice(axis, index) if seeds else None
        used: list[Click] = []
        clicks: list[Click] = []
        for seed in seeds:
            assert prepared is not None
            try:
                row, col = source_to_model_point(seed.row, seed.col, prepared.geometry)
            except ValueError:
                continue  # in a margin a centre crop cuts away
            used.append(seed)
            clicks.append(Click(row, col, seed.label))
        if prepared is None or not clicks:
            return None, used
        geometry = prepared.geometry
        state = self.predictor.state
        image = torch.from_numpy(prepared.pixels).to(state.device)
        inputs = model_input(image, clicks, self.predictor.task.num_classes, self.predictor.session.config.click_sigma)
        with state.lock, torch.inference_mode():
            logits = state.model(inputs.unsqueeze(0))
        mask: np.ndarray = logits_to_source(logits[0], geometry).argmax(dim=0).cpu().numpy().astype(np.uint8)
        return mask, used

    # ------------------------------------------------------------------ helpers
    def _class_index(self, label: int | str) -> int:
        task = self.predictor.task
        if isinstance(label, str):
            return task.class_index(label)
        index = int(label)
        if not 0 <= index < task.num_classes:
            raise ValueError(f"class {index} is not a class of task {task.name!r} (0..{task.num_classes - 1})")
        return index

    def _accept_open(self) -> None:
        """Run the open slice's after-image update if it has user clicks not yet accepted; close it."""
        if self._open is None:
            return
        record = self._records.get(self._open)
        if self._new_clicks > 0 and record is not None and not record.accepted:
            self.predictor.finish()
            record.accepted = True
        self._open, self._new_clicks = None, 0

    def _open_slice(self, axis: int, index: int) -> SliceRecord:
        """Open slice ``(axis, index)`` in the predictor (accepting another open slice first), replaying its
        seeds and earlier clicks without update so that its prediction continues from the mask on screen."""
        key = (axis, index)
        if self._open == key:
            return self._records[key]
        self._accept_open()
        record = self._records.get(key)
        if record is None:
            record = SliceRecord(axis, index, "user")
            self._records[key] = record
        self.predictor.set_prepared(self.prepared_slice(axis, index), image_id=f"{self.volume_id}[{axis}:{index}]")
        with _adaptation_off(self.predictor):
            for click in (*record.seeds, *record.clicks):
                self.predictor.add_click(click.row, click.col, click.label)
        self._open, self._new_clicks = key, 0
        return record
