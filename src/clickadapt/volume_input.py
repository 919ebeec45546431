"""A slice of a grey (brain) volume as model input: the one preparation every door uses.

The NIfTI data readers (:func:`clickadapt.data.brain.volume_samples`) normalise every training and benchmark
slice with the *whole volume's* brain statistics: clipped to percentiles of the volume's brain voxels,
z-scored with their mean and standard deviation, everything outside the brain set to the lowest brain value,
then centre padded or cropped to ``size × size``. A slice z-scored with its own statistics (as a 2D picture
is, :func:`clickadapt.data.prepare.prepare_image`) differs from that by up to ~2 standard deviations on real
BRATS slices, and so do its masks. So every route that turns a slice of a volume into model input goes
through :class:`VolumeIntensities` and :func:`prepare_volume_slice`:

- the library, :meth:`clickadapt.predictor.Predictor.set_image` with a NIfTI path (:func:`read_nifti_slice`);
- :class:`clickadapt.volumes.VolumeSession`, and with it the MONAI Label (3D Slicer) infer and train routes;
- the web server (:func:`clickadapt.server.images.prepare_source`).

Without the dataset's brain mask (a user's file has none) the brain is every voxel but the volume's
*background value* (:func:`volume_background`): the zeros of a skull-stripped scan (the readers' rule for
MSLUB) or the constant minimum of a z-scored one (BRATS). The only difference left to the readers is then
BRATS's ``brainmask.nii.gz``, which also counts a few thousand in-brain voxels at the volume's minimum as
brain (≤ 0.044 standard deviations on the BRATS test volumes; ``tests/server/test_volume_input_routes.py``).

Light on purpose: NumPy, nibabel and the data modules only, no FastAPI (the library imports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from clickadapt.data.files import NIFTI_SUFFIXES, SLICING_AXCODES, axial_slice, require_file
from clickadapt.data.prepare import BACKGROUND_FRACTION, Geometry, ImageDecodeError, PreparedImage, window_to_uint8
from clickadapt.data.preprocess import (
    DEFAULT_CLIP_PERCENTILES,
    BrainIntensityStats,
    apply_brain_intensity_stats,
    brain_intensity_stats,
    center_pad_or_crop,
    finish_brain_slice,
)

VOLUME_STATS_VOXELS = 256**3
"""Volumes up to this many voxels take their intensity statistics from every voxel (as the data readers do);
larger ones from every k-th stored slab, about this many voxels (:func:`stats_step`), so that the memory of
the statistics stays bounded."""


def stats_step(voxels: int) -> int:
    """Every how many slabs (along the stored last axis) a volume of ``voxels`` voxels is sampled for its
    statistics: 1 (every voxel) up to :data:`VOLUME_STATS_VOXELS`."""
    return max(1, math.ceil(voxels / VOLUME_STATS_VOXELS))


def volume_background(values: np.ndarray) -> float | None:
    """The value of a volume's outside-brain voxels, or ``None`` when every voxel counts as brain.

    Two candidates: 0 (a skull-stripped scan; the data readers' rule for volumes without a brain mask. It need
    not be the minimum: MSLUB's resampling left a few thousand slightly negative voxels) and the volume's
    minimum (the constant negative value of a z-scored volume: BRATS). The one holding more voxels is the
    background when it holds at least :data:`BACKGROUND_FRACTION` of them, and not all of them.

    Args:
        values: The volume's (finite) values, any shape.
    """
    array = np.asarray(values)
    if array.size == 0:
        return None
    minimum = array.min()
    candidates = [minimum] if minimum == 0 else [minimum, array.dtype.type(0)]
    counts = [int(np.count_nonzero(array == value)) for value in candidates]
    best = int(np.argmax(counts))
    if counts[best] >= BACKGROUND_FRACTION * array.size and counts[best] < array.size:
        return float(candidates[best])
    return None


@dataclass(frozen=True)
class VolumeIntensities:
    """How the slices of a grey volume are normalised: with the whole volume's brain statistics, as the NIfTI
    readers do (:func:`clickadapt.data.brain.volume_samples`), not with each slice's own.

    Attributes:
        stats: Clipping bounds, mean and standard deviation of the volume's brain voxels.
        background: The value of the outside-brain voxels (:func:`volume_background`); ``None`` when every
            voxel counts as brain.
    """

    stats: BrainIntensityStats
    background: float | None

    @classmethod
    def of_values(
        cls, values: np.ndarray, clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES
    ) -> VolumeIntensities:
        """The statistics of a volume's voxel values (any shape; non-finite values are left out).

        Raises:
            ImageDecodeError: If no value is finite.
        """
        array = np.asarray(values).ravel()
        if array.dtype.kind == "f":
            array = array[np.isfinite(array)]
        if array.size == 0:
            raise ImageDecodeError("the volume holds no finite value")
        background = volume_background(array)
        brain = np.ones(array.shape, dtype=bool) if background is None else array != background
        return cls(brain_intensity_stats(array, brain, clip_percentiles), background)

    @classmethod
    def of_volume(
        cls, stored: np.ndarray, clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES
    ) -> VolumeIntensities:
        """The statistics of a volume in its file's voxel order: from every voxel, or for a volume above
        :data:`VOLUME_STATS_VOXELS` from every :func:`stats_step`-th slab along its last axis.

        Raises:
            ImageDecodeError: If no value is finite.
        """
        array = np.asarray(stored)
        return cls.of_values(array[..., :: stats_step(array.size)], clip_percentiles)

    def brain(self, picture: np.ndarray) -> np.ndarray:
        """The brain pixels of one of the volume's slices (all but the background value)."""
        values = np.asarray(picture)
        if self.background is None:
            return np.ones(values.shape, dtype=bool)
        return values != self.background


def normalise_volume_slice(
    picture: np.ndarray, intensities: VolumeIntensities, brain: np.ndarray | None = None
) -> np.ndarray:
    """One slice of a grey volume clipped and z-scored with the volume's statistics, outside-brain pixels set
    to the lowest brain value (``float32``, the slice's shape: before padding or cropping).

    Args:
        picture: The upright ``(H, W)`` slice.
        intensities: The volume's statistics.
        brain: The slice of a brain mask given with the volume (e.g. a dataset's); ``None`` = all but the
            volume's background value (:meth:`VolumeIntensities.brain`).
    """
    values = np.asarray(picture)
    return apply_brain_intensity_stats(values, intensities.brain(values) if brain is None else brain, intensities.stats)


def prepare_volume_slice(
    picture: np.ndarray, intensities: VolumeIntensities, size: int, brain: np.ndarray | None = None
) -> PreparedImage:
    """One slice of a grey volume as the NIfTI readers prepare it: clipped and z-scored with the whole volume's
    statistics, the background set to the lowest brain value, centre padded or cropped to ``size × size``.

    Args:
        picture: The upright ``(H, W)`` slice (as :func:`clickadapt.data.files.axial_slice` shows it).
        intensities: The volume's statistics (:meth:`VolumeIntensities.of_volume`).
        size: Side of the output.
        brain: Optional slice of a brain mask given with the volume (:func:`normalise_volume_slice`).

    Returns:
        Model input ``(1, size, size)``, an 8-bit display of the raw slice of the same geometry, and the
        geometry (``slice_index`` and the ``volume_*`` fields left to the caller).
    """
    values = np.asarray(picture)
    normalised = normalise_volume_slice(values, intensities, brain)
    display = window_to_uint8(center_pad_or_crop(values, size, float(values.min())))
    geometry = Geometry(kind="pad-crop", source_shape=(int(values.shape[0]), int(values.shape[1])), size=size)
    return PreparedImage(finish_brain_slice(normalised, size), display, geometry)


def is_nifti_path(path: str | Path) -> bool:
    """Whether a file name ends like a NIfTI volume (``.nii``, ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_volume_input(path: str | Path) -> bool:
    """Whether :func:`read_nifti_slice` reads ``path``: a NIfTI file name, or a folder (a DICOM series)."""
    return is_nifti_path(path) or Path(path).is_dir()


@dataclass(frozen=True)
class VolumeSlice:
    """An axial slice of a NIfTI volume with what its preparation needs.

    Attributes:
        picture: The upright ``(H, W)`` slice in (L, A, S) orientation, as the readers show it.
        intensities: The whole volume's statistics.
        index: The slice's index along S.
    """

    picture: np.ndarray
    intensities: VolumeIntensities
    index: int


def read_nifti_slice(
    path: str | Path,
    slice_index: int | None = None,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
) -> VolumeSlice:
    """Read axial slice ``slice_index`` of a NIfTI volume (or a DICOM series) and the volume's statistics.

    The slice is the readers' (:func:`clickadapt.data.files.read_nifti`, then
    :func:`~clickadapt.data.files.axial_slice`); the statistics are the server's for the same file
    (:meth:`VolumeIntensities.of_volume` of the stored voxels).

    Args:
        path: A ``.nii`` / ``.nii.gz`` file, or a folder holding one DICOM series
            (:func:`clickadapt.volumes.dicom.read_dicom_series`: the same slice as the series saved as NIfTI).
        slice_index: Axial slice in (L, A, S) orientation; default the middle one.
        clip_percentiles: Clipping range of the statistics.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It cannot be decoded, is not 3D, or the slice is outside the volume (naming the file).
    """
    series = Path(path).is_dir()
    image: Any  # a Nifti1Image, or whatever nibabel loads (typed as its base class)
    if series:
        from clickadapt.volumes.dicom import read_dicom_series

        image = read_dicom_series(path)  # its errors name the folder or the file
    else:
        path = require_file(Path(path), "NIfTI file")
    try:
        if not series:
            image = nib.load(str(path))
        stored = np.asanyarray(image.dataobj)
        while stored.ndim > 3 and stored.shape[-1] == 1:
            stored = stored[..., 0]
        if stored.ndim != 3:
            raise ValueError(f"expected a 3D volume, got shape {stored.shape}")
        transform = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(image.affine),
            nib.orientations.axcodes2ornt(SLICING_AXCODES),
        )
        volume = np.asarray(nib.orientations.apply_orientation(stored, transform))
    except Exception as error:  # nibabel/gzip/zlib raise many unrelated types
        raise ValueError(f"cannot read {'DICOM series' if series else 'NIfTI file'} {path}: {error}") from error
    slices = int(volume.shape[-1])
    index = slices // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < slices:
        raise ValueError(f"slice {index} is outside {path} (0..{slices - 1})")
    try:
        intensities = VolumeIntensities.of_volume(stored, clip_percentiles)
    except ImageDecodeError as error:
        raise ValueError(f"{path}: {error}") from error
    return VolumeSlice(axial_slice(volume, index), intensities, index)
