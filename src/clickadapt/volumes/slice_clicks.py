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

Clicks made earlier (e.g. stored before a server restart) are put back with :meth:`VolumeSession.restore_clicks`
without any weight update (the weights already hold them); any click can be taken out again with
:meth:`VolumeSession.remove_clicks`, which leaves the session as if it had never been made, as far as the
weights allow (see there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
from clickadapt.volumes.geometry import ViewPoint, VolumeOrientation
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


@dataclass(frozen=True)
class ClickUndo:
    """What taking a click back did to the weights.

    Attributes:
        click: The click taken back.
        restored_weights: Whether the weights (and strategy state) went back to before its update.
        reason: A sentence saying why (or why not).
    """

    click: VolumeClick
    restored_weights: bool
    reason: str


@dataclass(frozen=True)
class ClickRemoval:
    """The outcome of :meth:`VolumeSession.remove_clicks`.

    Attributes:
        removed: One entry per removed click, in click order.
        dropped: Positions (in the click list before the call, ascending) taken off the session: the removed
            clicks and the later clicks of the open slice undone to be added again.
        reapplied: The later clicks added again after the removal, in order (they are now the last clicks).
        reapplied_with_update: How many of those ran the strategy's per-click update again (their earlier
            update had been taken back, or they had none); the others were replayed without update because
            their earlier update stays in the weights.
    """

    removed: tuple[ClickUndo, ...]
    dropped: tuple[int, ...]
    reapplied: tuple[VolumeClick, ...]
    reapplied_with_update: int


KEPT_UPDATE_REASON = (
    "the click changed the weights earlier (before a server restart, or before it was added again after a "
    "removal) and was replayed without update; there is no snapshot of the weights before that update, so the "
    "weights keep it"
)
"""Why undoing a restored (replayed) click that had changed the weights keeps them."""
ACCEPTED_REASON = (
    "its slice was accepted after it (after-image update), so its weight update cannot be taken back; the weights "
    "keep it"
)
"""Why removing a click of an accepted slice keeps the weights."""


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
        self._prior, self.last_undo = [], None
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
        if prior is None:
            mask = self.predictor.add_click(point.row, point.col, class_index)
        else:
            with _adaptation_off(self.predictor):
                mask = self.predictor.add_click(point.row, point.col, class_index)
        click = Click(point.row, point.col, class_index)
        record.clicks.append(click)
        record.origin, record.source, record.accepted = "user", None, False
        self._new_clicks += 1
        self._clicks.append(VolumeClick(orientation.view_to_voxel(point), class_index, axis))
        self._prior.append(prior)
        assert self._label is not None
        orientation.write_slice(self._label, axis, point.index, mask.astype(np.uint8))
        return self._label.copy()

    def undo(self) -> np.ndarray:
        """Remove the last click on the open slice (and its weight update when possible, see the predictor).

        :attr:`last_undo` says whether the weights went back. A restored click (:meth:`restore_clicks`) or one
        added with ``adapt=False`` has no snapshot: its earlier update, if any, stays in the weights.

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
        shape = self.orientation.slice_shape(axis)
        picture = np.zeros(shape, np.uint8) if mask is None else mask.astype(np.uint8)
        self.orientation.write_slice(self._label, axis, index, picture)
        if not record.clicks:
            record.origin = "propagated" if record.seeds else "user"
        return self._label.copy()

    def restore_clicks(self, clicks: Sequence[VolumeClick], prior_updates: Sequence[bool] | None = None) -> np.ndarray:
        """Put back clicks made earlier on this volume (e.g. stored before a server restart) without any weight
        update: the weights already hold their per-click and after-image updates.

        The clicks are taken in the order they were made. Every clicked slice but the last click's is an
        accepted user slice whose plane is one forward of its clicks with the current weights (no update). The
        last click's slice is left open with its clicks replayed without update; its clicks since it was last
        entered (the trailing run of the list) are its new, undoable clicks, and its after-image update runs
        when it is accepted, as it would have. Undoing a restored click cannot restore weights (there is no
        snapshot): :attr:`last_undo` says so. Propagated slices are not restored (their seeds were not kept).

        Args:
            clicks: The user clicks, in order (voxels in file order).
            prior_updates: Per click, whether its update changed the weights when it was made (an undo then
                says the update stays); default ``True`` for each (the cautious answer).

        Returns:
            The label volume (a copy).

        Raises:
            ValueError: Without a volume, on a session that already has clicks, for a voxel outside the
                volume or a margin the model does not see, an unknown class or axis, or ``prior_updates`` of
                another length.
        """
        orientation = self.orientation
        assert self._label is not None
        if self._clicks or self._records:
            raise ValueError("restore_clicks needs a session without clicks (call it right after set_volume)")
        priors: list[bool | None] = [True] * len(clicks) if prior_updates is None else [bool(v) for v in prior_updates]
        if len(priors) != len(clicks):
            raise ValueError(f"prior_updates has {len(priors)} entries for {len(clicks)} clicks")
        if not clicks:
            return self._label.copy()
        records: dict[tuple[int, int], SliceRecord] = {}
        restored: list[VolumeClick] = []
        keys: list[tuple[int, int]] = []
        geometries: dict[tuple[int, int], Geometry] = {}
        for click in clicks:
            point = orientation.voxel_to_view(tuple(int(v) for v in click.voxel), click.axis)  # type: ignore[arg-type]
            class_index = self._class_index(click.label)
            key = (click.axis, point.index)
            if key not in geometries:
                geometries[key] = self.prepared_slice(*key).geometry
            source_to_model_point(point.row, point.col, geometries[key])  # raises in a cropped margin
            record = records.setdefault(key, SliceRecord(click.axis, point.index, "user", accepted=True))
            record.clicks.append(Click(point.row, point.col, class_index))
            restored.append(VolumeClick(orientation.view_to_voxel(point), class_index, click.axis))
            keys.append(key)
        last = keys[-1]
        trailing = 0
        while trailing < len(keys) and keys[-1 - trailing] == last:
            trailing += 1
        self._records, self._clicks, self._prior = records, restored, priors
        for key, record in records.items():
            if key != last:
                self._write_plane(key, record)
        self._open, self._new_clicks = None, 0
        with _adaptation_off(self.predictor):  # no begin-image hook either: the slice is not new to the model
            self._open_slice(*last)  # replays its clicks without update
        self._new_clicks = trailing
        records[last].accepted = False
        self._write_plane(last, records[last])
        return self._label.copy()

    def remove_clicks(
        self, positions: Iterable[int], on_reapplied: Callable[[VolumeClick], None] | None = None
    ) -> ClickRemoval:
        """Take clicks out (positions in :attr:`clicks`) so that the session is as if they had never been made,
        as far as the weights allow.

        - A click of the open slice made since it was last entered: the slice's clicks are undone back to (and
          including) it, each undo restoring the weights when the predictor still can (:meth:`undo`); the later
          clicks that stay are then added again, with the per-click update when theirs was taken back (or they
          had none), without it when theirs stays in the weights (no update is learnt twice).
        - A click of a slice accepted since (another slice, or the open slice before it was last left): its
          update and the slice's after-image update stay in the weights (:data:`ACCEPTED_REASON`); it is taken
          off its slice, whose plane becomes one forward of the remaining clicks (no update; empty when none is
          left). Clicks on other slices do not depend on it and stay as they are. When it is a click of the
          open slice, the slice's later clicks are undone and added again as above, on top of the remaining
          earlier ones.

        Args:
            positions: Indices into :attr:`clicks` (duplicates ignored).
            on_reapplied: Called after each click added again, while it is the predictor's latest click (e.g.
                to store it with its timing).

        Returns:
            What was removed, undone and added again.

        Raises:
            ValueError: Without a volume, or a position that is not a click's.
        """
        self.volume  # noqa: B018
        targets = sorted({int(position) for position in positions})
        if not targets:
            return ClickRemoval((), (), (), 0)
        if targets[0] < 0 or targets[-1] >= len(self._clicks):
            raise ValueError(f"click positions must lie in 0..{len(self._clicks) - 1}, got {targets}")
        count = len(self._clicks)
        keys = [self._slice_key(click) for click in self._clicks]
        run_start = count - self._new_clicks if self._open is not None else count
        open_key = self._open
        rebuild_open = any(position < run_start and keys[position] == open_key for position in targets)
        in_run = [position for position in targets if position >= run_start]
        undo_from = run_start if rebuild_open else (in_run[0] if in_run else count)
        removed: dict[int, ClickUndo] = {}
        again: list[tuple[VolumeClick, bool]] = []  # (click, its update stays in the weights), last first
        while len(self._clicks) > undo_from:
            position = len(self._clicks) - 1
            click = self._clicks[position]
            changed = self._changed_weights(position)
            self.undo()
            assert self.last_undo is not None
            if position in targets:
                removed[position] = self.last_undo
            else:
                again.append((click, changed and not self.last_undo.restored_weights))
        affected: set[tuple[int, int]] = set()
        for position in reversed([position for position in targets if position < undo_from]):
            key = keys[position]
            record = self._records[key]
            within = sum(1 for earlier in range(position) if keys[earlier] == key)
            record.clicks.pop(within)
            click = self._clicks.pop(position)
            self._prior.pop(position)
            removed[position] = ClickUndo(click, False, ACCEPTED_REASON)
            affected.add(key)
        for key in affected:
            record = self._records[key]
            if key == self._open:
                self._open, self._new_clicks = None, 0  # its run was undone above; re-enter it below
            if record.clicks or record.seeds:
                if not record.clicks:
                    record.origin = "propagated"
                self._write_plane(key, record)
            else:
                self._write_plane(key, None)
                del self._records[key]
        if open_key in affected and open_key in self._records and self._records[open_key].clicks:
            with _adaptation_off(self.predictor):  # no begin-image hook either: the slice is not new
                self._open_slice(*open_key)  # the remaining earlier clicks, replayed without update
        with_update = 0
        reapplied: list[VolumeClick] = []
        for click, stays in reversed(again):
            self._add_click(click.voxel, click.label, click.axis, prior=True if stays else None)
            with_update += int(not stays)
            reapplied.append(self._clicks[-1])
            if on_reapplied is not None:
                on_reapplied(self._clicks[-1])
        dropped = sorted({*targets, *range(undo_from, count)})
        return ClickRemoval(
            tuple(removed[position] for position in targets), tuple(dropped), tuple(reapplied), with_update
        )

    def model_point_to_voxel(self, axis: int, index: int, row: int, col: int) -> tuple[int, int, int]:
        """The voxel ``[i, j, k]`` (file order) shown at ``(row, col)`` of the model's grid for slice ``index``
        across file axis ``axis``: the inverse of the mapping clicks go through (e.g. for stored clicks).

        Raises:
            ValueError: A point of the padding (no voxel), outside the grid, or a slice outside the volume.
        """
        geometry = self.prepared_slice(axis, index).geometry
        size = geometry.size
        if not (0 <= row < size and 0 <= col < size):
            raise ValueError(f"({row}, {col}) is outside the model's {size}×{size} grid")
        source = []
        for value, length in zip((row, col), geometry.source_shape, strict=True):
            offset = (size - length) // 2 if length <= size else -((length - size) // 2)
            source.append(value - offset)
        height, width = geometry.source_shape
        if geometry.kind != "pad-crop" or not (0 <= source[0] < height and 0 <= source[1] < width):
            raise ValueError(f"({row}, {col}) of the model's grid shows no voxel of slice {index} (axis {axis})")
        if source_to_model_point(source[0], source[1], geometry) != (row, col):
            raise ValueError(f"({row}, {col}) of the model's grid does not map back onto one voxel")
        return self.orientation.view_to_voxel(ViewPoint(axis, index, source[0], source[1]))

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

    def _slice_key(self, click: VolumeClick) -> tuple[int, int]:
        """``(axis, index)`` of the slice a click was made on."""
        return click.axis, click.voxel[click.axis]

    def _changed_weights(self, position: int) -> bool:
        """Whether the update of the open slice's click at ``position`` (one of its run) is in the weights."""
        prior = self._prior[position]
        if prior is not None:
            return prior
        reports = self.predictor.session.reports
        offset = len(self._clicks) - position  # its predictor record, counted from the end
        report = reports[-offset] if offset <= len(reports) else None
        return report is not None and report.updated

    def _write_plane(self, key: tuple[int, int], record: SliceRecord | None) -> None:
        """Write a slice's plane: one forward (no update) of its seeds and clicks, or empty."""
        axis, index = key
        assert self._label is not None
        mask = None
        if record is not None:
            mask, _used = self._predict(axis, index, [*record.seeds, *record.clicks])
        picture = np.zeros(self.orientation.slice_shape(axis), np.uint8) if mask is None else mask.astype(np.uint8)
        self.orientation.write_slice(self._label, axis, index, picture)

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
