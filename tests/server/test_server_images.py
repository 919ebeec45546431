"""Decoding uploads (PNG, JPEG, TIFF, WebP, NIfTI, DICOM), preprocessing, and masks mapped back onto the source."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from server_helpers import dicom_bytes, synthetic_brain_slice

from clickadapt.data.brain import volume_samples
from clickadapt.data.files import axial_slice, read_nifti
from clickadapt.data.preprocess import center_pad_or_crop, preprocess_brain_slice, preprocess_fundus_image
from clickadapt.data.registry import DatasetConfig
from clickadapt.server.images import (
    CLASS_COLOURS,
    Geometry,
    ImageDecodeError,
    UnsupportedFormatError,
    decode_file,
    detect_format,
    guess_brain_mask,
    mask_to_nifti,
    mask_to_source,
    overlay_png,
    prepare_image,
    prepare_source,
    window_to_uint8,
)
from clickadapt.tasks import BRAIN, FUNDUS


def picture_bytes(array: np.ndarray, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def nifti_payload(volume: np.ndarray, affine: np.ndarray, compress: bool = True) -> bytes:
    raw = nib.Nifti1Image(volume, affine).to_bytes()
    return gzip.compress(raw) if compress else raw


RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 255, (30, 20), dtype=np.uint8)
RGB = RNG.integers(0, 255, (30, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("payload", "expected_format", "expected_shape"),
    [
        (picture_bytes(GREY, "PNG"), "png", (30, 20)),
        (picture_bytes(RGB, "PNG"), "png", (30, 20, 3)),
        (picture_bytes(RGB, "JPEG"), "jpeg", (30, 20, 3)),
        (tiff_bytes(GREY.astype(np.uint16) * 200), "tiff", (30, 20)),
        (tiff_bytes(RGB), "tiff", (30, 20, 3)),
        (picture_bytes(RGB, "WEBP", lossless=True), "webp", (30, 20, 3)),
        (dicom_bytes(24), "dicom", (24, 24)),
    ],
)
def test_decode_2d_formats(payload: bytes, expected_format: str, expected_shape: tuple[int, ...]) -> None:
    decoded = decode_file(payload, "x")
    assert decoded.format == expected_format and decoded.kind == "image"
    assert decoded.array.shape == expected_shape
    if expected_format in ("png", "tiff") and len(expected_shape) == 2 and decoded.array.dtype == np.uint8:
        np.testing.assert_array_equal(decoded.array, GREY)


def test_decode_png_keeps_pixels_and_dicom_applies_rescale() -> None:
    np.testing.assert_array_equal(decode_file(picture_bytes(RGB, "PNG")).array, RGB)
    # lossless WebP (how the shared LGG copy is stored) decodes to the very pixels
    np.testing.assert_array_equal(decode_file(picture_bytes(RGB, "WEBP", lossless=True)).array, RGB)
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    dataset = dcmread(DicomBytesIO(dicom_bytes(16)))
    dataset.RescaleSlope = 2.0
    dataset.RescaleIntercept = -10.0
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    rescaled = decode_file(buffer.getvalue()).array
    np.testing.assert_allclose(rescaled, dataset.pixel_array.astype(np.float32) * 2.0 - 10.0)


def test_multiframe_dicom_is_a_volume_of_upright_frames() -> None:
    decoded = decode_file(dicom_bytes(20, frames=3), "multi.dcm")
    assert decoded.kind == "volume" and decoded.num_slices == 3
    first_frame = synthetic_brain_slice(20, 0)[0].astype(np.uint16)
    np.testing.assert_array_equal(decoded.slice(0), first_frame)


def test_nifti_volume_is_sliced_like_the_dataset_readers(tmp_path) -> None:
    volume = RNG.random((12, 10, 9)).astype(np.float32)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # stored L→R flipped: (R, P, S)... reoriented like read_nifti
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    for payload in (path.read_bytes(), nifti_payload(volume, affine, compress=False)):
        decoded = decode_file(payload, "v.nii.gz")
        assert decoded.format == "nifti" and decoded.kind == "volume" and decoded.num_slices == 9
        np.testing.assert_array_equal(decoded.slice(4), axial_slice(read_nifti(path), 4))
        assert decoded.volume_shape == (12, 10, 9)


@pytest.mark.parametrize("background", [0.0, -2.5])  # a skull-stripped scan; a z-scored one (BRATS)
def test_volume_slices_get_the_pixels_the_nifti_readers_gave_the_model(tmp_path, background: float) -> None:
    # Slices of one volume with different intensities: z-scored with each slice's own statistics (as a 2D
    # picture is), they would differ from the training and benchmark slices, and so would the masks.
    pictures = [synthetic_brain_slice(30, seed) for seed in range(4)]
    volume = np.stack([image * (1.0 + 0.5 * k) for k, (image, _) in enumerate(pictures)], axis=-1)
    volume = np.where(volume > 0, volume, background).astype(np.float32)
    lesion = np.stack([label for _, label in pictures], axis=-1).astype(bool)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), path)  # stored L, A, S: read as is
    brain = volume != background
    config = DatasetConfig(reader="brats", slice_policy="all", min_lesion_pixels=1, size=32)
    samples = volume_samples(read_nifti(path), lesion, brain, config, "synthetic", "T1c", "p0", path)
    assert len(samples) == 4
    decoded = decode_file(path.read_bytes(), path.name)
    for sample in samples:
        prepared = prepare_source(decoded, BRAIN, 32, sample.slice_index)
        np.testing.assert_array_equal(prepared.pixels, sample.image)
        assert prepared.geometry == Geometry(
            kind="pad-crop",
            source_shape=(30, 30),
            size=32,
            volume_shape=(30, 30, 4),
            slice_index=sample.slice_index,
            affine=np.diag([-1.0, 1.0, 1.0, 1.0]).tolist(),
            axcodes=("L", "A", "S"),
        )
    # a 2D picture keeps its own statistics, like the folder reader's slices
    flat = prepare_source(decode_file(tiff_bytes(volume[..., 2])), BRAIN, 32)
    np.testing.assert_allclose(flat.pixels, preprocess_brain_slice(volume[..., 2], brain[..., 2], 32), atol=1e-6)


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        (b"", ImageDecodeError, "empty"),
        (b"plain text, not an image", UnsupportedFormatError, "unsupported file format"),
        (picture_bytes(GREY, "PNG")[:80], ImageDecodeError, "cannot decode PNG"),
        (picture_bytes(RGB, "JPEG")[:40], ImageDecodeError, "cannot decode JPEG"),
        (picture_bytes(RGB, "WEBP", lossless=True)[:60], ImageDecodeError, "cannot decode WEBP"),
        (gzip.compress(b"not a nifti header at all" * 20), ImageDecodeError, "cannot decode NIFTI"),
        (b"\x1f\x8b garbage", ImageDecodeError, "cannot decode NIFTI"),
        (dicom_bytes(16)[:200], ImageDecodeError, "cannot decode DICOM"),
        (picture_bytes(np.zeros((5, 40), np.uint8), "PNG"), ImageDecodeError, "too small"),
    ],
)
def test_corrupt_or_unsupported_files_are_refused(payload: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words) as raised:
        decode_file(payload, "upload.bin")
    assert "upload.bin" in str(raised.value)


def test_detect_format_by_content_not_name() -> None:
    assert detect_format(picture_bytes(GREY, "PNG"), "scan.jpg") == "png"
    with pytest.raises(UnsupportedFormatError, match=r"notes\.png"):
        detect_format(b"GIF89a....", "notes.png")


def test_brain_preprocessing_matches_the_readers_and_pads_with_background() -> None:
    image, _ = synthetic_brain_slice(40, 0)
    prepared = prepare_image(image, BRAIN, 48)
    np.testing.assert_allclose(prepared.pixels, preprocess_brain_slice(image, image > 0, 48), atol=1e-6)
    assert prepared.display.shape == (48, 48) and prepared.display.dtype == np.uint8
    assert prepared.geometry == Geometry(kind="pad-crop", source_shape=(40, 40), size=48)
    np.testing.assert_array_equal(guess_brain_mask(image), image > 0)
    flat = np.full((20, 20), 7.0)
    assert guess_brain_mask(flat).all()  # no background: everything is brain


def test_fundus_preprocessing_resizes_and_maps_back() -> None:
    prepared = prepare_image(RGB, FUNDUS, 16)
    np.testing.assert_allclose(prepared.pixels, preprocess_fundus_image(RGB, 16), atol=1e-6)
    assert prepared.display.shape == (16, 16, 3)
    mask = np.zeros((16, 16), np.int64)
    mask[:, 8:] = 2
    back = mask_to_source(mask, prepared.geometry)
    assert back.shape == (30, 20)
    assert (back[:, :10] == 0).all() and (back[:, 10:] == 2).all()


@pytest.mark.parametrize("source_shape", [(40, 30), (60, 70), (47, 52)])
def test_pad_crop_mask_maps_back_exactly(source_shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    source_mask = rng.integers(0, 2, source_shape)
    size = 50
    preprocessed = center_pad_or_crop(source_mask, size, 0)
    back = mask_to_source(preprocessed, Geometry(kind="pad-crop", source_shape=source_shape, size=size))
    assert back.shape == source_shape
    visible = center_pad_or_crop(np.ones(source_shape, np.int64), size, 0)
    np.testing.assert_array_equal(
        center_pad_or_crop(back.astype(np.int64), size, 0), preprocessed
    )  # every pixel that was seen comes back where it was
    assert back.sum() == (preprocessed * visible).sum()


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([1.0, 1.0, 1.0, 1.0]),
        np.diag([-1.0, -1.0, 2.0, 1.0]),
        np.array([[0.0, 0.0, 2.0, 5.0], [-1.0, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, -7.0], [0.0, 0.0, 0.0, 1.0]]),
    ],
)
def test_nifti_export_lands_on_the_source_voxels(affine: np.ndarray) -> None:
    shape = (30, 26, 22)
    voxel = (7, 11, 13)
    marker = np.zeros(shape, np.float32)
    marker[voxel] = 1.0
    decoded = decode_file(nifti_payload(marker, affine))
    slice_index = next(i for i in range(decoded.num_slices or 0) if decoded.slice(i).max() > 0)
    prepared = prepare_source(decoded, BRAIN, 32, slice_index)  # crops and pads
    mask = center_pad_or_crop((decoded.slice(slice_index) > 0).astype(np.int64), 32, 0)
    exported = nib.Nifti1Image.from_bytes(gzip.decompress(mask_to_nifti(mask, prepared.geometry)))
    assert exported.shape == shape and np.allclose(exported.affine, affine)
    assert [tuple(int(i) for i in index) for index in np.argwhere(np.asarray(exported.dataobj))] == [voxel]


def test_slice_out_of_range_and_2d_slice_refused() -> None:
    decoded = decode_file(nifti_payload(np.ones((10, 10, 3), np.float32), np.eye(4)))
    with pytest.raises(ValueError, match=r"slice 3 is outside the volume \(0\.\.2\)"):
        prepare_source(decoded, BRAIN, 16, 3)
    with pytest.raises(ValueError, match="2D image"):
        prepare_source(decode_file(picture_bytes(GREY, "PNG")), BRAIN, 16, 1)


def test_window_and_overlay() -> None:
    window = window_to_uint8(np.linspace(0, 1, 1000).reshape(10, 100), (0.0, 100.0))
    assert window.min() == 0 and window.max() == 255
    assert window_to_uint8(np.ones((4, 4))).max() == 0
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(np.array([[0, 1], [2, 0]])))).convert("RGBA"))
    assert overlay.shape == (2, 2, 4)
    assert overlay[0, 0, 3] == 0 and overlay[0, 1, 3] == 255 and overlay[1, 0, 3] == 255
    assert tuple(overlay[0, 1, :3]) != tuple(overlay[1, 0, :3])


def rgba_overlay_reference(mask: np.ndarray) -> np.ndarray:
    """The truecolour RGBA overlay the page used to get (before the indexed PNG): what it must still decode to."""
    labels = np.asarray(mask).astype(np.int64)
    palette = np.zeros((max(len(CLASS_COLOURS), int(labels.max(initial=0)) + 1), 4), dtype=np.uint8)
    for index, colour in enumerate(CLASS_COLOURS):
        palette[index, :3] = colour
        palette[index, 3] = 0 if index == 0 else 255
    return palette[np.clip(labels, 0, palette.shape[0] - 1)]


@pytest.mark.parametrize("high", [3, len(CLASS_COLOURS) + 3, 300])
def test_the_indexed_overlay_decodes_to_the_rgba_overlay(high: int) -> None:
    mask = np.random.default_rng(high).integers(-2, high, size=(37, 53))
    with Image.open(io.BytesIO(overlay_png(mask))) as picture:
        assert picture.mode == "P"  # a quarter of the RGBA pixel data to compress
        decoded = np.asarray(picture.convert("RGBA"))
    np.testing.assert_array_equal(decoded, rgba_overlay_reference(mask))
