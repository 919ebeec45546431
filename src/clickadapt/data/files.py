"""Reading image files with errors that name the file: PNG/JPEG/TIFF pictures and NIfTI volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image

TIFF_SUFFIXES = (".tif", ".tiff")
# Brain volumes are reoriented to this (radiological) orientation before slicing, so that every
# NIfTI reader shows the same anatomy the same way whatever the file's own axis order.
SLICING_AXCODES = ("L", "A", "S")


def require_file(path: Path, what: str = "file") -> Path:
    """Return ``path`` if it is an existing file.

    Raises:
        FileNotFoundError: Naming ``what`` and the path.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: Path, what: str = "folder") -> Path:
    """Return ``path`` if it is an existing folder.

    Raises:
        FileNotFoundError: Naming ``what`` and the path.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_picture(path: Path, mode: str | None = None) -> np.ndarray:
    """Read a PNG/JPEG (Pillow) or TIFF (tifffile) file into a NumPy array.

    Args:
        path: The file.
        mode: Optional Pillow mode to convert to (``"RGB"``, ``"L"``); for TIFF ``"L"`` keeps the first
            channel and ``"RGB"`` requires three channels.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded (naming it and the decoder's complaint).
    """
    require_file(path, "image file")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = np.asarray(tifffile.imread(path))
            if mode == "L" and array.ndim == 3:
                array = array[..., 0]
            elif mode == "RGB" and (array.ndim != 3 or array.shape[-1] < 3):
                raise ValueError(f"expected 3 channels, got shape {array.shape}")
            elif mode == "RGB":
                array = array[..., :3]
            return array
        with Image.open(path) as picture:
            picture.load()
            converted = picture.convert(mode) if mode is not None and picture.mode != mode else picture
            return np.asarray(converted)
    except Exception as error:  # decoders raise many unrelated types; report them all with the path
        raise ValueError(f"cannot read image file {path}: {error}") from error


def read_nifti(path: Path, axcodes: tuple[str, str, str] = SLICING_AXCODES) -> np.ndarray:
    """Read a 3D NIfTI volume reoriented to ``axcodes`` (default L, A, S: axial slices on the last axis).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file cannot be decoded or is not 3D (naming it).
    """
    require_file(path, "NIfTI file")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)  # type: ignore[attr-defined]
        if data.ndim == 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"expected a 3D volume, got shape {data.shape}")
        transform = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(image.affine),  # type: ignore[attr-defined]
            nib.orientations.axcodes2ornt(axcodes),
        )
        return np.asarray(nib.orientations.apply_orientation(data, transform))
    except Exception as error:  # nibabel/gzip/zlib raise many unrelated types
        raise ValueError(f"cannot read NIfTI file {path}: {error}") from error


def axial_slice(volume: np.ndarray, index: int) -> np.ndarray:
    """Axial slice ``index`` of an (L, A, S) volume, shown upright: anterior at the top, the patient's
    right on the left of the picture (radiological convention). Also accepts a stack of chosen slices
    ``volume[:, :, chosen]`` with ``index`` counting within the stack."""
    return np.ascontiguousarray(np.rot90(volume[:, :, index]))


def check_same_shape(
    image_path: Path, image_shape: tuple[int, ...], mask_path: Path, mask_shape: tuple[int, ...]
) -> None:
    """Raise ``ValueError`` naming both files and shapes when image and mask sizes differ."""
    if tuple(image_shape) != tuple(mask_shape):
        raise ValueError(
            f"image and mask sizes differ: {image_path} has shape {tuple(image_shape)}, "
            f"{mask_path} has shape {tuple(mask_shape)}"
        )


NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_image_2d(path: Path, slice_index: int | None = None) -> np.ndarray:
    """A 2D image from a file: a PNG/JPEG/TIFF picture, or an axial slice of a NIfTI volume.

    Args:
        path: The file.
        slice_index: For a NIfTI volume, the axial slice (in L, A, S orientation; default the middle one);
            must be ``None`` for a picture.

    Returns:
        ``(H, W)`` grey or ``(H, W, 3)`` RGB values as stored (NIfTI slices upright, see :func:`axial_slice`).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It cannot be decoded, the slice is outside the volume, or a slice index was given for a
            picture (naming the file).
    """
    path = Path(path)
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        volume = read_nifti(path)
        slices = int(volume.shape[-1])
        index = slices // 2 if slice_index is None else slice_index
        if not 0 <= index < slices:
            raise ValueError(f"slice {index} is outside {path} (0..{slices - 1})")
        return axial_slice(volume, index)
    if slice_index is not None:
        raise ValueError(f"{path} is a 2D picture; it has no slices")
    array = read_picture(path)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]  # drop alpha
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"{path}: expected a grey or RGB picture, got an array of shape {array.shape}")
    return array
