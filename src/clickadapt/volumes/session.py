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
at it. Undoing (or removing) all the user's clicks on such a slice puts back the propagated mask it showed
before them, and it is a propagated slice of its source again.

Clicks made earlier (e.g. stored before a server restart) are put back with :meth:`VolumeSession.restore_clicks`
without any weight update (the weights already hold them); any click can be taken out again with
:meth:`VolumeSession.remove_clicks`, which leaves the session as if it had never been made, as far as the
weights allow (see there).

The session is built in layers, one concern each: :mod:`~clickadapt.volumes.slice_clicks` (the open volume, the
open slice, its clicks and undo), :mod:`~clickadapt.volumes.history` (restoring and removing clicks),
:mod:`~clickadapt.volumes.slices` (a slice as the network sees it, and one forward of it),
:mod:`~clickadapt.volumes.propagation` (the propagation itself) and :mod:`~clickadapt.volumes.records` (the
data the session keeps, re-exported here). :class:`VolumeSession` adds accepting, finishing, saving and
propagating to them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clickadapt.predictor import Predictor
from clickadapt.volumes.history import ClickHistory
from clickadapt.volumes.io import write_label
from clickadapt.volumes.propagation import PropagationConfig, PropagationReport, propagate_slices
from clickadapt.volumes.records import (
    ACCEPTED_REASON,
    DEFAULT_AXIS,
    KEPT_UPDATE_REASON,
    ClickRemoval,
    ClickUndo,
    SliceRecord,
    VolumeClick,
)
from clickadapt.volumes.slices import grid_point_to_voxel

__all__ = [
    "ACCEPTED_REASON",
    "DEFAULT_AXIS",
    "KEPT_UPDATE_REASON",
    "ClickRemoval",
    "ClickUndo",
    "SliceRecord",
    "VolumeClick",
    "VolumeSession",
]


class VolumeSession(ClickHistory):
    """Click-driven segmentation of one volume after another with a 2D predictor; see the module docstring.

    Args:
        predictor: A predictor of a grey (one-channel) model, e.g. ``load_predictor("brain")``; its model
            state (weights, strategy, safety layer) is shared, so the volume adapts the same model.
        propagation: Settings of slice propagation.

    Raises:
        ValueError: A colour model (volumes are grey).
    """

    def __init__(self, predictor: Predictor, propagation: PropagationConfig | None = None) -> None:
        super().__init__(predictor)
        self.propagation = propagation or PropagationConfig()

    # ------------------------------------------------------------------ accepting and saving
    def model_point_to_voxel(self, axis: int, index: int, row: int, col: int) -> tuple[int, int, int]:
        """The voxel ``[i, j, k]`` (file order) shown at ``(row, col)`` of the model's grid for slice ``index``
        across file axis ``axis``: the inverse of the mapping clicks go through (e.g. for stored clicks).

        Raises:
            ValueError: A point of the padding (no voxel), outside the grid, or a slice outside the volume.
        """
        geometry = self.prepared_slice(axis, index).geometry
        return grid_point_to_voxel(geometry, self.orientation, axis, index, row, col)

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
        :mod:`clickadapt.volumes.propagation`). Slices with user clicks are never overwritten.

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
        report = propagate_slices(
            self._label, orientation, self._records, self.propagation, axis, index, self._predict, self.normalised_slice
        )
        if self._open is not None and self._open[0] == axis and self._open[1] in report.written:
            self._open = None  # the predictor's view of it is stale
        return report
