"""Decoding uploads and data-folder files into what the model sees, and mapping masks back onto the source.

Formats are recognised by their content (magic bytes), never by the file name alone: PNG, JPEG, TIFF, WebP
(Pillow / tifffile), NIfTI-1/2, optionally gzipped (nibabel) and DICOM (pydicom). NIfTI volumes and
multi-frame DICOM are *volumes*: one 2D image is made per chosen axial slice.

Preprocessing reuses :mod:`clickadapt.data.preprocess`, so the server feeds the model exactly what the
readers fed it in training: brain slices are z-scored inside the brain and centre padded or cropped to
``size × size``; fundus photographs are resized to ``size × size`` and z-scored per channel. A 2D brain
picture is z-scored with its own statistics (like the folder reader); a slice of a volume with the whole
volume's (:class:`VolumeIntensities`, like the NIfTI readers: the same slice then gets the same pixels as in
training and in the benchmarks). NIfTI slices are taken like the readers take them (reoriented to L, A, S,
then the axial slice rotated upright, :func:`clickadapt.data.files.axial_slice`), and :class:`Geometry`
records how to undo every step, so an exported NIfTI mask lands on the source voxels with the source affine.
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from clickadapt.data.preprocess import DEFAULT_CLIP_PERCENTILES, rgb_to_unit_float
from clickadapt.tasks import TaskSpec

# A volume's slices are prepared by the function the library and the volume sessions use too.
from clickadapt.volume_input import VOLUME_STATS_VOXELS as VOLUME_STATS_VOXELS
from clickadapt.volume_input import VolumeIntensities as VolumeIntensities
from clickadapt.volume_input import prepare_volume_slice as prepare_volume_slice
from clickadapt.volume_input import stats_step

ImageFormat = Literal["png", "jpeg", "tiff", "webp", "nifti", "dicom"]
SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".nii", ".nii.gz", ".dcm")
SUPPORTED_FORMATS = "PNG, JPEG, TIFF, WebP, NIfTI (.nii, .nii.gz) or DICOM"
"""The formats the server reads, as error messages and help texts name them."""
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 64, 64),
    (64, 160, 255),
    (64, 220, 96),
    (255, 200, 0),
)
"""Overlay colours by class index (background is transparent)."""
REFERENCE_COLOURS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 230, 0), (255, 140, 0), (255, 90, 200))
"""Colours of a reference mask's outline by class index: unlike any mask colour, so that both are told apart."""
MAX_PALETTE = 256
"""Entries of an indexed PNG's palette (class indices above the last one are drawn as it: transparent)."""
NIFTI_HEADER_BYTES = 540
"""Enough bytes for a NIfTI-1 (348) or NIfTI-2 (540) header."""
GZIP_CHUNK_BYTES = 1024 * 1024
GZIP_TRAILING_BYTES = 1024 * 1024
"""A gzipped NIfTI may decompress to at most this much more than its header declares (a gzip bomb otherwise)."""
VOLUME_BYTES_PER_VOXEL = 4
"""Volumes may hold at most ``max_volume_voxels`` voxels of this many bytes (float32) when decoded."""
COLOUR_CHROMA = 0.04
"""A picture whose channels differ by more than this fraction of its range on average is in colour."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a file may *declare* before any pixel is decoded (decompression bombs are refused at the header).

    Attributes:
        max_image_pixels: Largest 2D picture, height × width.
        max_volume_voxels: Largest volume; also bounds its decoded size to this many float32 voxels.
    """

    max_image_pixels: int = 4096 * 4096
    max_volume_voxels: int = 512 * 512 * 512


class ImageTooLargeError(ImageDecodeError):
    """A file whose header declares more pixels or voxels than the server accepts (refused before decoding)."""


class UnsupportedFormatError(ValueError):
    """An upload or data file is of a format the server does not read."""


@dataclass
class DecodedSource:
    """A decoded file before preprocessing.

    Attributes:
        format: The detected format.
        kind: ``"image"`` (2D) or ``"volume"``.
        array: 2D ``(H, W)`` grey or ``(H, W, 3)`` RGB image; for in-memory volumes (multi-frame DICOM) the
            volume with axial slices on the last axis; ``None`` for a NIfTI volume, which is read one slice at
            a time (``reader``) so that a large volume never sits in memory whole.
        affine: NIfTI affine (volumes from NIfTI only).
        volume_shape: Stored (un-reoriented) shape of a NIfTI volume.
        axcodes: Stored orientation of a NIfTI volume.
        reader: Reads the upright axial slice ``index`` (in L, A, S orientation) of a lazily read volume.
        slices: Number of axial slices of a lazily read volume.
        values: Reads the voxel values of every ``step``-th stored slab of a lazily read volume (for its
            intensity statistics).
    """

    format: ImageFormat
    kind: Literal["image", "volume"]
    array: np.ndarray | None
    affine: np.ndarray | None = None
    volume_shape: tuple[int, ...] | None = None
    axcodes: tuple[str, str, str] | None = None
    reader: Callable[[int], np.ndarray] | None = None
    slices: int | None = None
    values: Callable[[int], np.ndarray] | None = None
    _intensities: dict[tuple[float, float], VolumeIntensities] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def num_slices(self) -> int | None:
        """Number of axial slices of a volume, ``None`` for 2D images."""
        if self.kind != "volume":
            return None
        if self.slices is not None:
            return self.slices
        return int(self.array.shape[-1]) if self.array is not None else None

    def picture(self) -> np.ndarray:
        """The 2D picture of an image (not a volume).

        Raises:
            ValueError: For a volume.
        """
        if self.kind != "image" or self.array is None:
            raise ValueError("a volume has no single picture; take one of its slices")
        return self.array

    def slice(self, index: int) -> np.ndarray:
        """The upright 2D axial slice ``index`` of a volume.

        Raises:
            ValueError: If this is not a volume or the index is out of range.
            ImageDecodeError: The slice cannot be read or holds NaN or infinite values.
        """
        if self.kind != "volume" or self.num_slices is None:
            raise ValueError("only volumes have slices")
        if not 0 <= index < self.num_slices:
            raise ValueError(f"slice {index} is outside the volume (0..{self.num_slices - 1})")
        if self.reader is not None:
            return self.reader(index)
        assert self.array is not None
        return axial_slice(self.array, index)

    def intensities(self, clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES) -> VolumeIntensities:
        """The volume's brain intensity statistics, clipped to ``clip_percentiles`` of the brain values (the
        model's own, ``CheckpointMeta.preprocessing.clip_percentiles``); computed on the first call, then kept.

        From every voxel up to :data:`VOLUME_STATS_VOXELS` voxels, else from every k-th stored slab.

        Raises:
            ValueError: If this is not a volume.
            ImageDecodeError: The volume cannot be read or holds no finite value.
        """
        if self.kind != "volume":
            raise ValueError("only volumes have volume statistics")
        found = self._intensities.get(clip_percentiles)
        if found is None:
            if self.values is not None:
                values = self.values(stats_step(math.prod(self.volume_shape or ())))
                found = VolumeIntensities.of_values(values, clip_percentiles)
            else:
                assert self.array is not None
                found = VolumeIntensities.of_volume(self.array, clip_percentiles)
            self._intensities[clip_percentiles] = found
        return found


def has_supported_suffix(name: str) -> bool:
    """Whether a file name ends with a suffix the server reads (case-insensitive)."""
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def detect_format(payload: bytes | bytearray, filename: str = "") -> ImageFormat:
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
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x1f\x8b"):
        return "nifti"  # gzip: only NIfTI is accepted compressed; decoding checks the content
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    raise UnsupportedFormatError(f"{filename or 'upload'}: unsupported file format (expected {SUPPORTED_FORMATS})")


def _too_large(filename: str, kind: str, shape: tuple[int, ...], count: int, limit: int, setting: str) -> str:
    unit = "voxels" if kind == "volume" else "pixels"
    dims = " × ".join(str(n) for n in shape)
    return (
        f"{filename}: {kind} of {dims} ({count} {unit}) exceeds the limit of {limit} {unit} "
        f"(server setting {setting}); refused before decoding"
    )


def _check_picture_size(filename: str, width: int, height: int, limits: DecodeLimits) -> None:
    if width * height > limits.max_image_pixels:
        message = _too_large(
            filename, "picture", (width, height), width * height, limits.max_image_pixels, "max_image_pixels"
        )
        raise ImageTooLargeError(message)


def _decode_picture(
    payload: bytes | bytearray, image_format: ImageFormat, filename: str, limits: DecodeLimits
) -> np.ndarray:
    if image_format == "tiff":
        with tifffile.TiffFile(io.BytesIO(payload)) as tiff:
            series = tiff.series[0]
            shape = tuple(int(n) for n in series.shape)
            dims = [n for n in shape if n > 1]
            channels = (
                dims[-1] if len(dims) == 3 and dims[-1] <= 4 else dims[0] if len(dims) == 3 and dims[0] <= 4 else 1
            )
            pixels = math.prod(dims) // channels if dims else 0
            if pixels > limits.max_image_pixels:
                raise ImageTooLargeError(
                    _too_large(filename, "picture", shape, pixels, limits.max_image_pixels, "max_image_pixels")
                )
            array = np.asarray(series.asarray())
        array = np.squeeze(array)
        if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
            array = np.moveaxis(array, 0, -1)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(payload)) as opened:
                _check_picture_size(filename, opened.width, opened.height, limits)  # the header only
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


def _nifti_stream(payload: bytes | bytearray) -> io.BufferedIOBase:
    """The NIfTI bytes as a seekable file (decompressed on the fly when gzipped: never all in memory)."""
    if payload.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=io.BytesIO(payload), mode="rb")
    return io.BytesIO(payload)


def _check_gzip_size(payload: bytes | bytearray, expected: int, filename: str) -> None:
    """Decompress a gzipped NIfTI in chunks (nothing kept): it must hold its declared data and not much more.

    Raises:
        ImageDecodeError: Truncated or corrupt, or it decompresses far beyond its header (a gzip bomb).
    """
    limit = expected + GZIP_TRAILING_BYTES
    total = 0
    with gzip.GzipFile(fileobj=io.BytesIO(payload), mode="rb") as stream:
        while chunk := stream.read(GZIP_CHUNK_BYTES):
            total += len(chunk)
            if total > limit:
                raise ImageDecodeError(
                    f"{filename}: the gzipped file decompresses to more than the {expected} bytes its header "
                    "declares; refused"
                )
    if total < expected:
        raise ImageDecodeError(f"{filename}: truncated: {total} of the {expected} declared bytes")


def _decode_nifti(payload: bytes | bytearray, filename: str, limits: DecodeLimits) -> DecodedSource:
    with _nifti_stream(payload) as stream:
        head = stream.read(NIFTI_HEADER_BYTES)
    nifti2 = head[4:8] in (b"n+2\x00", b"ni2\x00")
    header_class = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    header = header_class.from_fileobj(io.BytesIO(head))
    stored_shape = tuple(int(n) for n in header.get_data_shape())
    shape = stored_shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise ImageDecodeError(f"{filename}: expected a 3D NIfTI volume, got shape {stored_shape}")
    voxels = math.prod(shape)
    if voxels > limits.max_volume_voxels:
        raise ImageTooLargeError(
            _too_large(filename, "volume", shape, voxels, limits.max_volume_voxels, "max_volume_voxels")
        )
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind not in "biuf":
        raise ImageDecodeError(f"{filename}: NIfTI data type {dtype} is not a grey numeric type")
    data_bytes = voxels * dtype.itemsize
    if data_bytes > limits.max_volume_voxels * VOLUME_BYTES_PER_VOXEL:
        raise ImageTooLargeError(
            f"{filename}: volume of {' × '.join(map(str, shape))} {dtype} takes {data_bytes} bytes decoded, above "
            f"the limit of {limits.max_volume_voxels * VOLUME_BYTES_PER_VOXEL} bytes (max_volume_voxels float32 "
            "voxels); save it as float32 or smaller"
        )
    expected = int(header.get_data_offset()) + data_bytes
    if payload.startswith(b"\x1f\x8b"):
        _check_gzip_size(payload, expected, filename)
    elif len(payload) < expected:
        raise ImageDecodeError(f"{filename}: truncated: {len(payload)} of the {expected} declared bytes")
    image_class = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    stream = _nifti_stream(payload)
    holder = nib.FileHolder(fileobj=stream)
    image = image_class.from_file_map({"header": holder, "image": holder})
    affine = np.asarray(image.affine, dtype=np.float64)
    stored_ornt = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(stored_ornt, nib.orientations.axcodes2ornt(SLICING_AXCODES))
    axial_axis = int(np.flatnonzero(transform[:, 0] == 2)[0])
    flipped = bool(transform[axial_axis, 1] == -1)
    extra = (0,) * (len(stored_shape) - 3)
    proxy = image.dataobj

    def read_slice(index: int) -> np.ndarray:
        stored_index = shape[axial_axis] - 1 - index if flipped else index
        selection: list[slice | int] = [slice(None)] * 3
        selection[axial_axis] = slice(stored_index, stored_index + 1)
        slab = np.asarray(proxy[(*selection, *extra)]).reshape(
            tuple(1 if axis == axial_axis else shape[axis] for axis in range(3))
        )
        upright = axial_slice(nib.orientations.apply_orientation(slab, transform), 0)
        if upright.dtype.kind == "f" and not np.isfinite(upright).all():
            raise ImageDecodeError(f"{filename}: slice {index} contains NaN or infinite values")
        return upright

    def read_values(step: int) -> np.ndarray:
        """The values of every ``step``-th slab along the stored last axis (read in file order)."""
        if step == 1 or len(stored_shape) < 3:
            return np.asarray(proxy).ravel()
        slabs = [
            np.asarray(proxy[(slice(None), slice(None), slice(k, k + 1), *extra)]).ravel()
            for k in range(0, shape[2], step)
        ]
        return np.concatenate(slabs)

    axcodes = tuple(str(code) for code in nib.orientations.ornt2axcodes(stored_ornt))
    return DecodedSource(
        format="nifti",
        kind="volume",
        array=None,
        affine=affine,
        volume_shape=shape,
        axcodes=(axcodes[0], axcodes[1], axcodes[2]),
        reader=read_slice,
        slices=shape[axial_axis],
        values=read_values,
    )


def _decode_dicom(payload: bytes | bytearray, filename: str, limits: DecodeLimits) -> DecodedSource:
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(payload))
    rows, columns = int(getattr(dataset, "Rows", 0) or 0), int(getattr(dataset, "Columns", 0) or 0)
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1 and rows * columns * frames > limits.max_volume_voxels:
        raise ImageTooLargeError(
            _too_large(
                filename,
                "volume",
                (rows, columns, frames),
                rows * columns * frames,
                limits.max_volume_voxels,
                "max_volume_voxels",
            )
        )
    _check_picture_size(filename, columns, rows, limits)
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


def decode_file(
    payload: bytes | bytearray, filename: str = "upload", limits: DecodeLimits | None = None
) -> DecodedSource:
    """Decode the bytes of an image file, checking the size its header declares before decoding any pixel.

    Args:
        payload: The file's content.
        filename: Name used in error messages.
        limits: Largest picture and volume a file may declare (default :class:`DecodeLimits`).

    Returns:
        The decoded 2D image, or a volume (NIfTI volumes are read one slice at a time).

    Raises:
        UnsupportedFormatError: The content is not a supported format.
        ImageTooLargeError: The header declares more pixels or voxels than ``limits`` allow (names the size).
        ImageDecodeError: The content looks like a supported format but cannot be decoded.
    """
    limits = limits or DecodeLimits()
    if not payload:
        raise ImageDecodeError(f"{filename}: the file is empty")
    image_format = detect_format(payload, filename)
    try:
        if image_format == "nifti":
            decoded = _decode_nifti(payload, filename, limits)
        elif image_format == "dicom":
            decoded = _decode_dicom(payload, filename, limits)
        else:
            array = _decode_picture(payload, image_format, filename, limits)
            decoded = DecodedSource(format=image_format, kind="image", array=array)
    except (ImageDecodeError, UnsupportedFormatError):
        raise
    except Exception as error:  # decoders raise many unrelated types for corrupt files
        reason = str(error).strip() or type(error).__name__
        raise ImageDecodeError(f"{filename}: cannot decode {image_format.upper()} file: {reason}") from error
    if decoded.array is None:  # a lazily read volume: its shape is known from the header
        shape = decoded.volume_shape or ()
        if min(shape[:2], default=0) < 8:
            raise ImageDecodeError(f"{filename}: volume of shape {shape} is too small (at least 8×8 pixels)")
        return decoded
    array = decoded.array
    if array.size == 0 or min(array.shape[:2]) < 8:
        raise ImageDecodeError(f"{filename}: image of shape {array.shape} is too small (at least 8×8 pixels)")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ImageDecodeError(f"{filename}: pixel type {array.dtype} is not numeric")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageDecodeError(f"{filename}: the image contains NaN or infinite values")
    return decoded


def task_fit_warning(source: DecodedSource, task: TaskSpec) -> str | None:
    """A sentence when a file does not look like what the model segments (colour vs grey), else ``None``.

    A colour photograph on a grey (MRI) model, or a grey image or volume on a colour (fundus) model, is
    still accepted (and converted), but its masks are unlikely to mean anything.
    """
    if source.kind == "volume":
        colour = False
    else:
        picture = source.picture()
        colour = picture.ndim == 3 and is_colour(picture)
    if task.image_channels == 1 and colour:
        return (
            f"this looks like a colour photograph, but the model segments grey {task.name} images; it was "
            "converted to grey and its masks are unlikely to be meaningful. If its channels are MR sequences "
            "(e.g. a TCGA-LGG slice: pre-contrast, FLAIR, post-contrast), start the server with --channel N to "
            "segment one of them (--channel 1: FLAIR)"
        )
    if task.image_channels == 3 and not colour:
        kind = "volume" if source.kind == "volume" else "grey image"
        return (
            f"this is a {kind}, but the model segments colour {task.name} photographs; its masks are unlikely "
            "to be meaningful"
        )
    return None


def is_colour(picture: np.ndarray) -> bool:
    """Whether an ``(H, W, 3)`` picture is in colour: its channels differ noticeably (not a grey RGB copy)."""
    sample = np.asarray(picture[::4, ::4, :3], dtype=np.float32)
    spread = float(sample.max() - sample.min())
    if spread <= 0:
        return False
    chroma = np.abs(sample[..., 0] - sample[..., 1]) + np.abs(sample[..., 1] - sample[..., 2])
    return float(chroma.mean()) / 2.0 / spread > COLOUR_CHROMA


def prepare_source(
    source: DecodedSource,
    task: TaskSpec,
    size: int,
    slice_index: int | None = None,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
) -> PreparedImage:
    """Preprocess a decoded file: a 2D image, or one axial slice of a volume.

    A 2D image is normalised with its own statistics (:func:`prepare_image`); a slice of a volume for a grey
    (brain) model with the whole volume's (:func:`prepare_volume_slice`), clipped to ``clip_percentiles`` of its
    brain values (give the model's, ``CheckpointMeta.preprocessing.clip_percentiles``), as the NIfTI readers
    prepared the training slices.

    Raises:
        ValueError: A slice index for a 2D image, or an index outside the volume.
        ImageDecodeError: The volume cannot be read or holds no finite value.
    """
    if source.kind == "image":
        if slice_index is not None:
            raise ValueError("a slice index was given for a 2D image")
        return prepare_image(source.picture(), task, size)
    index = default_slice(source) if slice_index is None else slice_index
    picture = source.slice(index)
    if task.image_channels == 1:
        prepared = prepare_volume_slice(picture, source.intensities(clip_percentiles), size)
    else:
        prepared = prepare_image(picture, task, size)
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
    """A gzipped NIfTI of a model-grid mask aligned with the source volume (:func:`source_mask_to_nifti`)."""
    return source_mask_to_nifti(mask_to_source(mask, geometry), geometry)


def source_mask_to_nifti(source_mask: np.ndarray, geometry: Geometry) -> bytes:
    """A gzipped NIfTI of a mask already in the source image's frame.

    For a NIfTI source: a volume of the source's stored shape and affine with only the labelled slice
    filled (every reorientation and rotation undone). For any other image: a one-slice volume with an
    identity affine.
    """
    slice2d = np.asarray(source_mask).astype(np.uint8)
    if geometry.affine is None or geometry.volume_shape is None or geometry.slice_index is None:
        volume = np.rot90(slice2d, k=-1)[:, :, None]  # the same upright convention as axial_slice
        return _gzipped_mask(nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4)))
    return volume_masks_to_nifti({geometry.slice_index: slice2d}, geometry)


def volume_masks_to_nifti(slices: Mapping[int, np.ndarray], geometry: Geometry) -> bytes:
    """A gzipped NIfTI with a source volume's stored shape and affine in which the given axial slices are filled
    (:func:`volume_masks_to_stored`, with the volume's affine)."""
    stored = volume_masks_to_stored(slices, geometry)
    return _gzipped_mask(nib.Nifti1Image(stored, np.asarray(geometry.affine, dtype=np.float64)))


def volume_masks_to_stored(slices: Mapping[int, np.ndarray], geometry: Geometry) -> np.ndarray:
    """A ``uint8`` class volume in a source volume's stored shape and voxel order in which the given axial slices
    are filled.

    Args:
        slices: Axial slice index (L, A, S numbering, as ``Geometry.slice_index``) → that slice's mask in the
            source image's frame (upright, as shown); every other slice is 0.
        geometry: The geometry of any image of the volume (its ``volume_shape``, ``affine`` and ``axcodes``).

    Raises:
        ValueError: The geometry is not a NIfTI volume's, or a slice index is outside the volume.
    """
    if geometry.affine is None or geometry.volume_shape is None:
        raise ValueError("a volume mask needs the source volume's shape and affine (a NIfTI source)")
    stored_axcodes = geometry.axcodes or SLICING_AXCODES
    volume = np.zeros(_reoriented_shape(geometry.volume_shape, stored_axcodes), dtype=np.uint8)
    for index, mask in slices.items():
        if not 0 <= index < volume.shape[2]:
            raise ValueError(f"slice {index} is outside the volume's {volume.shape[2]} slices")
        volume[:, :, index] = np.rot90(np.asarray(mask).astype(np.uint8), k=-1)  # undo axial_slice's rotation
    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(SLICING_AXCODES), nib.orientations.axcodes2ornt(stored_axcodes)
    )
    return np.ascontiguousarray(nib.orientations.apply_orientation(volume, back))


def _gzipped_mask(image: nib.Nifti1Image) -> bytes:
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


PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs the server writes: a 256-px display picture in 2.6 ms instead of 8.3 at the default 6, for
a fifth more bytes (the first start on the 1,243 LGG pictures spent 12 s encoding them)."""


PAGE_PICTURE_QUALITY = 90
"""JPEG quality of the page's picture of a photograph (display only; a 2048-pixel fundus photograph: about 0.3 MB)."""
PAGE_OVERLAY_MAX_SIDE = 2048
"""The page's overlay is drawn at the source's resolution up to this many pixels a side (more is finer than
any screen shows; a 4096 × 4096 photograph gets a 2048 × 2048 overlay)."""


def page_geometry(geometry: Geometry) -> Geometry:
    """The geometry of the overlay the page draws over ``display.png``.

    ``resize`` (the display is the source stretched onto the model grid): the source's shape, scaled down to
    at most :data:`PAGE_OVERLAY_MAX_SIDE` a side. ``pad-crop``: the model grid itself (its pixels are the
    source's pixels, and the display shows the padded or cropped frame).
    """
    if geometry.kind != "resize":
        return Geometry(kind="pad-crop", source_shape=(geometry.size, geometry.size), size=geometry.size)
    height, width = geometry.source_shape
    scale = min(1.0, PAGE_OVERLAY_MAX_SIDE / max(height, width))
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return Geometry(kind="resize", source_shape=shape, size=geometry.size)


def encode_page_picture(picture: np.ndarray, shape: tuple[int, int], quality: int = PAGE_PICTURE_QUALITY) -> bytes:
    """A 2D picture (grey, RGB or RGBA, any numeric type) as an 8-bit RGB JPEG resized to ``shape`` ``(H, W)``.

    For display only (the page's picture under the mask): 8-bit values are kept, others brought to 8 bits as the
    fundus preprocessing does (:func:`~clickadapt.data.prepare.prepare_image`).

    Raises:
        ValueError: Not a 2D picture, or a float picture outside [0, 1].
    """
    array = np.asarray(picture)
    if array.dtype.kind == "f" or array.dtype.itemsize > 2 or array.dtype.kind == "i":
        array = window_to_uint8(array, (0.0, 100.0))
    if array.dtype != np.uint8:
        array = np.round(rgb_to_unit_float(array) * 255.0).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected a grey or colour picture, got shape {array.shape}")
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]))
    if image.size != (shape[1], shape[0]):
        image = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit grey ``(H, W)`` or RGB(A) ``(H, W, 3|4)`` array (fast, lossless)."""
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    picture.save(buffer, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def overlay_png(mask: np.ndarray, colours: tuple[tuple[int, int, int], ...] = CLASS_COLOURS) -> bytes:
    """A PNG of a class mask that decodes to RGBA: each class in its colour, the background and classes without a
    colour transparent (the page sets opacity).

    Stored as an indexed (palette) PNG with per-index transparency, which browsers and ``PIL`` decode to the same
    RGBA pixels as a truecolour RGBA file: a quarter of the pixel data and no per-pixel colour lookup, so a
    2048-pixel overlay of a fundus photograph encodes in a few ms instead of ~80.
    """
    indices = np.clip(np.asarray(mask), 0, MAX_PALETTE - 1).astype(np.uint8)
    palette = bytearray(3 * MAX_PALETTE)
    alpha = bytearray(MAX_PALETTE)
    for index, colour in enumerate(colours[:MAX_PALETTE]):
        palette[3 * index : 3 * index + 3] = bytes(colour)
        alpha[index] = 0 if index == 0 else 255
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), np.ascontiguousarray(indices).tobytes())
    image.putpalette(bytes(palette))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, transparency=bytes(alpha))
    return buffer.getvalue()


def paint_stroke(mask: np.ndarray, points: list[tuple[int, int]], radius: float, label: int) -> np.ndarray:
    """``mask`` with a brush stroke painted in: every pixel within ``radius`` of the polyline through
    ``points`` (row, col) gets ``label`` (0 erases to background). Returns a new array."""
    painted = np.array(mask, copy=True)
    height, width = painted.shape
    samples: list[tuple[float, float]] = []
    for index, (row, col) in enumerate(points):
        if index == 0:
            samples.append((float(row), float(col)))
            continue
        previous_row, previous_col = points[index - 1]
        steps = max(1, math.ceil(math.hypot(row - previous_row, col - previous_col) / max(radius / 2, 0.5)))
        for step in range(1, steps + 1):
            fraction = step / steps
            samples.append(
                (previous_row + (row - previous_row) * fraction, previous_col + (col - previous_col) * fraction)
            )
    reach = math.ceil(radius)
    for centre_row, centre_col in samples:
        top, bottom = max(int(centre_row) - reach, 0), min(int(centre_row) + reach + 1, height)
        left, right = max(int(centre_col) - reach, 0), min(int(centre_col) + reach + 1, width)
        if top >= bottom or left >= right:
            continue
        rows, cols = np.ogrid[top:bottom, left:right]
        inside = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= radius**2
        painted[top:bottom, left:right][inside] = label
    return painted
