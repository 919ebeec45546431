"""Slices of a volume in its file's own voxel order, shown to the network as the data readers show them.

A volume arrives as stored (NIfTI, NRRD, or what 3D Slicer sends): a 3D array in the file's voxel order and
a 4×4 voxel-to-RAS affine, possibly oblique and in any axis order. Clicks come as voxel indices ``[i, j, k]``
of that array and masks must go back into it. The 2D network, however, was trained on slices of volumes
reoriented to (L, A, S) (:data:`~clickadapt.data.files.SLICING_AXCODES`) and rotated upright
(:func:`~clickadapt.data.files.axial_slice`): anterior at the top, the patient's right on the picture's left.

:class:`VolumeOrientation` maps between the two without resampling: nibabel picks the (L, A, S) axis closest
to each file axis (:func:`nibabel.orientations.io_orientation`, which also handles oblique affines) and the
mapping is a permutation and flips of the axes, so every voxel keeps its value and a mask written back lands
on exactly the voxels it was predicted for. For a slice across the file axis that is closest to S this is
the axial slice of the data readers; across A (coronal) and L (sagittal) the same rule (drop the slicing
axis, keep the other two in L, A, S order, rotate by 90°) puts superior at the top and the patient's right
(coronal) or posterior (sagittal) on the left.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from clickadapt.data.files import SLICING_AXCODES


@dataclass(frozen=True)
class ViewPoint:
    """A voxel as the network sees it: on slice ``index`` across file axis ``axis``, at ``(row, col)`` of
    the upright picture.

    Attributes:
        axis: File axis the slice is taken across (0, 1 or 2).
        index: Slice index along that file axis.
        row: Row of the upright slice picture.
        col: Column of the upright slice picture.
    """

    axis: int
    index: int
    row: int
    col: int


class VolumeOrientation:
    """How a volume's file voxel order relates to the upright slices the network sees.

    Args:
        shape: Shape of the volume as stored (3 axes).
        affine: Its 4×4 voxel-to-world (RAS) affine.

    Raises:
        ValueError: A shape that is not 3D, or an affine that is not 4×4 with an invertible 3×3 part.
    """

    def __init__(self, shape: tuple[int, ...], affine: np.ndarray) -> None:
        if len(shape) != 3:
            raise ValueError(f"a volume has 3 axes, got shape {tuple(shape)}")
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"the affine must be a finite 4×4 matrix, got shape {matrix.shape}")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise ValueError("the affine's 3×3 part is singular: the voxel axes have no orientation")
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.affine = matrix
        codes = nib.orientations.aff2axcodes(matrix)
        self.axcodes: tuple[str, str, str] = (str(codes[0]), str(codes[1]), str(codes[2]))
        # Row d: (axis of the (L, A, S) array that file axis d becomes, +1 kept or -1 flipped).
        self.to_slicing = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(matrix), nib.orientations.axcodes2ornt(SLICING_AXCODES)
        ).astype(np.int64)

    # ------------------------------------------------------------------ whole volumes
    def to_slicing_order(self, volume: np.ndarray) -> np.ndarray:
        """A view of ``volume`` (file order) in (L, A, S) order: writing into the view writes into ``volume``.

        Raises:
            ValueError: ``volume`` does not have the stored shape.
        """
        array = np.asarray(volume)
        if array.shape[:3] != self.shape:
            raise ValueError(f"volume has shape {array.shape}, expected {self.shape}")
        return np.asarray(nib.orientations.apply_orientation(array, self.to_slicing))

    def slicing_shape(self) -> tuple[int, int, int]:
        """Shape of the volume in (L, A, S) order."""
        result = [0, 0, 0]
        for axis, (target, _) in enumerate(self.to_slicing):
            result[int(target)] = self.shape[axis]
        return result[0], result[1], result[2]

    # ------------------------------------------------------------------ slices
    def _slicing_plane(self, axis: int, index: int) -> tuple[int, int]:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a file axis), got {axis}")
        if not 0 <= index < self.shape[axis]:
            raise ValueError(f"slice {index} is outside axis {axis} of the volume (0..{self.shape[axis] - 1})")
        target, flip = (int(v) for v in self.to_slicing[axis])
        return target, index if flip == 1 else self.shape[axis] - 1 - index

    def slice_shape(self, axis: int) -> tuple[int, int]:
        """``(rows, cols)`` of the upright picture of a slice across file axis ``axis``."""
        self._slicing_plane(axis, 0)
        target = int(self.to_slicing[axis, 0])
        first, second = (self.slicing_shape()[a] for a in range(3) if a != target)
        return second, first  # rot90 of a (first, second) plane

    def slice_view(self, volume: np.ndarray, axis: int, index: int) -> np.ndarray:
        """The upright picture of slice ``index`` across file axis ``axis`` (a copy, C-contiguous).

        For the file axis closest to S this equals ``axial_slice(read_nifti(path), s)`` of the data readers,
        ``s`` being the same slice's index in (L, A, S) order.

        Raises:
            ValueError: A wrong axis, index or volume shape.
        """
        target, slicing_index = self._slicing_plane(axis, index)
        plane = np.take(self.to_slicing_order(volume), slicing_index, axis=target)
        return np.ascontiguousarray(np.rot90(plane))

    def write_slice(self, volume: np.ndarray, axis: int, index: int, picture: np.ndarray) -> None:
        """Write an upright picture (e.g. a mask) into slice ``index`` across file axis ``axis`` of ``volume``,
        in place; the inverse of :meth:`slice_view`.

        Raises:
            ValueError: A wrong axis, index, volume shape or picture shape.
        """
        target, slicing_index = self._slicing_plane(axis, index)
        expected = self.slice_shape(axis)
        if np.shape(picture) != expected:
            raise ValueError(f"slice picture has shape {np.shape(picture)}, slice {index} of axis {axis} is {expected}")
        view = self.to_slicing_order(volume)
        if not np.shares_memory(view, volume):
            raise ValueError("volume must be a NumPy array that can be written in place")
        selector: list[int | slice] = [slice(None)] * 3
        selector[target] = slicing_index
        view[tuple(selector)] = np.rot90(np.asarray(picture), k=-1)

    # ------------------------------------------------------------------ points
    def voxel_to_view(self, voxel: tuple[int, int, int] | list[int], axis: int = 2) -> ViewPoint:
        """Where voxel ``[i, j, k]`` (file order) appears on the upright slice across file axis ``axis``.

        Raises:
            ValueError: A voxel outside the volume or a wrong axis.
        """
        point = [int(v) for v in voxel]
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a file axis), got {axis}")
        if len(point) != 3:
            raise ValueError(f"a voxel has 3 indices [i, j, k], got {list(voxel)}")
        for position, (value, length) in enumerate(zip(point, self.shape, strict=True)):
            if not 0 <= value < length:
                raise ValueError(f"voxel {point} is outside the volume of shape {self.shape} (axis {position})")
        target, _ = self._slicing_plane(axis, point[axis])
        slicing = [0, 0, 0]
        for file_axis, (las_axis, flip) in enumerate(self.to_slicing):
            value = point[file_axis]
            slicing[int(las_axis)] = value if flip == 1 else self.shape[file_axis] - 1 - value
        first, second = (a for a in range(3) if a != target)
        rows = self.slicing_shape()[second]
        return ViewPoint(axis=axis, index=point[axis], row=rows - 1 - slicing[second], col=slicing[first])

    def view_to_voxel(self, point: ViewPoint) -> tuple[int, int, int]:
        """The voxel ``[i, j, k]`` (file order) shown at ``(row, col)`` of an upright slice; inverse of
        :meth:`voxel_to_view`.

        Raises:
            ValueError: A point outside the slice or the volume.
        """
        target, slicing_index = self._slicing_plane(point.axis, point.index)
        rows, cols = self.slice_shape(point.axis)
        if not (0 <= point.row < rows and 0 <= point.col < cols):
            raise ValueError(f"({point.row}, {point.col}) is outside the {rows}×{cols} slice")
        first, second = (a for a in range(3) if a != target)
        slicing = [0, 0, 0]
        slicing[target] = slicing_index
        slicing[first] = point.col
        slicing[second] = rows - 1 - point.row
        voxel = [0, 0, 0]
        for file_axis, (las_axis, flip) in enumerate(self.to_slicing):
            value = slicing[int(las_axis)]
            voxel[file_axis] = value if flip == 1 else self.shape[file_axis] - 1 - value
        return voxel[0], voxel[1], voxel[2]
