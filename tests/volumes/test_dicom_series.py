"""A DICOM series (one file per slice) read as one volume: real MSLUB FLAIR slices written as real DICOM files."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import clickadapt
from clickadapt.volume_input import read_nifti_slice
from clickadapt.volumes import read_volume
from clickadapt.volumes.dicom import SliceHeaderCache, find_dicom_series, read_dicom_series, series_in_folder
from dicom_testing import JPEG_2000_LOSSLESS, JPEG_LOSSLESS, header_reads, quantised, transcode, write_dicom_series

MSLUB_FLAIR = (
    "brain/mslub/cross_sectional/MNI/patient07/FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
)
SLICES = slice(45, 85)
"""40 axial slices of patient 07 around its lesions (the whole volume's 182 would only be slower)."""


@pytest.fixture(scope="module")
def flair(data_root: Path) -> nib.Nifti1Image:
    """Patient 07's FLAIR slab (L, A, S voxel order), its values as a DICOM file stores them."""
    image = nib.load(str(data_root / MSLUB_FLAIR))
    return quantised(image.slicer[:, :, SLICES])


def canonical(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and affine in RAS voxel order: two images of one scan compare equal whatever their voxel order."""
    closest = nib.as_closest_canonical(image)
    return np.asarray(closest.dataobj), np.asarray(closest.affine)


def test_a_series_reads_as_the_scan_it_was_written_from(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    # Names without an ending and in an order that is not the slices' (nor is InstanceNumber): only the
    # positions can order them, and only the DICM marker tells them apart from other files.
    count = flair.shape[2]
    names = [f"{(index * 17) % count:03d}" for index in range(count)]
    write_dicom_series(flair, tmp_path / "series", names=names)
    (tmp_path / "series" / "notes.txt").write_text("not an image")

    series = series_in_folder(tmp_path / "series")
    assert len(series.files) == count and series.label == "series 3 FLAIR AX"
    image = read_dicom_series(series)
    assert image.shape == flair.shape
    data, affine = canonical(image)
    expected_data, expected_affine = canonical(flair)
    np.testing.assert_array_equal(data, expected_data)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
    # read_volume (the volume session's door) reads the folder the same way
    volume = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(volume.data, np.asarray(image.dataobj))
    np.testing.assert_allclose(volume.affine, image.affine)


def test_the_predictor_sees_a_series_slice_as_it_sees_the_nifti_slice(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    write_dicom_series(flair, tmp_path / "series")
    nifti = tmp_path / "flair.nii.gz"
    nib.save(flair, str(nifti))
    from_series = read_nifti_slice(tmp_path / "series", 20)
    from_nifti = read_nifti_slice(nifti, 20)
    np.testing.assert_array_equal(from_series.picture, from_nifti.picture)
    assert from_series.intensities == from_nifti.intensities

    predictor = clickadapt.load_predictor("brain")
    masks = []
    for path in (tmp_path / "series", nifti):
        predictor.set_image(path, slice_index=20)
        masks.append(predictor.add_click(120, 80, "lesion"))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].shape == from_nifti.picture.shape


def test_a_missing_slice_is_refused_naming_its_neighbours(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    write_dicom_series(flair, tmp_path / "series", skip=[12])
    with pytest.raises(
        ValueError, match=r"uneven slice spacing: 2 mm between IM001[13]\.dcm and IM001[13]\.dcm, 1 mm elsewhere"
    ):
        read_dicom_series(tmp_path / "series")


def test_a_slice_written_twice_is_refused(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    files = write_dicom_series(flair, tmp_path / "series")
    shutil.copy(files[5], tmp_path / "series" / "copy.dcm")
    with pytest.raises(ValueError, match=r"copy\.dcm.*same position|IM0005\.dcm.*same position"):
        read_dicom_series(tmp_path / "series")


def test_two_series_in_one_folder_are_told_apart(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_dicom_series(flair, folder, series_uid="1.2.3.4", series_number=3)
    upside = nib.Nifti1Image(np.asarray(flair.dataobj)[:, :, :10], flair.affine)
    write_dicom_series(
        upside,
        folder,
        names=[f"T2_{index}.dcm" for index in range(10)],
        series_uid="1.2.3.5",
        description="T2 AX",
        series_number=4,
    )
    found = find_dicom_series(sorted(folder.iterdir()))
    assert sorted((series.uid, len(series.files)) for series in found) == [("1.2.3.4", 40), ("1.2.3.5", 10)]
    with pytest.raises(ValueError, match=r"holds 2 DICOM series.*series 3 FLAIR AX \(1\.2\.3\.4, 40 files\)"):
        read_volume(folder)
    assert read_dicom_series(series_in_folder(folder, "1.2.3.5")).shape == (182, 218, 10)
    with pytest.raises(ValueError, match=r"no DICOM series with SeriesInstanceUID 9\.9"):
        series_in_folder(folder, "9.9")


def test_a_folder_without_a_series_says_what_a_series_needs(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    files = write_dicom_series(flair, tmp_path / "one")
    for extra in files[1:]:
        extra.unlink()
    with pytest.raises(ValueError, match=r"no DICOM series \(at least two single-frame slices"):
        read_dicom_series(tmp_path / "one")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dicom_series(tmp_path / "absent")


@pytest.mark.parametrize("transfer_syntax", [JPEG_LOSSLESS, JPEG_2000_LOSSLESS])
def test_a_compressed_series_reads_as_the_uncompressed_one(
    flair: nib.Nifti1Image, tmp_path: Path, transfer_syntax: str
) -> None:
    import pydicom

    plain = read_dicom_series(write_dicom_series(flair, tmp_path / "plain", series_uid="1.2.3")[0].parent)
    files = write_dicom_series(flair, tmp_path / "packed", series_uid="1.2.3")
    for path in files:
        transcode(path, transfer_syntax)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == transfer_syntax
    assert sum(path.stat().st_size for path in files) < 0.9 * sum(
        path.stat().st_size for path in (tmp_path / "plain").iterdir()
    )
    packed = read_dicom_series(tmp_path / "packed")
    np.testing.assert_array_equal(np.asarray(packed.dataobj), np.asarray(plain.dataobj))
    np.testing.assert_allclose(packed.affine, plain.affine)


def test_a_label_of_a_series_becomes_a_dicom_seg_over_its_slices(flair: nib.Nifti1Image, tmp_path: Path) -> None:
    import highdicom as hd
    import pydicom

    from clickadapt.volumes.dicom_seg import segmentation_of_series

    write_dicom_series(flair, tmp_path / "series", names=[f"{(index * 7) % 40:02d}.dcm" for index in range(40)])
    series = series_in_folder(tmp_path / "series")
    volume = read_dicom_series(series)
    label = np.zeros(volume.shape, np.uint8)
    label[60:90, 100:120, 5:9] = 1  # a box on slices 5..8 of the series' voxel order
    seg = hd.seg.Segmentation.from_dataset(
        pydicom.dcmread(io.BytesIO(segmentation_of_series(series, label, ["background", "lesion"])))
    )

    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "lesion"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # SNOMED CT lesion
    assert seg.StudyInstanceUID == pydicom.dcmread(series.files[0]).StudyInstanceUID
    # The labelled voxels are where the label puts them, in the patient's space (highdicom places the SEG's frames
    # from their own positions; the label's voxels go through the series' affine, RAS -> LPS) ...
    placed = seg.get_volume(combine_segments=True)
    voxels = np.argwhere(placed.array > 0)
    in_seg = (placed.affine @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3]
    voxels = np.argwhere(label > 0)
    in_label = (volume.affine @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3] * np.array([-1.0, -1.0, 1.0])
    assert len(in_seg) == 30 * 20 * 4
    assert set(map(tuple, np.round(in_seg, 3))) == set(map(tuple, np.round(in_label, 3)))
    # ... and its four frames name the four slices they lie on.
    by_position = {
        round(float(pydicom.dcmread(path).ImagePositionPatient[2]), 3): pydicom.dcmread(path).SOPInstanceUID
        for path in series.files
    }
    for frame in seg.PerFrameFunctionalGroupsSequence:
        z = round(float(frame.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
        referenced = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert referenced == by_position[z]

    with pytest.raises(ValueError, match="nothing is labelled"):
        segmentation_of_series(series, np.zeros(volume.shape, np.uint8), ["background", "lesion"])
    with pytest.raises(ValueError, match="the label has shape"):
        segmentation_of_series(series, label[:, :, :10], ["background", "lesion"])


def test_a_header_cache_reads_only_the_files_that_changed(
    flair: nib.Nifti1Image, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "series"
    write_dicom_series(flair.slicer[:, :, :12], folder)
    (folder / "notes.txt").write_text("not an image")
    cache_file = tmp_path / "store" / "cache" / "headers.json"
    first_cache = SliceHeaderCache(cache_file)
    first = find_dicom_series(sorted(folder.iterdir()), first_cache)
    first_cache.save()
    assert cache_file.is_file()

    with header_reads() as reads:
        again = find_dicom_series(sorted(folder.iterdir()), SliceHeaderCache(cache_file))
    assert reads == []  # nothing opened: every header came from the cache
    assert [series.files for series in again] == [series.files for series in first]
    assert [header.position.tolist() for header in again[0].headers] == [
        header.position.tolist() for header in first[0].headers
    ]
    np.testing.assert_array_equal(  # the stacked volume from cached headers is the one read afresh
        np.asarray(read_dicom_series(again[0]).dataobj), np.asarray(read_dicom_series(first[0]).dataobj)
    )

    # A slice rewritten (another time stamp) is read again, and only that one; a removed slice leaves the cache.
    changed, removed = again[0].files[3], again[0].files[-1]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    removed.unlink()
    cache = SliceHeaderCache(cache_file)
    with header_reads() as reads:
        assert len(find_dicom_series(sorted(folder.iterdir()), cache)[0].files) == 11
    assert reads == [changed.name]
    cache.save()
    stored = json.loads(cache_file.read_text())["entries"]
    assert str(removed.absolute()) not in stored and str(changed.absolute()) in stored

    # A damaged cache file is read afresh, with a warning naming it.
    cache_file.write_text("{not json")
    with caplog.at_level(logging.WARNING), header_reads() as reads:
        assert len(find_dicom_series(sorted(folder.iterdir()), SliceHeaderCache(cache_file))[0].files) == 11
    assert len(reads) == 11 and "headers.json is unreadable" in caplog.text
