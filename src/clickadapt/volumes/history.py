"""The click list edited after the fact: clicks put back after a restart, clicks taken out again.

Clicks made earlier (e.g. stored before a server restart) are put back with :meth:`ClickHistory.restore_clicks`
without any weight update (the weights already hold them); any click can be taken out again with
:meth:`ClickHistory.remove_clicks`, which leaves the session as if it had never been made, as far as the weights
allow (see there). MONAI Label clients (3D Slicer point lists) send their whole click list every time, so the
server uses both (:mod:`clickadapt.server.monailabel.bridge`). :class:`ClickHistory` is the base of
:class:`~clickadapt.volumes.session.VolumeSession`, which is what to use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from clickadapt.clicks.click import Click
from clickadapt.data.prepare import Geometry, source_to_model_point
from clickadapt.volumes.records import ACCEPTED_REASON, ClickRemoval, ClickUndo, SliceRecord, VolumeClick
from clickadapt.volumes.slice_clicks import SliceClicks
from clickadapt.volumes.slices import adaptation_off


class ClickHistory(SliceClicks):
    """:class:`~clickadapt.volumes.slice_clicks.SliceClicks` with clicks restored and removed; see the module
    docstring."""

    def restore_clicks(self, clicks: Sequence[VolumeClick], prior_updates: Sequence[bool] | None = None) -> np.ndarray:
        """Put back clicks made earlier on this volume (e.g. stored before a server restart) without any weight
        update: the weights already hold their per-click and after-image updates.

        The clicks are taken in the order they were made. Every clicked slice but the last click's is an
        accepted user slice whose plane is one forward of its clicks with the current weights (no update). The
        last click's slice is left open with its clicks replayed without update; its clicks since it was last
        entered (the trailing run of the list) are its new, undoable clicks, and its after-image update runs
        when it is accepted, as it would have. Undoing a restored click cannot restore weights (there is no
        snapshot): :attr:`last_undo` says so. Propagated slices are not restored (their seeds and masks were
        not kept): a restored slice the user had clicked on after it was propagated is a user slice whose plane is
        a forward of their clicks alone, and taking all of them back empties it (what it showed before them is
        not known). Within a session, taking back every click of a propagated slice puts its propagated mask
        back (:meth:`undo`, :meth:`remove_clicks`).

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
        with adaptation_off(self.predictor):  # no begin-image hook either: the slice is not new to the model
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
          off its slice, whose plane becomes one forward of its seeds and remaining clicks (no update), or when
          none of the user's clicks is left, what it showed before the first of them (a propagated slice's
          propagated mask: it is a propagated slice again; empty for a slice that was empty). Clicks on other
          slices do not depend on it and stay as they are. When it is a click of the open slice, the slice's
          later clicks are undone and added again as above, on top of the remaining earlier ones.

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
            if record.clicks:
                self._write_plane(key, record)
            else:  # what it showed before the user's first click on it (e.g. its propagated mask)
                self._write_shown(key, record)
                if not record.seeds:
                    del self._records[key]
        if open_key in affected and open_key in self._records and self._records[open_key].clicks:
            with adaptation_off(self.predictor):  # no begin-image hook either: the slice is not new
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
