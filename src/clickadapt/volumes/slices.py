"""One slice of a volume as the network sees it, and back: normalising, preparing, predicting, mapping points.

A slice is shown upright (:mod:`clickadapt.volumes.geometry`), clipped and z-scored with the whole volume's
intensity statistics and padded or cropped to the model's size, exactly like a training slice of the data
readers, by the function the server and the library use for a volume's slice (:mod:`clickadapt.volume_input`).
:func:`predict_clicks` runs one forward of the model on such a slice for automatic clicks (no weight update),
and :func:`adaptation_off` lets the predictor replay clicks without the strategy's per-click update.
:class:`~clickadapt.volumes.session.VolumeSession` uses these with the open volume's statistics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from clickadapt.clicks.click import Click
from clickadapt.clicks.encoding import model_input
from clickadapt.data.prepare import Geometry, PreparedImage, logits_to_source, source_to_model_point
from clickadapt.predictor import Predictor
from clickadapt.volume_input import VolumeIntensities, normalise_volume_slice, prepare_volume_slice
from clickadapt.volumes.geometry import ViewPoint, VolumeOrientation


def normalise_slice(
    data: np.ndarray,
    intensities: VolumeIntensities,
    orientation: VolumeOrientation,
    axis: int,
    index: int,
    brain: np.ndarray | None = None,
) -> np.ndarray:
    """Slice ``index`` across file axis ``axis``, upright, clipped and z-scored with the volume's statistics
    (the intensities the network sees, before padding or cropping to its size;
    :func:`~clickadapt.volume_input.normalise_volume_slice`).

    Args:
        data: The volume's values in file order.
        intensities: Its statistics and background value.
        orientation: The volume's :class:`~clickadapt.volumes.geometry.VolumeOrientation`.
        axis: File axis of the slice.
        index: Slice index along it.
        brain: A brain mask given with the volume (boolean, same shape), or ``None`` for all but the volume's
            background value.
    """
    picture = orientation.slice_view(data, axis, index)
    plane = None if brain is None else orientation.slice_view(brain, axis, index)
    return normalise_volume_slice(picture, intensities, plane)


def prepare_slice(
    data: np.ndarray,
    intensities: VolumeIntensities,
    orientation: VolumeOrientation,
    axis: int,
    index: int,
    size: int,
    brain: np.ndarray | None = None,
) -> PreparedImage:
    """Slice ``index`` across file axis ``axis`` as the network sees it: upright, normalised with the volume's
    statistics and padded or cropped to ``size``, exactly like a training slice of the data readers and a
    volume's slice in the server and the library (:func:`~clickadapt.volume_input.prepare_volume_slice`).

    Args:
        data: The volume's values in file order.
        intensities: Its statistics and background value.
        orientation: The volume's :class:`~clickadapt.volumes.geometry.VolumeOrientation`.
        axis: File axis of the slice.
        index: Slice index along it.
        size: Side of the model's input.
        brain: A brain mask given with the volume, or ``None`` (see :func:`normalise_slice`).
    """
    picture = orientation.slice_view(data, axis, index)
    plane = None if brain is None else orientation.slice_view(brain, axis, index)
    return prepare_volume_slice(picture, intensities, size, plane)


def grid_point_to_voxel(
    geometry: Geometry, orientation: VolumeOrientation, axis: int, index: int, row: int, col: int
) -> tuple[int, int, int]:
    """The voxel ``[i, j, k]`` (file order) shown at ``(row, col)`` of the model's grid for slice ``index``
    across file axis ``axis``: the inverse of the mapping clicks go through (e.g. for stored clicks).

    Args:
        geometry: The slice's geometry (:func:`prepare_slice`).
        orientation: The volume's orientation.
        axis: File axis of the slice.
        index: Slice index along it.
        row: Row of the model's grid.
        col: Column of the model's grid.

    Raises:
        ValueError: A point of the padding (no voxel), outside the grid, or a slice outside the volume.
    """
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
    return orientation.view_to_voxel(ViewPoint(axis, index, source[0], source[1]))


def predict_clicks(
    predictor: Predictor, prepared: PreparedImage, seeds: Sequence[Click]
) -> tuple[np.ndarray | None, list[Click]]:
    """The mask the predictor would show on a prepared slice after the ``seeds`` (one forward, no update),
    and the seeds used: those in the part of the slice the model sees (no mask when there is none).

    Args:
        predictor: Its model, weights and click encoding are used; its session is not touched.
        prepared: The slice (:func:`prepare_slice`).
        seeds: Clicks in the slice's upright coordinates (before padding or cropping).

    Returns:
        The mask in the slice's upright coordinates (``uint8`` classes) or ``None``, and the seeds used.
    """
    used: list[Click] = []
    clicks: list[Click] = []
    for seed in seeds:
        try:
            row, col = source_to_model_point(seed.row, seed.col, prepared.geometry)
        except ValueError:
            continue  # in a margin a centre crop cuts away
        used.append(seed)
        clicks.append(Click(row, col, seed.label))
    if not clicks:
        return None, used
    geometry = prepared.geometry
    state = predictor.state
    image = torch.from_numpy(prepared.pixels).to(state.device)
    inputs = model_input(image, clicks, predictor.task.num_classes, predictor.session.config.click_sigma)
    with state.lock, torch.inference_mode():
        logits = state.model(inputs.unsqueeze(0))
    mask: np.ndarray = logits_to_source(logits[0], geometry).argmax(dim=0).cpu().numpy().astype(np.uint8)
    return mask, used


@contextmanager
def adaptation_off(predictor: Predictor) -> Iterator[None]:
    """Run clicks without the strategy's per-click update (replaying clicks that are not new)."""
    previous = predictor.session.adapt
    predictor.session.adapt = False
    try:
        yield
    finally:
        predictor.session.adapt = previous
