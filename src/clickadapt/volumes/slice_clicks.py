"""Clicks on a volume one slice at a time: the open slice, its clicks and undo, accepting it.

:class:`SliceClicks` holds the open volume, its label volume and the session's bookkeeping (the user's clicks
in order, a :class:`~clickadapt.volumes.records.SliceRecord` per slice clicked on or propagated, the slice the
predictor has open). A click opens its slice in the :class:`~clickadapt.predictor.Predictor` (accepting the
previously open slice: its after-image update runs) and replays the slice's seeds and earlier clicks without
update, so that the prediction continues from the mask on screen; the slice's prediction replaces that plane
of the label volume. Undoing all the user's clicks on a slice puts back what it showed before the first of
them (a propagated slice's propagated mask). It is the base of :class:`~clickadapt.volumes.history.ClickHistory` and
:class:`~clickadapt.volumes.session.VolumeSession`, which is what to use (see there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clickadapt.clicks.click import Click
from clickadapt.data.prepare import PreparedImage
from clickadapt.data.preprocess import BrainIntensityStats, brain_intensity_stats, resolve_brain_mask
from clickadapt.predictor import Predictor
from clickadapt.volume_input import VolumeIntensities, stats_step, volume_background
from clickadapt.volumes.geometry import VolumeOrientation
from clickadapt.volumes.io import Volume
from clickadapt.volumes.records import DEFAULT_AXIS, KEPT_UPDATE_REASON, ClickUndo, SliceRecord, VolumeClick
from clickadapt.volumes.slices import adaptation_off, normalise_slice, predict_clicks, prepare_slice


class SliceClicks:
    """The open volume and the user's clicks on its slices, one open slice at a time; see the module docstring.

    Args:
        predictor: A predictor of a grey (one-channel) model; its model state is shared.

    Raises:
        ValueError: A colour model (volumes are grey).
    """

    def __init__(self, predictor: Predictor) -> None:
        if predictor.task.image_channels != 1:
            raise ValueError(f"volumes need a grey model; task {predictor.task.name!r} takes colour pictures")
        self.predictor = predictor
        self.volume_id = ""
        self._volume: Volume | None = None
        self._orientation: VolumeOrientation | None = None
        self._brain: np.ndarray | None = None  # a brain mask given with the volume, if any
        self._intensities: VolumeIntensities | None = None
        self._label: np.ndarray | None = None
        self._records: dict[tuple[int, int], SliceRecord] = {}
        self._clicks: list[VolumeClick] = []
        self._open: tuple[int, int] | None = None
        self._new_clicks = 0  # user clicks on the open slice since it was opened (undoable, to be accepted)
        # Per click: None when this session applied it normally (the predictor knows its update); for a click
        # replayed without update (restored), whether an earlier update of it stays in the weights.
        self._prior: list[bool | None] = []
        self.last_undo: ClickUndo | None = None
        """What the latest :meth:`undo` did to the weights."""

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
            brain_mask: Boolean brain voxels, same shape (e.g. a dataset's brain mask); ``None`` = all but the
                volume's background value (:func:`~clickadapt.volume_input.volume_background`: the zeros of a
                skull-stripped scan, the constant minimum of a z-scored one such as BRATS's), as the server
                and :meth:`~clickadapt.predictor.Predictor.set_image` decide for the same file.
            intensity_stats: Clipping and z-score parameters to use instead of the volume's own (e.g. those of
                a whole volume of which ``volume`` is a crop); default: computed from the brain voxels with the
                model's clipping percentiles (:class:`~clickadapt.volume_input.VolumeIntensities`).
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
        clip = self.predictor.meta.preprocessing.clip_percentiles
        brain: np.ndarray | None = None
        if brain_mask is not None:
            brain = resolve_brain_mask(data, brain_mask)
            stats = intensity_stats if intensity_stats is not None else brain_intensity_stats(data, brain, clip)
            intensities = VolumeIntensities(stats, None)
        elif intensity_stats is not None:
            intensities = VolumeIntensities(intensity_stats, volume_background(data[..., :: stats_step(data.size)]))
        else:
            intensities = VolumeIntensities.of_volume(data, clip)
        self._accept_open()
        self._volume, self._orientation, self._brain, self._intensities = volume, orientation, brain, intensities
        self._label = np.zeros(data.shape, dtype=np.uint8)
        self._records, self._clicks, self._open, self._new_clicks = {}, [], None, 0
        self._prior, self.last_undo = [], None
        self.volume_id = volume_id

    def normalised_slice(self, axis: int, index: int) -> np.ndarray:
        """Slice ``index`` across file axis ``axis``, upright, clipped and z-scored with the volume's statistics
        (the intensities the network sees, before padding or cropping to its size)."""
        orientation = self.orientation
        assert self._intensities is not None
        return normalise_slice(self.volume.data, self._intensities, orientation, axis, index, self._brain)

    def prepared_slice(self, axis: int, index: int) -> PreparedImage:
        """Slice ``index`` across file axis ``axis`` as the network sees it: upright, normalised with the
        volume's statistics and padded or cropped, exactly like a training slice of the data readers."""
        orientation = self.orientation
        assert self._intensities is not None
        size = self.predictor.image_size
        return prepare_slice(self.volume.data, self._intensities, orientation, axis, index, size, self._brain)

    # ------------------------------------------------------------------ clicks
    def add_click(
        self, voxel: Sequence[int], label: int | str = 1, axis: int = DEFAULT_AXIS, *, adapt: bool = True
    ) -> np.ndarray:
        """Click voxel ``[i, j, k]`` (file order) on its slice across ``axis`` and segment that slice.

        Clicking on another slice than the open one accepts the open one first (its after-image update runs;
        no propagation). The slice's prediction replaces that plane of the label volume.

        Args:
            voxel: ``[i, j, k]`` in the file's voxel order.
            label: Class index or name (0 / ``"background"`` for a negative click).
            axis: File axis of the slice (default the last: MONAI Label's ``slice: k``).
            adapt: ``False`` segments without the strategy's per-click update (a click whose update the
                weights already hold); an undo of it then says the update cannot be taken back.

        Returns:
            The label volume (a copy, ``uint8``, the volume's shape and voxel order).

        Raises:
            ValueError: Without a volume, a voxel outside it or in a margin the model does not see, an unknown
                class or axis.
        """
        return self._add_click(voxel, label, axis, prior=None if adapt else True)

    def _add_click(self, voxel: Sequence[int], label: int | str, axis: int, prior: bool | None) -> np.ndarray:
        """:meth:`add_click`; ``prior`` not ``None``: replay without update, the click's earlier update being
        (``True``) or not being (``False``) in the weights."""
        orientation = self.orientation
        class_index = self._class_index(label)
        point = orientation.voxel_to_view(tuple(int(v) for v in voxel), axis)  # type: ignore[arg-type]
        record = self._open_slice(axis, point.index)
        assert self._label is not None
        if not record.clicks:  # the user's first click on it: keep what it shows (put back when undone)
            plane = orientation.slice_view(self._label, axis, point.index)
            record.shown = plane if plane.any() else None
        if prior is None:
            mask = self.predictor.add_click(point.row, point.col, class_index)
        else:
            with adaptation_off(self.predictor):
                mask = self.predictor.add_click(point.row, point.col, class_index)
        click = Click(point.row, point.col, class_index)
        record.clicks.append(click)
        record.origin, record.accepted = "user", False
        self._new_clicks += 1
        self._clicks.append(VolumeClick(orientation.view_to_voxel(point), class_index, axis))
        self._prior.append(prior)
        orientation.write_slice(self._label, axis, point.index, mask.astype(np.uint8))
        return self._label.copy()

    def undo(self) -> np.ndarray:
        """Remove the last click on the open slice (and its weight update when possible, see the predictor).

        :attr:`last_undo` says whether the weights went back. A restored click (:meth:`restore_clicks`) or one
        added with ``adapt=False`` has no snapshot: its earlier update, if any, stays in the weights.

        Returns:
            The label volume (a copy); the slice shows the remaining clicks' mask, or when none of the user's
            clicks on it is left, what it showed before the first of them (e.g. its propagated mask: it is a
            propagated slice again; empty for a slice that was empty).

        Raises:
            ValueError: No click on the open slice since it was opened.
        """
        if self._open is None or self._new_clicks == 0:
            raise ValueError("no click to undo on the open slice")
        axis, index = self._open
        record = self._records[self._open]
        mask = self.predictor.undo()
        outcome = self.predictor.session.last_undo
        record.clicks.pop()
        click = self._clicks.pop()
        prior = self._prior.pop()
        if prior is None:
            restored = outcome is not None and outcome.restored_weights
            reason = outcome.reason if outcome is not None else "the click did not change the weights"
            self.last_undo = ClickUndo(click, restored, reason)
        else:
            reason = KEPT_UPDATE_REASON if prior else "the click did not change the weights"
            self.last_undo = ClickUndo(click, False, reason)
        self._new_clicks -= 1
        assert self._label is not None
        if record.clicks:
            shape = self.orientation.slice_shape(axis)
            picture = np.zeros(shape, np.uint8) if mask is None else mask.astype(np.uint8)
            self.orientation.write_slice(self._label, axis, index, picture)
        else:
            self._write_shown(self._open, record)
        return self._label.copy()

    # ------------------------------------------------------------------ helpers
    def _predict(self, axis: int, index: int, seeds: Sequence[Click]) -> tuple[np.ndarray | None, list[Click]]:
        """The mask the predictor would show on slice ``index`` after the ``seeds`` (one forward, no update),
        and the seeds used: those in the part of the slice the model sees (no mask when there is none)."""
        if not seeds:
            return None, []
        return predict_clicks(self.predictor, self.prepared_slice(axis, index), seeds)

    def _class_index(self, label: int | str) -> int:
        task = self.predictor.task
        if isinstance(label, str):
            return task.class_index(label)
        index = int(label)
        if not 0 <= index < task.num_classes:
            raise ValueError(f"class {index} is not a class of task {task.name!r} (0..{task.num_classes - 1})")
        return index

    def _write_plane(self, key: tuple[int, int], record: SliceRecord | None) -> None:
        """Write a slice's plane: one forward (no update) of its seeds and clicks, or empty."""
        axis, index = key
        assert self._label is not None
        mask = None
        if record is not None:
            mask, _used = self._predict(axis, index, [*record.seeds, *record.clicks])
        picture = np.zeros(self.orientation.slice_shape(axis), np.uint8) if mask is None else mask.astype(np.uint8)
        self.orientation.write_slice(self._label, axis, index, picture)

    def _write_shown(self, key: tuple[int, int], record: SliceRecord) -> None:
        """Put back what a slice without user clicks (any more) showed before the first of them: its propagated
        mask (it is a propagated slice again) or whatever else it showed, not a forward of its seeds alone (the
        weights may have changed since, and propagation drops components a forward keeps)."""
        axis, index = key
        assert self._label is not None
        shape = self.orientation.slice_shape(axis)
        picture = np.zeros(shape, np.uint8) if record.shown is None else record.shown
        self.orientation.write_slice(self._label, axis, index, picture)
        record.shown = None
        record.origin = "propagated" if record.seeds else "user"

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
        with adaptation_off(self.predictor):
            for click in (*record.seeds, *record.clicks):
                self.predictor.add_click(click.row, click.col, click.label)
        self._open, self._new_clicks = key, 0
        return record
