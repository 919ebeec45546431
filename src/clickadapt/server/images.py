"""Decoding uploads and data-folder files into what the model sees, and mapping masks back onto the source.

Formats are recognised by their content (magic bytes), never by the file name alone: PNG, JPEG, TIFF
(Pillow / tifffile), NIfTI-1/2, optionally gzipped (nibabel) and DICOM (pydicom). NIfTI volumes and
multi-frame DICOM are *volumes*: one 2D image is made per chosen axial slice.

Preprocessing reuses :mod:`clickadapt.data.preprocess`, so the server feeds the model exactly what the
readers fed it in training: brain slices are z-scored inside the brain and centre padded or cropped to
``size × size``; fundus photographs are resized to ``size × size`` and z-scored per channel. NIfTI
slices are taken like the readers take them (reoriented to L, A, S, then the axial slice rotated
upright, :func:`clickadapt.data.files.axial_slice`), and :class:`Geometry` records how to undo every step,
so an exported NIfTI mask lands on the source voxels with the source affine.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np
import tifffile
from PIL import Image

from clickadapt.data.files import SLICING_AXCODES, axial_slice

# Preprocessing and geometry live in the library (the predictor uses them too); re-exported for the server.
from clickadapt.data.prepare import BACKGROUND_FRACTION as BACKGROUND_FRACTION
from clickadapt.data.prepare import DISPLAY_PERCENTILES as DISPLAY_PERCENTILES
from clickadapt.data.prepare import Geometry as Geometry
from clickadapt.data.prepare import ImageDecodeError as ImageDecodeError
from clickadapt.data.prepare import PreparedImage as PreparedImage
from clickadapt.data.prepare import display_from_pixels as display_from_pixels
from clickadapt.data.prepare import guess_brain_mask as guess_brain_mask
from clickadapt.data.prepare import mask_to_source as mask_to_source
from clickadapt.data.prepare import prepare_image as prepare_image
from clickadapt.data.prepare import to_grey as to_grey
from clickadapt.data.prepare import window_to_uint8 as window_to_uint8
from clickadapt.tasks import TaskSpec

ImageFormat = Literal["png", "jpeg", "tiff", "nifti", "dicom"]
SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 64, 64),
    (64, 160, 255),
    (64, 220, 96),
    (255, 200, 0),
)
"""Overlay colours by class index (background is transparent)."""


class UnsupportedFormatError(ValueError):
    """An upload or data file is of a format the server does not read."""


@dataclass
class DecodedSource:
    """A decoded file before preprocessing.

    Attributes:
        format: The detected format.
        kind: ``"image"`` (2D) or ``"volume"``.
        array: 2D ``(H, W)`` grey or ``(H, W, 3)`` RGB image; for volumes the volume reoriented to L, A, S
            (axial slices on the last axis).
        affine: NIfTI affine (volumes from NIfTI only).
        volume_shape: Stored (un-reoriented) shape of a NIfTI volume.
        axcodes: Stored orientation of a NIfTI volume.
    """

    format: ImageFormat
    kind: Literal["image", "volume"]
    array: np.ndarray
    affine: np.ndarray | None = None
    volume_shape: tuple[int, ...] | None = None
    axcodes: tuple[str, str, str] | None = None

    @property
    def num_slices(self) -> int | None:
        """Number of axial slices of a volume, ``None`` for 2D images."""
        return int(self.array.shape[-1]) if self.kind == "volume" else None

    def slice(self, index: int) -> np.ndarray:
        """The upright 2D axial slice ``index`` of a volume.

        Raises:
            ValueError: If this is not a volume or the index is out of range.
        """
        if self.kind != "volume" or self.num_slices is None:
            raise ValueError("only volumes have slices")
        if not 0 <= index < self.num_slices:
            raise ValueError(f"slice {index} is outside the volume (0..{self.num_slices - 1})")
        return axial_slice(self.array, index)


def has_supported_suffix(name: str) -> bool:
    """Whether a file name ends with a suffix the server reads (case-insensitive)."""
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def detect_format(payload: bytes, filename: str = "") -> ImageFormat:
    """Recognise a file's format from its first bytes.

    Raises:
        UnsupportedFormatError: naming the file, when the content is none of the supported formats.
    """
    head = payload[:512]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x1f\x8b"):
        return "nifti"  # gzip: only NIfTI is accepted compressed; decoding checks the content
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    raise UnsupportedFormatError(
        f"{filename or 'upload'}: unsupported file format (expected PNG, JPEG, TIFF, NIfTI or DICOM)"
    )


def _decode_picture(payload: bytes, image_format: ImageFormat, filename: str) -> np.ndarray:
    if image_format == "tiff":
        array = np.asarray(tifffile.imread(io.BytesIO(payload)))
        array = np.squeeze(array)
        if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
            array = np.moveaxis(array, 0, -1)
    else:
        with Image.open(io.BytesIO(payload)) as opened:
            opened.load()
            picture: Image.Image = opened
            if picture.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                picture = picture.convert("L" if picture.mode in ("LA", "1") else "RGB")
            array = np.asarray(picture)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ImageDecodeError(f"{filename}: expected a grey or RGB picture, got an array of shape {array.shape}")
    return array


def _decode_nifti(payload: bytes, filename: str) -> DecodedSource:
    raw = gzip.decompress(payload) if payload.startswith(b"\x1f\x8b") else payload
    header_kind = raw[4:8] if len(raw) >= 8 else b""
    image_class = nib.Nifti2Image if header_kind in (b"n+2\x00", b"ni2\x00") else nib.Nifti1Image
    image = image_class.from_bytes(raw)
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ImageDecodeError(f"{filename}: expected a 3D NIfTI volume, got shape {data.shape}")
    affine = np.asarray(image.affine, dtype=np.float64)
    stored_ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(stored_ornt, nib.orientations.axcodes2ornt(SLICING_AXCODES))
    reoriented = np.ascontiguousarray(nib.orientations.apply_orientation(data, transform))
    axcodes = tuple(str(code) for code in nib.orientations.ornt2axcodes(stored_ornt))
    return DecodedSource(
        format="nifti",
        kind="volume",
        array=reoriented,
        affine=affine,
        volume_shape=tuple(int(n) for n in data.shape),
        axcodes=(axcodes[0], axcodes[1], axcodes[2]),
    )


def _decode_dicom(payload: bytes, filename: str) -> DecodedSource:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(payload))
    pixels = np.asarray(dataset.pixel_array)
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "RGB" and pixels.ndim == 3 and pixels.shape[-1] == 3:
        return DecodedSource(format="dicom", kind="image", array=pixels)
    pixels = pixels.astype(np.float32) * float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    pixels += float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    if photometric == "MONOCHROME1":
        pixels = pixels.max() - pixels
    if pixels.ndim == 2:
        return DecodedSource(format="dicom", kind="image", array=pixels)
    if pixels.ndim == 3:
        # Frames first in DICOM; stored as (rows, cols, frames) and shown without rotation.
        volume = np.ascontiguousarray(np.rot90(np.moveaxis(pixels, 0, -1), k=-1))
        return DecodedSource(format="dicom", kind="volume", array=volume)
    raise ImageDecodeError(f"{filename}: unsupported DICOM pixel data of shape {pixels.shape}")


def decode_file(payload: bytes, filename: str = "upload") -> DecodedSource:
    """Decode the bytes of an image file.

    Args:
        payload: The file's content.
        filename: Name used in error messages.

    Returns:
        The decoded 2D image or volume.

    Raises:
        UnsupportedFormatError: The content is not a supported format.
        ImageDecodeError: The content looks like a supported format but cannot be decoded.
    """
    if not payload:
        raise ImageDecodeError(f"{filename}: the file is empty")
    image_format = detect_format(payload, filename)
    try:
        if image_format == "nifti":
            decoded = _decode_nifti(payload, filename)
        elif image_format == "dicom":
            decoded = _decode_dicom(payload, filename)
        else:
            decoded = DecodedSource(
                format=image_format, kind="image", array=_decode_picture(payload, image_format, filename)
            )
    except (ImageDecodeError, UnsupportedFormatError):
        raise
    except Exception as error:  # decoders raise many unrelated types for corrupt files
        raise ImageDecodeError(f"{filename}: cannot decode {image_format.upper()} file: {error}") from error
    array = decoded.array
    if array.size == 0 or min(array.shape[:2]) < 8:
        raise ImageDecodeError(f"{filename}: image of shape {array.shape} is too small (at least 8×8 pixels)")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ImageDecodeError(f"{filename}: pixel type {array.dtype} is not numeric")
    if not np.isfinite(np.asarray(array, dtype=np.float64)).all():
        raise ImageDecodeError(f"{filename}: the image contains NaN or infinite values")
    return decoded


def prepare_source(source: DecodedSource, task: TaskSpec, size: int, slice_index: int | None = None) -> PreparedImage:
    """Preprocess a decoded file: a 2D image, or one axial slice of a volume.

    Raises:
        ValueError: A slice index for a 2D image, or an index outside the volume.
    """
    if source.kind == "image":
        if slice_index is not None:
            raise ValueError("a slice index was given for a 2D image")
        return prepare_image(source.array, task, size)
    index = default_slice(source) if slice_index is None else slice_index
    prepared = prepare_image(source.slice(index), task, size)
    prepared.geometry.slice_index = index
    if source.affine is not None:
        prepared.geometry.affine = source.affine.tolist()
        prepared.geometry.volume_shape = source.volume_shape
        prepared.geometry.axcodes = source.axcodes
    return prepared


def default_slice(source: DecodedSource) -> int:
    """The slice shown first for a volume: the middle one."""
    return (source.num_slices or 1) // 2


def mask_to_nifti(mask: np.ndarray, geometry: Geometry) -> bytes:
    """A gzipped NIfTI of the mask aligned with the source volume.

    For a NIfTI source: a volume of the source's stored shape and affine with only the labelled slice
    filled (every reorientation and rotation undone). For any other image: a one-slice volume with an
    identity affine.
    """
    slice2d = mask_to_source(mask, geometry).astype(np.uint8)
    if geometry.affine is None or geometry.volume_shape is None or geometry.slice_index is None:
        volume = np.rot90(slice2d, k=-1)[:, :, None]  # the same upright convention as axial_slice
        image = nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4))
    else:
        stored_axcodes = geometry.axcodes or SLICING_AXCODES
        las_shape = _reoriented_shape(geometry.volume_shape, stored_axcodes)
        volume = np.zeros(las_shape, dtype=np.uint8)
        volume[:, :, geometry.slice_index] = np.rot90(slice2d, k=-1)  # undo axial_slice's rotation
        back = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(SLICING_AXCODES), nib.orientations.axcodes2ornt(stored_axcodes)
        )
        stored = np.ascontiguousarray(nib.orientations.apply_orientation(volume, back))
        image = nib.Nifti1Image(stored, np.asarray(geometry.affine, dtype=np.float64))
    image.set_data_dtype(np.uint8)
    image.header["descrip"] = b"clickadapt mask"
    return gzip.compress(image.to_bytes(), compresslevel=6)


def _reoriented_shape(shape: tuple[int, ...], axcodes: tuple[str, str, str]) -> tuple[int, int, int]:
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(axcodes), nib.orientations.axcodes2ornt(SLICING_AXCODES)
    )
    permuted = [0, 0, 0]
    for axis, (target, _flip) in enumerate(transform):
        permuted[int(target)] = int(shape[axis])
    return permuted[0], permuted[1], permuted[2]


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit grey ``(H, W)`` or RGB(A) ``(H, W, 3|4)`` array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def overlay_png(mask: np.ndarray, colours: tuple[tuple[int, int, int], ...] = CLASS_COLOURS) -> bytes:
    """An RGBA PNG of a class mask: each class in its colour, background transparent (the page sets opacity)."""
    labels = np.asarray(mask).astype(np.int64)
    palette = np.zeros((max(len(colours), int(labels.max(initial=0)) + 1), 4), dtype=np.uint8)
    for index, colour in enumerate(colours):
        palette[index, :3] = colour
        palette[index, 3] = 0 if index == 0 else 255
    return encode_png(palette[np.clip(labels, 0, palette.shape[0] - 1)])
