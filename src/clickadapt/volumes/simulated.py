"""A simulated user for whole volumes, driving a :class:`~clickadapt.volumes.session.VolumeSession`.

Protocol (``"oaims-3d"``), per click:

1. Error volume: voxels whose predicted foreground differs from the ground truth's. Its largest connected
   component (26-connectivity) is where the user looks; the user goes to the slice (across ``axis``) holding
   most of that component's voxels.
2. On that slice, the 2D OAIMS rule (:class:`~clickadapt.clicks.simulators.OaimsUser`): a uniformly random
   pixel of the largest 8-connected error region, labelled with the true class there.
3. Clicking on another slice than the open one accepts the open one (its after-image update runs).
4. With propagation, the clicked slice's mask is propagated after every click (the user sees the propagated
   volume before choosing the next click); slices the user clicked on are never overwritten.

The 3D Dice (foreground) after each click is recorded; the budget is fixed (no early stop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clickadapt.clicks.simulators import OaimsUser, SeedLike
from clickadapt.volumes.geometry import ViewPoint
from clickadapt.volumes.records import DEFAULT_AXIS
from clickadapt.volumes.session import VolumeSession

FULL_CONNECTIVITY_3D = np.ones((3, 3, 3), dtype=bool)


def volume_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of the foreground (class > 0) of two volumes; 1.0 when both are empty."""
    a, b = np.asarray(prediction) > 0, np.asarray(truth) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


@dataclass(frozen=True)
class VolumeClickChoice:
    """The simulated user's next click.

    Attributes:
        voxel: ``(i, j, k)`` in the volume's voxel order.
        label: Class index.
        axis: File axis of the slice clicked on.
    """

    voxel: tuple[int, int, int]
    label: int
    axis: int


class VolumeUser:
    """The ``"oaims-3d"`` protocol of the module docstring.

    Args:
        seed: Seed of the 2D user's generator.
        axis: File axis of the slices the user clicks on.
    """

    name = "oaims-3d"

    def __init__(self, seed: SeedLike = 0, axis: int = DEFAULT_AXIS) -> None:
        self.user = OaimsUser(seed)
        self.axis = axis

    def next_click(self, session: VolumeSession, truth: np.ndarray) -> VolumeClickChoice | None:
        """The next click on ``session``'s volume given the ground truth; ``None`` when nothing is wrong.

        Raises:
            ValueError: ``truth`` of another shape than the volume.
        """
        label = session.label
        truth = np.asarray(truth)
        if truth.shape != label.shape:
            raise ValueError(f"ground truth has shape {truth.shape}, the volume {label.shape}")
        error = (label > 0) != (truth > 0)
        components, count = ndimage.label(error, structure=FULL_CONNECTIVITY_3D)
        if count == 0:
            return None
        areas = np.bincount(components.ravel(), minlength=count + 1)
        areas[0] = 0
        largest = components == int(np.argmax(areas))
        other_axes = tuple(a for a in range(3) if a != self.axis)
        index = int(np.argmax(largest.sum(axis=other_axes)))
        orientation = session.orientation
        truth_view = orientation.slice_view(truth.astype(np.int64), self.axis, index)
        label_view = orientation.slice_view(label, self.axis, index).astype(np.int64)
        click = self.user.next_click(truth_view, label_view)
        if click is None:  # cannot happen: the slice holds error voxels
            return None
        voxel = orientation.view_to_voxel(ViewPoint(self.axis, index, click.row, click.col))
        return VolumeClickChoice(voxel, click.label, self.axis)


def simulate_volume(
    session: VolumeSession, truth: np.ndarray, user: VolumeUser, budget: int, propagate: bool
) -> list[float]:
    """Let ``user`` click ``budget`` times on the open volume of ``session``; accept the last slice at the end.

    Args:
        session: A session with the volume open (:meth:`VolumeSession.set_volume`).
        truth: Ground-truth classes in the volume's voxel order.
        user: The simulated user.
        budget: Clicks.
        propagate: Propagate the clicked slice after every click.

    Returns:
        The 3D Dice after each click (``budget`` values; after a perfect label the last value repeats).
    """
    curve: list[float] = []
    for _ in range(budget):
        choice = user.next_click(session, truth)
        if choice is not None:
            session.add_click(choice.voxel, choice.label, choice.axis)
            if propagate:
                session.propagate(choice.axis, choice.voxel[choice.axis])
        curve.append(volume_dice(session.label, truth))
    session.finish()
    return curve
