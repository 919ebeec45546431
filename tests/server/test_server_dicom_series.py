"""A DICOM series in the data folder is served as one volume: the same slices, masks and export as the NIfTI it
stands for; a series that does not stack is listed file by file with the reason logged."""

from __future__ import annotations

import gzip
import io
import logging
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from server_helpers import AppFactory

from clickadapt.server.service.series import resolve_series, zip_member_path
from clickadapt.volumes.dicom import read_dicom_series
from dicom_testing import header_reads, quantised, write_dicom_series

MSLUB = "brain/mslub/cross_sectional/MNI/patient07"
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
LESIONS = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
SLAB = slice(45, 75)
"""30 axial slices of patient 07 with lesions in them."""
SLICE = 12
FLAIR_UID = "1.2.826.0.1.3680043.8.498.7001"


@pytest.fixture
def data_folder(data_root: Path, tmp_path: Path) -> Path:
    """``flair.nii.gz`` (patient 07's FLAIR slab), the same slab as the DICOM series ``study/flair/`` (file names in
    another order than the slices) beside its lesion label volume in the series' own voxel grid, and
    ``study/t2/``: a series with a slice missing."""
    folder = tmp_path / "data"
    flair = quantised(nib.load(str(data_root / MSLUB / FLAIR)).slicer[:, :, SLAB])
    folder.mkdir()
    nib.save(flair, str(folder / "flair.nii.gz"))
    count = flair.shape[2]
    names = [f"x{(7 * i) % count:02d}.dcm" for i in range(count)]
    write_dicom_series(flair, folder / "study" / "flair", names=names, series_uid=FLAIR_UID)
    series = read_dicom_series(folder / "study" / "flair")
    lesions = np.asarray(nib.load(str(data_root / MSLUB / LESIONS)).dataobj)[:, :, SLAB] > 0.5
    in_series_grid = nib.as_closest_canonical(nib.Nifti1Image(lesions.astype(np.uint8), flair.affine))
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(in_series_grid.affine), nib.orientations.io_orientation(series.affine)
    )
    label = nib.orientations.apply_orientation(np.asarray(in_series_grid.dataobj), ornt)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), series.affine), str(folder / "study" / "flair" / "lesions.nii.gz"))
    write_dicom_series(flair, folder / "study" / "t2", description="T2 AX", skip=[10])
    return folder


def test_a_series_is_one_volume_with_the_nifti_scans_slices(
    make_client: AppFactory, data_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        client = make_client(data=data_folder, use_samples=False)
    log = caplog.text
    assert "study/flair/series 3 FLAIR AX: DICOM series of 30 files read as one volume" in log
    assert "study/t2/series 3 T2 AX: its 29 DICOM files are listed one by one" in log
    assert "uneven slice spacing: 2 mm between IM00" in log

    images = client.get("/api/images").json()
    names = [image["name"] for image in images]
    series_images = [image for image in images if image["name"].startswith("study/flair/series 3 FLAIR AX")]
    assert len(series_images) == 1 and series_images[0]["num_slices"] == 30
    assert not any(name.startswith("study/flair/x") for name in names), names  # its files are not listed one by one
    assert sum(name.startswith("study/t2/IM") for name in names) == 29  # the broken series' files are
    series_source = series_images[0]["source_id"]
    nifti_source = next(image["source_id"] for image in images if image["name"].startswith("flair.nii.gz"))

    # The same slice through both: the same picture and, with the same click, the same mask.
    pictures, masks = [], []
    for source in (series_source, nifti_source):
        image = client.post(f"/api/sources/{source}/slices", json={"index": SLICE}).json()
        pictures.append(client.get(f"/api/images/{image['id']}/display.png").content)
        client.post(f"/api/images/{image['id']}/open")
        clicked = client.post(f"/api/images/{image['id']}/clicks", json={"row": 20, "col": 24, "label": 1})
        assert clicked.status_code == 200, clicked.text
        masks.append(client.get(f"/api/images/{image['id']}/mask.png").content)
        assert image["has_reference"] is (source == series_source)
    assert pictures[0] == pictures[1]
    assert masks[0] == masks[1]

    # The label volume in the series' folder is its reference, slice for slice.
    marked = client.get(f"/api/sources/{series_source}/reference").json()
    assert marked["reference"] == "study/flair/lesions.nii.gz" and sum(marked["pixels"]) > 0

    # Its NIfTI export has the series' own geometry.
    exported = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(f"/api/sources/{series_source}/export").content))
    expected = read_dicom_series(data_folder / "study" / "flair")
    assert exported.shape == expected.shape
    np.testing.assert_allclose(exported.affine, expected.affine, atol=1e-5)
    assert np.asarray(exported.dataobj).any()

    # For a PACS: the same label as a DICOM SEG over the series' own images, its voxels where the NIfTI's are.
    assert client.get(f"/api/sources/{series_source}").json()["dicom_series"] is True
    assert client.get(f"/api/sources/{nifti_source}").json()["dicom_series"] is False
    seg_file = client.get(f"/api/sources/{series_source}/export", params={"format": "seg"})
    assert seg_file.status_code == 200 and seg_file.headers["content-type"] == "application/dicom"
    assert 'filename="series_3_FLAIR_AX_seg.dcm"' in seg_file.headers["content-disposition"]
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_file.content)))
    first_file = pydicom.dcmread(next((data_folder / "study" / "flair").glob("x*.dcm")))
    assert seg.StudyInstanceUID == first_file.StudyInstanceUID and seg.SegmentSequence[0].SegmentLabel == "lesion"
    placed = seg.get_volume(combine_segments=True)
    voxels = np.argwhere(placed.array > 0)
    in_seg = (placed.affine @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3]
    voxels = np.argwhere(np.asarray(exported.dataobj) > 0)
    in_nifti = (exported.affine @ np.c_[voxels, np.ones(len(voxels))].T).T[:, :3] * np.array([-1.0, -1.0, 1.0])
    assert set(map(tuple, np.round(in_seg, 2))) == set(map(tuple, np.round(in_nifti, 2)))
    refused = client.get(f"/api/sources/{nifti_source}/export", params={"format": "seg"})
    assert refused.status_code == 400 and "is not a DICOM series of the data folder" in refused.json()["detail"]

    # 3D Slicer (MONAI Label) sees it under the same id, as that NIfTI, with its reference and the page's slices;
    # the series that does not stack is left out there (its files are no volumes either).
    objects = client.get("/datastore/?output=all").json()["objects"]
    listed = {
        entry["image"]["info"]["name"]: (image_id, sorted(entry["labels"])) for image_id, entry in objects.items()
    }
    assert listed == {
        "flair.nii.gz": (nifti_source, ["web"]),
        "study/flair/series 3 FLAIR AX": (series_source, ["reference", "web"]),
    }
    # listed again, the series comes from the datastore's header cache: no slice header is opened again
    with header_reads() as reads:
        assert client.get("/datastore/?output=all").json()["objects"].keys() == objects.keys()
    assert reads == []
    download = client.get("/datastore/image", params={"image": series_source})
    assert download.status_code == 200
    downloaded = nib.Nifti1Image.from_bytes(gzip.decompress(download.content))
    np.testing.assert_array_equal(np.asarray(downloaded.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_allclose(downloaded.affine, expected.affine, atol=1e-5)
    web = client.get("/datastore/label", params={"label": series_source, "tag": "web"})
    assert web.status_code == 200
    np.testing.assert_array_equal(
        np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(web.content)).dataobj), np.asarray(exported.dataobj)
    )


def test_series_are_listed_and_added_by_folder(make_client: AppFactory, data_folder: Path, tmp_path: Path) -> None:
    # A link in the series' folder to a slice outside the data folder that would continue the series: not followed.
    flair = nib.load(str(data_folder / "flair.nii.gz"))
    beyond = np.asarray(flair.affine) @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, flair.shape[2]], [0, 0, 0, 1]])
    next_slice = nib.Nifti1Image(np.asarray(flair.dataobj)[:, :, -1:], beyond)
    (outside,) = write_dicom_series(next_slice, tmp_path / "elsewhere", names=["x30.dcm"], series_uid=FLAIR_UID)
    (data_folder / "study" / "flair" / "x30.dcm").symlink_to(outside)
    client = make_client(data=data_folder, use_samples=False)
    files = client.get("/api/data/files").json()
    series_entries = [entry for entry in files if entry.startswith("study/flair/#")]
    assert len(series_entries) == 1 and not any(entry.startswith("study/flair/x") for entry in files)
    assert "study/flair/lesions.nii.gz" in files and sum(entry.startswith("study/t2/IM") for entry in files) == 29

    by_folder = client.post("/api/data/images", json={"path": "study/flair", "slice": 3})
    assert by_folder.status_code == 201, by_folder.text
    by_uid = client.post("/api/data/images", json={"path": series_entries[0], "slice": 3}).json()
    assert by_folder.json()["image"]["id"] == by_uid["image"]["id"]
    assert by_uid["source"]["kind"] == "volume" and by_uid["source"]["num_slices"] == 30
    # where its files are read from (start-up, or a series no longer in the memory cache): still 30
    assert len(resolve_series("study/flair", data_folder.resolve()).files) == 30
    assert len(resolve_series(series_entries[0], data_folder.resolve()).files) == 30
    missing = client.post("/api/data/images", json={"path": "study/flair/#1.2.3"})
    assert missing.status_code == 404 and "no DICOM series with SeriesInstanceUID 1.2.3" in missing.json()["detail"]
    broken = client.post("/api/data/images", json={"path": "study/t2"})
    assert broken.status_code == 400 and "uneven slice spacing" in broken.json()["detail"]
    outside = client.post("/api/data/images", json={"path": "../#1.2.3"})
    assert outside.status_code == 400 and "outside the data folder" in outside.json()["detail"]


def test_a_series_keeps_its_images_over_a_restart(make_client: AppFactory, data_folder: Path, tmp_path: Path) -> None:
    first = make_client(data=data_folder, use_samples=False, store=tmp_path / "kept")
    listed = [image["id"] for image in first.get("/api/images").json()]
    files = first.get("/api/data/files").json()
    first.__exit__(None, None, None)
    # The restart and the listing find the series from the store's header cache: no slice header is read again.
    with header_reads() as reads:
        again = make_client(data=data_folder, use_samples=False, store=tmp_path / "kept")
        assert [image["id"] for image in again.get("/api/images").json()] == listed
        assert again.get("/api/data/files").json() == files
    assert reads == []


def zipped(folder: Path, prefix: str = "") -> bytes:
    """The files under ``folder`` as a zip (names relative to it, under ``prefix``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
        archive.writestr("__MACOSX/._x00.dcm", b"resource fork")
    return buffer.getvalue()


def test_a_zipped_series_uploads_as_the_nifti_it_stands_for(make_client: AppFactory, data_folder: Path) -> None:
    client = make_client()
    payload = zipped(data_folder / "study" / "flair", prefix="export/FLAIR/")
    first = client.post("/api/uploads?filename=patient07.zip&slice=12", content=payload)
    assert first.status_code == 201, first.text
    source = first.json()["source"]
    assert source["name"] == "patient07 (series 3 FLAIR AX)" and source["kind"] == "volume"
    assert source["num_slices"] == 30
    again = client.post("/api/uploads?filename=again.zip&slice=12", content=payload).json()
    assert again["source"]["id"] == source["id"]  # the same series is stored once

    # The same slice as the NIfTI of the same scan, uploaded: the same picture.
    series = read_dicom_series(data_folder / "study" / "flair")
    nifti = client.post("/api/uploads?filename=flair.nii&slice=12", content=series.to_bytes()).json()
    assert nifti["source"]["id"] != source["id"]
    pictures = [
        client.get(f"/api/images/{image['id']}/display.png").content
        for image in (first.json()["image"], nifti["image"])
    ]
    assert pictures[0] == pictures[1]


def test_a_zip_that_is_not_one_series_is_refused_by_name(make_client: AppFactory, data_folder: Path) -> None:
    client = make_client()
    both = zipped(data_folder / "study")  # flair/ and t2/: two series
    refused = client.post("/api/uploads?filename=study.zip", content=both)
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert detail.startswith(
        f"study.zip holds 2 DICOM series; upload one at a time: series 3 FLAIR AX ({FLAIR_UID}, 30"
    )
    assert "; series 3 T2 AX (" in detail and ", 29 files)" in detail
    gap = client.post("/api/uploads?filename=t2.zip", content=zipped(data_folder / "study" / "t2"))
    assert gap.status_code == 400
    detail = gap.json()["detail"]
    assert detail.startswith("uneven slice spacing: 2 mm between IM00") and "t2.zip" in detail
    assert "clickadapt-series-" not in detail  # the server's unpacking folder is not shown
    none = client.post("/api/uploads?filename=notes.zip", content=_zip_of({"a.txt": b"x"}))
    assert none.status_code == 400 and "notes.zip: no DICOM series (at least two" in none.json()["detail"]
    broken = client.post("/api/uploads?filename=broken.zip", content=b"PK\x03\x04" + b"\x00" * 64)
    assert broken.status_code == 400 and "broken.zip: not a readable zip file" in broken.json()["detail"]


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_zip_members_cannot_land_outside_the_unpacking_folder(tmp_path: Path) -> None:
    inside = tmp_path / "unpacked"
    inside.mkdir()
    assert zip_member_path(inside, "../../evil.dcm") == (inside / "evil.dcm").resolve()
    assert zip_member_path(inside, "/etc/passwd") == (inside / "etc" / "passwd").resolve()
    assert zip_member_path(inside, "a/../../b/IM1.dcm") == (inside / "a" / "b" / "IM1.dcm").resolve()
    assert zip_member_path(inside, "__MACOSX/._IM1.dcm") is None and zip_member_path(inside, "a/.DS_Store") is None


def test_single_files_of_a_series_leave_the_list_unless_labelled(
    make_client: AppFactory, data_folder: Path, tmp_path: Path
) -> None:
    # As a store of an older version holds them: two of the series' files registered one by one, one labelled.
    store = tmp_path / "older"
    first = make_client(data=data_folder, use_samples=False, store=store)
    untouched = first.post("/api/data/images", json={"path": "study/flair/x03.dcm"}).json()["image"]["id"]
    labelled = first.post("/api/data/images", json={"path": "study/flair/x04.dcm"}).json()["image"]["id"]
    first.post(f"/api/images/{labelled}/open")
    assert first.post(f"/api/images/{labelled}/clicks", json={"row": 20, "col": 24}).status_code == 200
    first.__exit__(None, None, None)
    again = make_client(data=data_folder, use_samples=False, store=store)
    listed = [image["id"] for image in again.get("/api/images").json()]
    assert untouched not in listed and labelled in listed  # the series' volume stands for the first
    assert any(image["name"].startswith("study/flair/series 3 FLAIR AX") for image in again.get("/api/images").json())
    assert again.get(f"/api/images/{untouched}").status_code == 200  # kept in the store, only not listed
