"""Fundus readers on the real files (a few images each) and their label helpers on constructed masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clickadapt.data.fundus import (
    binarise_soft_map,
    crop_square,
    dofe_mask_to_label,
    fundus_label,
)
from clickadapt.data.preprocess import resize_label
from clickadapt.data.registry import load_samples
from clickadapt.data.sample import Sample


def check_fundus_sample(sample: Sample, size: int) -> None:
    assert sample.task == "fundus"
    assert sample.image.shape == (3, size, size) and sample.image.dtype == np.float32
    assert sample.label.shape == (size, size) and sample.label.dtype == np.int64
    assert set(np.unique(sample.label).tolist()) == {0, 1, 2}
    assert np.allclose(sample.image.mean(axis=(1, 2)), 0.0, atol=1e-4)
    assert np.allclose(sample.image.std(axis=(1, 2)), 1.0, atol=1e-3)


def test_fundus_label_disc_is_rim_union_cup() -> None:
    disc = np.zeros((6, 6), dtype=bool)
    disc[1:5, 1:5] = True
    cup = np.zeros((6, 6), dtype=bool)
    cup[2:4, 2:4] = True
    label = fundus_label(disc, cup)
    np.testing.assert_array_equal(label > 0, disc)
    np.testing.assert_array_equal(label == 2, cup)
    assert (label == 1).sum() == 16 - 4
    with pytest.raises(ValueError, match="shape"):
        fundus_label(disc, cup[:5])


def test_soft_map_majority_binarisation() -> None:
    # Drishti-GS1 soft maps: 0, 64, 128, 191, 255 = 0..4 of 4 experts; majority = at least 2.
    soft = np.array([[0, 64, 128], [191, 255, 127]], dtype=np.uint8)
    np.testing.assert_array_equal(binarise_soft_map(soft), [[False, False, True], [True, True, False]])


def test_dofe_mask_levels() -> None:
    mask = np.array([[0, 128, 255], [10, 120, 250]], dtype=np.uint8)
    np.testing.assert_array_equal(dofe_mask_to_label(mask), [[2, 1, 0], [2, 1, 0]])
    rgb = np.repeat(mask[..., None], 3, axis=-1)
    np.testing.assert_array_equal(dofe_mask_to_label(rgb), dofe_mask_to_label(mask))


def test_crop_square_is_centred_and_stays_inside() -> None:
    image = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(crop_square(image, 5, 5, 4), image[3:7, 3:7])
    np.testing.assert_array_equal(crop_square(image, 0, 9, 4), image[0:4, 6:10])  # shifted inside
    assert crop_square(image, 5, 5, 40).shape == (10, 10)


@pytest.mark.realdata
def test_rimone_real_images_match_their_masks(real_config: Any, data_root: Path) -> None:
    samples = load_samples(real_config("rimone-dl", split="train", domains=["r2"], limit=2, size=128))
    assert [s.patient for s in samples] == sorted(s.patient for s in samples)
    for sample in samples:
        check_fundus_sample(sample, 128)
        assert sample.dataset == "rimone-dl" and sample.domain == "r2" and sample.patient.startswith("r2_")
        # disc = rim ∪ cup: the label's foreground is the disc mask, its class 2 the cup mask.
        masks = data_root / "fundus/rimone-dl/RIM-ONE_DL_reference_segmentations"
        disc_file = next(masks.glob(f"*/{sample.patient}-1-Disc-T.png"))
        disc = np.asarray(Image.open(disc_file).convert("L")) > 127
        cup = np.asarray(Image.open(disc_file.with_name(f"{sample.patient}-1-Cup-T.png")).convert("L")) > 127
        np.testing.assert_array_equal(sample.label > 0, resize_label(disc, 128) > 0)
        np.testing.assert_array_equal(sample.label == 2, resize_label(cup & disc, 128) > 0)


@pytest.mark.realdata
def test_rimone_domains_and_splits_filter(real_config: Any) -> None:
    samples = load_samples(real_config("rimone-dl", split="test", domains=["r1", "r3"], limit=3, size=64))
    assert all(s.domain in {"r1", "r3"} for s in samples) and len(samples) == 3


@pytest.mark.realdata
def test_drishti_crop_centres_the_disc(real_config: Any) -> None:
    samples = load_samples(real_config("drishti-gs1", split="Test", limit=1, size=128))
    (sample,) = samples
    check_fundus_sample(sample, 128)
    assert sample.patient == "drishtiGS_001" and sample.domain == "drishti-gs1"
    rows, cols = np.nonzero(sample.label > 0)
    assert abs(rows.mean() - 64) < 12 and abs(cols.mean() - 64) < 12
    disc_fraction = (sample.label > 0).mean()
    assert 0.15 < disc_fraction < 0.6  # the default 0.6 crop makes the disc a large part of the picture


@pytest.mark.realdata
def test_drishti_crop_fraction_changes_disc_size(real_config: Any) -> None:
    tight = load_samples(real_config("drishti-gs1", split="Test", limit=1, size=64, disc_crop_fraction=0.5))[0]
    wide = load_samples(real_config("drishti-gs1", split="Test", limit=1, size=64, disc_crop_fraction=1.0))[0]
    assert (tight.label > 0).mean() == pytest.approx(4 * (wide.label > 0).mean(), rel=0.1)


@pytest.mark.realdata
def test_origa_reads_label_maps(real_config: Any) -> None:
    samples = load_samples(real_config("origa", limit=2, size=96))
    assert [s.patient for s in samples] == ["621", "622"]
    for sample in samples:
        check_fundus_sample(sample, 96)


@pytest.mark.realdata
def test_dofe_reads_every_domain(real_config: Any) -> None:
    samples = load_samples(real_config("dofe", split="test", size=64))
    assert [s.domain for s in samples] == ["Domain1", "Domain2", "Domain3", "Domain4"]
    for sample in samples:
        check_fundus_sample(sample, 64)
        # ROIs are disc-centred: the centre pixel is disc.
        assert sample.label[32, 32] > 0
