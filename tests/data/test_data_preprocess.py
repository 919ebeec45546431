"""Brain and fundus preprocessing on constructed arrays with hand-checkable answers."""

from __future__ import annotations

import numpy as np
import pytest

from clickadapt.data.preprocess import (
    PreprocessingConfig,
    center_pad_or_crop,
    normalise_brain_intensities,
    pad_or_crop_label,
    preprocess_brain_slice,
    preprocess_fundus_image,
    resize_channels,
    resize_label,
    rgb_to_unit_float,
)


def test_brain_normalisation_zscores_inside_and_flattens_outside() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((40, 50))
    brain = np.zeros((40, 50), dtype=bool)
    brain[5:35, 10:40] = True
    image[brain] = rng.normal(300.0, 40.0, brain.sum())
    image[~brain] = 7.0  # a constant non-zero background, as in the BRATS files

    result = normalise_brain_intensities(image, brain)

    assert result.dtype == np.float32
    assert abs(float(result[brain].mean())) < 1e-4
    assert float(result[brain].std()) == pytest.approx(1.0, abs=1e-4)
    assert np.all(result[~brain] == result[brain].min())


def test_brain_clipping_caps_outliers_at_the_percentiles() -> None:
    values = np.arange(1.0, 1001.0)  # 1..1000
    values[-1] = 1e6  # one bright outlier
    values[0] = -1e6  # one dark outlier
    result = normalise_brain_intensities(values, np.ones_like(values, dtype=bool), (0.5, 99.5))
    # Linear-interpolation percentiles of the sorted values: 0.5 % -> between 5 and 6, 99.5 % -> between 995 and 996.
    assert result[-1] == result.max()
    assert result[0] == result.min()
    assert np.count_nonzero(result == result.max()) == 5  # 996..999 and the outlier are clipped to 995.005
    assert np.count_nonzero(result == result.min()) == 5  # the outlier and 2..5 clipped to 5.995
    assert result.max() < 2.0  # without clipping the outlier would be ~30 standard deviations out
    assert np.all(np.diff(result) >= 0)  # order preserved
    assert abs(float(result.mean())) < 1e-4 and float(result.std()) == pytest.approx(1.0, abs=1e-4)


def test_brain_mask_defaults_to_nonzero_pixels() -> None:
    image = np.zeros((8, 8))
    image[2:6, 2:6] = np.arange(16).reshape(4, 4) + 1.0
    with_default = normalise_brain_intensities(image, None, (0.0, 100.0))
    explicit = normalise_brain_intensities(image, image != 0, (0.0, 100.0))
    np.testing.assert_array_equal(with_default, explicit)
    inside = with_default[2:6, 2:6]
    assert abs(float(inside.mean())) < 1e-5 and float(inside.std()) == pytest.approx(1.0, abs=1e-5)


def test_brain_mask_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        normalise_brain_intensities(np.ones((4, 4)), np.ones((3, 3), dtype=bool))


def test_center_pad_or_crop_pads_with_fill_and_crops_symmetrically() -> None:
    array = np.arange(12, dtype=float).reshape(3, 4)
    padded = center_pad_or_crop(array, 6, fill_value=-1.0)
    assert padded.shape == (6, 6)
    np.testing.assert_array_equal(padded[1:4, 1:5], array)  # 3 rows padded as 1 before, 2 after
    assert padded[0].tolist() == [-1.0] * 6 and padded[:, 0].tolist() == [-1.0] * 6
    cropped = center_pad_or_crop(np.arange(36).reshape(6, 6), 2)
    np.testing.assert_array_equal(cropped, [[14, 15], [20, 21]])
    mixed = center_pad_or_crop(np.ones((2, 10)), 4)
    assert mixed.shape == (4, 4)


def test_preprocess_brain_slice_shape_and_padding_value() -> None:
    slice2d = np.zeros((20, 30))
    slice2d[5:15, 5:25] = np.linspace(1, 100, 200).reshape(10, 20)
    result = preprocess_brain_slice(slice2d, None, size=32)
    assert result.shape == (1, 32, 32) and result.dtype == np.float32
    assert result[0, 0, 0] == result.min()  # padding holds the outside-brain value
    assert np.count_nonzero(result > result.min()) >= 190
    with pytest.raises(ValueError, match="2D"):
        preprocess_brain_slice(np.zeros((2, 3, 4)), None, size=8)


def test_pad_or_crop_label_pads_with_background() -> None:
    label = np.ones((3, 3), dtype=np.uint8)
    result = pad_or_crop_label(label, 5)
    assert result.dtype == np.int64 and result.sum() == 9 and result[0].sum() == 0


def test_fundus_preprocessing_zscores_each_channel_after_resizing() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
    rgb[..., 2] = 17  # a constant channel is centred, not blown up
    result = preprocess_fundus_image(rgb, 32)
    assert result.shape == (3, 32, 32) and result.dtype == np.float32
    for channel in (0, 1):
        assert abs(float(result[channel].mean())) < 1e-5
        assert float(result[channel].std()) == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(result[2], 0.0, atol=1e-6)


def test_fundus_resize_is_bilinear_with_antialiasing() -> None:
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[::2] = 255  # one-pixel stripes: antialiased downsampling averages them to grey
    grey = resize_channels(rgb_to_unit_float(stripes), 16)
    assert grey.shape == (16, 16, 3)
    assert np.all(np.abs(grey[2:-2, 2:-2] - 0.5) < 0.1)


def test_rgb_to_unit_float_scales_and_rejects_bad_input() -> None:
    assert rgb_to_unit_float(np.full((2, 2, 3), 255, dtype=np.uint8)).max() == 1.0
    assert rgb_to_unit_float(np.full((2, 2), 65535, dtype=np.uint16)).shape == (2, 2, 3)
    assert rgb_to_unit_float(np.zeros((2, 2, 4), dtype=np.uint8)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rgb_to_unit_float(np.full((2, 2, 3), 200.0))
    with pytest.raises(ValueError, match="shape"):
        rgb_to_unit_float(np.zeros((2, 2, 5)))


def test_resize_label_keeps_class_values() -> None:
    label = np.zeros((100, 100), dtype=np.uint8)
    label[20:80, 20:80] = 1
    label[40:60, 40:60] = 2
    resized = resize_label(label, 50)
    assert resized.dtype == np.int64 and set(np.unique(resized).tolist()) == {0, 1, 2}
    assert (resized == 2).sum() == 100 and (resized >= 1).sum() == 900


def test_preprocessing_config_defaults_per_task() -> None:
    assert PreprocessingConfig.for_task("fundus").size == 512
    brain = PreprocessingConfig.for_task("brain")
    assert brain.size == 256 and brain.clip_percentiles == (0.5, 99.5) and brain.resize == "pad-crop"
    with pytest.raises(ValueError, match="'eye'"):
        PreprocessingConfig.for_task("eye")
