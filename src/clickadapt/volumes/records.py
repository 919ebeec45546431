"""What a volume session records: the user's clicks, its slices, and what taking a click back did.

Plain data shared by :class:`~clickadapt.volumes.session.VolumeSession` and the modules it is built from
(:mod:`~clickadapt.volumes.slice_clicks`, :mod:`~clickadapt.volumes.history`,
:mod:`~clickadapt.volumes.propagation`); all of it is importable from :mod:`clickadapt.volumes.session` as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from clickadapt.clicks.click import Click

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
        source: The slice its propagated mask came from; kept while the user corrects a propagated slice, so
            that it is a propagated slice of that source again once all their clicks on it are taken back.
            ``None`` for a slice never propagated.
        accepted: Whether its after-image update has run since its last user click.
        shown: The plane the slice showed before the user's first click on it (e.g. its propagated mask, in
            upright-slice coordinates), ``None`` when it was empty: what the slice shows again when all the
            user's clicks on it are undone or removed (a forward of its seeds alone may differ: the weights
            may have changed since, and propagation drops components a forward keeps).
    """

    axis: int
    index: int
    origin: Literal["user", "propagated"]
    seeds: list[Click] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    source: int | None = None
    accepted: bool = False
    shown: np.ndarray | None = field(default=None, repr=False, compare=False)
