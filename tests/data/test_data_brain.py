"""Brain readers: slice policies and orientation on constructed NIfTI volumes, then the real files."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

import clickadapt.data.brain as brain_module
from clickadapt.data.base import select_lesion_slices
from clickadapt.data.files import axial_slice, read_nifti
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.data.sample import Sample


@pytest.fixture(scope="module", autouse=True)
def cached_nifti_reads() -> Iterator[None]:
    """Decode each NIfTI volume once per module (the gzip decode dominates the real-data brain tests)."""
    cached = functools.lru_cache(maxsize=6)(brain_module.read_nifti)

    def read_copy(path: Path) -> np.ndarray:
        return cached(path).copy()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(brain_module, "read_nifti", read_copy)
        yield
    cached.cache_clear()


LAS = np.diag([-1.0, 1.0, 1.0, 1.0])
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_mslub_patient(root: Path, patient: str, image: np.ndarray, lesion: np.ndarray) -> None:
    folder = root / patient
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), LAS), folder / "FLAIR_test.nii.gz")
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), LAS), folder / "GOLD_STANDARD_test.nii.gz")


def constructed_volume() -> tuple[np.ndarray, np.ndarray]:
    """A 16×20×10 'brain' with lesions of 5, 20 and 12 voxels on slices 2, 5 and 7."""
    rng = np.random.default_rng(0)
    image = np.zeros((16, 20, 10))
    image[2:14, 2:18, :] = rng.uniform(10, 100, size=(12, 16, 10))
    lesion = np.zeros(image.shape, dtype=bool)
    lesion[4:9, 5, 2] = True  # 5 voxels
    lesion[4:8, 5:10, 5] = True  # 20 voxels
    lesion[4:7, 5:9, 7] = True  # 12 voxels
    return image, lesion


def test_select_lesion_slices_policies() -> None:
    counts = [0, 3, 9, 9, 1]
    assert select_lesion_slices(counts, "largest") == [2]  # the first of the tied maxima
    assert select_lesion_slices(counts, "all") == [1, 2, 3, 4]
    assert select_lesion_slices(counts, "all", min_lesion_pixels=4) == [2, 3]
    assert select_lesion_slices(counts, "largest", min_lesion_pixels=10) == []
    assert select_lesion_slices([0, 0], "all") == []


def test_largest_policy_picks_the_slice_with_most_lesion(tmp_path: Path) -> None:
    image, lesion = constructed_volume()
    write_mslub_patient(tmp_path, "patient01", image, lesion)
    largest = load_samples(DatasetConfig(reader="mslub", root=tmp_path, size=32))
    assert [(s.patient, s.slice_index) for s in largest] == [("patient01", 5)]
    assert largest[0].label.sum() == 20 and largest[0].domain == "FLAIR"
    every = load_samples(
        DatasetConfig(reader="mslub", root=tmp_path, size=32, slice_policy="all", min_lesion_pixels=10)
    )
    assert [s.slice_index for s in every] == [5, 7]
    assert [int(s.label.sum()) for s in every] == [20, 12]


def test_volume_statistics_are_per_volume(tmp_path: Path) -> None:
    image, lesion = constructed_volume()
    write_mslub_patient(tmp_path, "patient01", image, lesion)
    samples = load_samples(DatasetConfig(reader="mslub", root=tmp_path, size=32, slice_policy="all"))
    # Recompute the whole-volume z-score by hand and compare on slice 5.
    inside = image[image != 0]
    low, high = np.percentile(inside, [0.5, 99.5])
    clipped = np.clip(inside, low, high)
    expected_value = (np.clip(image[2, 2, 5], low, high) - clipped.mean()) / clipped.std()
    by_slice = {s.slice_index: s for s in samples}
    shown = by_slice[5].image[0]
    assert shown.shape == (32, 32)
    assert np.isclose(shown, expected_value, atol=1e-4).any()
    assert shown[0, 0] == pytest.approx((low - clipped.mean()) / clipped.std(), abs=1e-4)


def test_orientation_is_the_same_whatever_the_file_axes(tmp_path: Path) -> None:
    volume = np.zeros((6, 8, 3), dtype=np.float32)
    volume[0, 7, 1] = 1.0  # LAS voxel: patient's right-most (x=0), anterior-most (y=7)
    nib.save(nib.Nifti1Image(volume, LAS), tmp_path / "las.nii.gz")
    nib.save(nib.Nifti1Image(volume[:, ::-1].copy(), LPS), tmp_path / "lps.nii.gz")  # same anatomy, y flipped
    las = axial_slice(read_nifti(tmp_path / "las.nii.gz"), 1)
    lps = axial_slice(read_nifti(tmp_path / "lps.nii.gz"), 1)
    np.testing.assert_array_equal(las, lps)
    assert las.shape == (8, 6)
    assert las[0, 0] == 1.0  # anterior at the top, patient's right on the left (radiological)


def test_corrupt_nifti_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08 this is not a volume")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz"):
        read_nifti(broken)
    with pytest.raises(FileNotFoundError, match=r"absent\.nii\.gz"):
        read_nifti(tmp_path / "absent.nii.gz")


def test_mismatched_lesion_mask_names_both_files(tmp_path: Path) -> None:
    image, lesion = constructed_volume()
    write_mslub_patient(tmp_path, "patient01", image, lesion[:, :, :9])
    with pytest.raises(
        ValueError, match=r"FLAIR_test.nii.gz.*\(16, 20, 10\).*GOLD_STANDARD_test.nii.gz.*\(16, 20, 9\)"
    ):
        load_samples(DatasetConfig(reader="mslub", root=tmp_path))


def test_unknown_modality_is_named() -> None:
    with pytest.raises(ValueError, match=r"'T2'.*\['FLAIR', 'T1c'\]"):
        DatasetConfig(reader="brats", modality="T2")


def check_brain_sample(sample: Sample) -> None:
    assert sample.task == "brain"
    assert sample.image.shape == (1, 256, 256) and sample.image.dtype == np.float32
    assert sample.label.shape == (256, 256) and sample.label.dtype == np.int64
    assert set(np.unique(sample.label).tolist()) == {0, 1}


@pytest.fixture(scope="module")
def brats_pat0001_all(real_config: Any) -> list[Sample]:
    return load_samples(real_config("brats", split="test", modality="T1c", patients=["pat0001"], slice_policy="all"))


@pytest.mark.realdata
def test_brats_reads_every_tumour_slice(brats_pat0001_all: list[Sample], data_root: Path) -> None:
    samples = brats_pat0001_all
    assert 40 <= len(samples) <= 120
    assert [s.slice_index for s in samples] == sorted(s.slice_index or 0 for s in samples)
    for sample in samples[:: max(1, len(samples) // 5)]:
        check_brain_sample(sample)
        assert sample.key.startswith("brats/T1c/pat0001/")
    # The 240×240 slices are padded by 8 on each side with the outside-brain value.
    assert np.all(samples[0].image[0, :8] == samples[0].image.min())
    assert np.all(samples[0].label[:8] == 0)
    # Whole tumour = every OT label > 0, counted on the raw volume.
    labels = np.asanyarray(
        nib.load(data_root / "brain/brats-deepmedic/test/brats_2013_pat0001_1/OTMultiClass.nii.gz").dataobj
    )
    assert sum(int(s.label.sum()) for s in samples) == int((labels > 0).sum())


@pytest.mark.realdata
def test_brats_largest_is_the_biggest_of_all(brats_pat0001_all: list[Sample], real_config: Any) -> None:
    (largest,) = load_samples(real_config("brats", split="test", modality="T1c", patients=["pat0001"]))
    biggest = max(brats_pat0001_all, key=lambda s: (int(s.label.sum()), -(s.slice_index or 0)))
    assert largest.slice_index == biggest.slice_index
    np.testing.assert_array_equal(largest.image, biggest.image)


@pytest.mark.realdata
def test_mslub_reads_the_requested_modality(real_config: Any) -> None:
    samples = load_samples(real_config("mslub", modality="T2", limit=1))
    (sample,) = samples
    check_brain_sample(sample)
    assert sample.dataset == "mslub" and sample.domain == "T2" and sample.patient == "patient07"


@pytest.mark.realdata
def test_lgg_sites_modalities_and_per_slice_stats(real_config: Any, data_root: Path) -> None:
    samples = load_samples(real_config("lgg", domains=["HT"], modality="post-contrast", limit=2))
    assert len(samples) == 2
    for sample in samples:
        check_brain_sample(sample)
        assert sample.domain == "HT-post-contrast" and sample.patient.startswith("TCGA_HT_")
        assert sample.source.endswith(".webp")
        raw = np.asarray(Image.open(sample.source))[..., 2].astype(float)
        brain = raw != 0
        assert abs(float(sample.image[0][brain].mean())) < 1e-3
        assert float(sample.image[0][brain].std()) == pytest.approx(1.0, abs=1e-3)
        mask = np.asarray(Image.open(sample.source.replace(".webp", "_mask.webp")).convert("L"))
        np.testing.assert_array_equal(sample.label, mask > 0)


LGG_COPY_PATIENT = "TCGA_HT_7877_19980917"  # pre- and post-contrast are FLAIR copies (selected_slices.tsv)


def copy_lgg_patient_as_tif(data_root: Path, patient: str, target: Path) -> Path:
    """Write one real LGG patient in the original download's layout (``.tif``) under ``target``."""
    source = data_root / "brain/lgg-kaggle3m/kaggle_3m" / patient
    folder = target / "kaggle_3m" / patient
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.webp")):
        pixels = np.asarray(Image.open(path).convert("L") if path.stem.endswith("_mask") else Image.open(path))
        tifffile.imwrite(folder / f"{path.stem}.tif", pixels)
    return target / "kaggle_3m"


@pytest.mark.realdata
def test_lgg_reads_the_original_tif_layout_like_the_webp_copy(data_root: Path, tmp_path: Path) -> None:
    patient = "TCGA_EZ_7264_20010816"
    tif_root = copy_lgg_patient_as_tif(data_root, patient, tmp_path)
    webp = load_samples(
        DatasetConfig(reader="lgg", root=data_root / "brain/lgg-kaggle3m/kaggle_3m", patients=[patient])
    )
    tif = load_samples(DatasetConfig(reader="lgg", root=tif_root, patients=[patient]))
    assert len(webp) == len(tif) > 0
    for a, b in zip(webp, tif, strict=True):
        assert b.source.endswith(".tif") and a.source.endswith(".webp")
        assert (a.patient, a.slice_index) == (b.patient, b.slice_index)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)


@pytest.mark.realdata
@pytest.mark.parametrize("layout", ["webp", "tif"])
def test_lgg_skips_a_patient_whose_sequence_is_a_flair_copy(
    data_root: Path, tmp_path: Path, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = data_root / "brain/lgg-kaggle3m/kaggle_3m"
    if layout == "tif":
        root = copy_lgg_patient_as_tif(data_root, LGG_COPY_PATIENT, tmp_path)
    table = (data_root / "brain/lgg-kaggle3m/selected_slices.tsv").read_text().splitlines()
    header = table[0].split("\t")
    row = dict(zip(header, next(line.split("\t") for line in table if line.startswith(LGG_COPY_PATIENT)), strict=True))
    assert row["pre_contrast_is_flair"] == row["post_contrast_is_flair"] == "1"
    for modality in ("pre-contrast", "post-contrast"):
        with caplog.at_level(logging.WARNING, logger="clickadapt.data.brain"):
            samples = load_samples(
                DatasetConfig(reader="lgg", root=root, patients=[LGG_COPY_PATIENT], modality=modality)
            )
        assert samples == []
        assert f"skipping LGG patient {LGG_COPY_PATIENT}: its {modality} sequence is a copy of FLAIR" in caplog.text
    flair = load_samples(
        DatasetConfig(reader="lgg", root=root, patients=[LGG_COPY_PATIENT], modality="FLAIR", slice_policy="all")
    )
    assert len(flair) == int(row["lesion_slices_included"])


@pytest.mark.realdata
def test_lgg_flair_copies_match_the_shared_table(real_config: Any, data_root: Path) -> None:
    """Every HT patient the table marks as a copy is skipped; every other HT patient is read."""
    table = (data_root / "brain/lgg-kaggle3m/selected_slices.tsv").read_text().splitlines()
    header = table[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in table[1:]]
    ht = [row for row in rows if row["institution"] == "HT"]
    assert len(ht) == 29
    samples = load_samples(real_config("lgg", domains=["HT"], modality="post-contrast", slice_policy="largest"))
    kept = {s.patient for s in samples}
    assert kept == {row["patient"] for row in ht if row["post_contrast_is_flair"] == "0"}
    assert len(kept) == 26


@pytest.mark.realdata
def test_lgg_all_policy_keeps_every_lesion_slice(real_config: Any, data_root: Path) -> None:
    samples = load_samples(real_config("lgg", patients=["TCGA_EZ_7264_20010816"], slice_policy="all"))
    table = (data_root / "brain/lgg-kaggle3m/selected_slices.tsv").read_text().splitlines()
    row = next(line.split("\t") for line in table if line.startswith("TCGA_EZ_7264_20010816"))
    assert [s.slice_index for s in samples] == [int(n) for n in row[4].split(",")]
