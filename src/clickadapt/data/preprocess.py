"""Intensity normalisation and resizing, shared by the dataset readers and the server.

Brain MRI (as in the paper): clip to the 0.5–99.5 percentile of the voxels inside the brain, z-score
with the brain voxels' mean and standard deviation, set everything outside the brain to the minimum
in-brain value, then centre pad or crop to ``size × size`` without resampling (labels are padded
with background). Statistics come from the whole volume for NIfTI readers and from the slice itself
for 2D inputs.

Fundus photographs: RGB scaled to [0, 1], resized to ``size × size`` (bilinear with antialiasing;
labels nearest-neighbour), then z-scored per channel with the image's own statistics.

Every image returned here is ``float32`` with shape ``(C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

DEFAULT_BRAIN_SIZE = 256
DEFAULT_FUNDUS_SIZE = 512
DEFAULT_CLIP_PERCENTILES = (0.5, 99.5)
# Below this standard deviation an image (or channel) is treated as constant: it is centred, not scaled.
MIN_STD = 1e-6


class PreprocessingConfig(BaseModel):
    """How images are turned into network input; stored in checkpoints so the server can repeat it.

    Attributes:
        task: ``"fundus"`` or ``"brain"``.
        size: Output height and width.
        clip_percentiles: Brain only: intensity clipping range, percentiles of the in-brain voxels.
        brain_mask: Brain only: what counts as brain when no mask is given (``"nonzero"``).
        resize: Fundus resizes (bilinear, antialiased); brain pads or crops around the centre.
    """

    task: Literal["fundus", "brain"]
    size: int = Field(gt=0)
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES
    brain_mask: Literal["nonzero"] = "nonzero"
    resize: Literal["bilinear", "pad-crop"] = "bilinear"

    @classmethod
    def for_task(cls, task: str, size: int | None = None) -> PreprocessingConfig:
        """The paper's preprocessing for ``task`` at ``size`` (default 512 fundus, 256 brain).

        Raises:
            ValueError: ``task`` is neither ``"fundus"`` nor ``"brain"``.
        """
        if task == "fundus":
            return cls(task="fundus", size=size or DEFAULT_FUNDUS_SIZE, resize="bilinear")
        if task == "brain":
            return cls(task="brain", size=size or DEFAULT_BRAIN_SIZE, resize="pad-crop")
        raise ValueError(f"unknown task {task!r}; known: ['brain', 'fundus']")


def default_size(task: str) -> int:
    """Default output size of a task: 512 for fundus, 256 for brain."""
    return PreprocessingConfig.for_task(task).size


# --------------------------------------------------------------------------------------------- brain


@dataclass(frozen=True)
class BrainIntensityStats:
    """Clipping range and z-score parameters of one volume (or slice), from its brain voxels.

    Attributes:
        low: Lower clipping bound (the lower percentile of the brain values).
        high: Upper clipping bound.
        mean: Mean of the clipped brain values.
        std: Their standard deviation (1 when the brain is constant).
    """

    low: float
    high: float
    mean: float
    std: float

    @property
    def outside_value(self) -> float:
        """The minimum in-brain z-value, given to every voxel outside the brain."""
        return (self.low - self.mean) / self.std


def resolve_brain_mask(image: np.ndarray, brain_mask: np.ndarray | None) -> np.ndarray:
    """The boolean brain mask to use for ``image``: ``brain_mask``, or the non-zero voxels when ``None``;
    every voxel when that mask is empty.

    Raises:
        ValueError: ``brain_mask`` differs in shape from ``image``.
    """
    if brain_mask is None:
        mask = np.asarray(image) != 0
    else:
        mask = np.asarray(brain_mask).astype(bool)
        if mask.shape != np.shape(image):
            raise ValueError(f"brain mask shape {mask.shape} differs from image shape {np.shape(image)}")
    return mask if mask.any() else np.ones(mask.shape, dtype=bool)


def brain_intensity_stats(
    image: np.ndarray,
    brain_mask: np.ndarray | None = None,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
) -> BrainIntensityStats:
    """Percentile clipping bounds, mean and standard deviation of the brain voxels.

    Args:
        image: A slice or a volume.
        brain_mask: Same shape, marking brain voxels; ``None`` = the non-zero voxels. When the mask is
            empty every voxel counts as brain.
        clip_percentiles: Lower and upper percentile of the in-brain values to clip to.

    Raises:
        ValueError: The mask's shape differs from the image's, or the percentiles are not increasing
            within [0, 100].
    """
    low_pct, high_pct = clip_percentiles
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {clip_percentiles}")
    values = np.asarray(image)[resolve_brain_mask(image, brain_mask)].astype(np.float64)
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    clipped = np.clip(values, low, high)
    std = float(clipped.std())
    return BrainIntensityStats(low=low, high=high, mean=float(clipped.mean()), std=std if std > MIN_STD else 1.0)


def apply_brain_intensity_stats(
    image: np.ndarray, brain_mask: np.ndarray | None, stats: BrainIntensityStats
) -> np.ndarray:
    """Clip and z-score ``image`` with ``stats``; voxels outside ``brain_mask`` get ``stats.outside_value``.

    Works on the whole volume the stats came from or on any slice of it, given the matching slice of
    the volume's resolved brain mask (:func:`resolve_brain_mask`); ``None`` means the non-zero voxels.

    Raises:
        ValueError: ``brain_mask`` differs in shape from ``image``.
    """
    mask = np.asarray(image) != 0 if brain_mask is None else np.asarray(brain_mask).astype(bool)
    if mask.shape != np.shape(image):
        raise ValueError(f"brain mask shape {mask.shape} differs from image shape {np.shape(image)}")
    result = (np.clip(np.asarray(image, dtype=np.float64), stats.low, stats.high) - stats.mean) / stats.std
    result[~mask] = stats.outside_value
    return result.astype(np.float32)


def normalise_brain_intensities(
    image: np.ndarray,
    brain_mask: np.ndarray | None = None,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
) -> np.ndarray:
    """Clip, z-score and flatten the background of a brain image of any dimension.

    Args:
        image: A slice or a volume.
        brain_mask: Boolean (or 0/1) array of the same shape marking brain voxels; ``None`` uses the
            non-zero voxels of ``image``. When the mask is empty every voxel counts as brain.
        clip_percentiles: Lower and upper percentile of the in-brain values to clip to.

    Returns:
        ``float32`` array of the same shape: in-brain values have mean 0 and standard deviation 1
        (after clipping); outside-brain voxels hold the minimum in-brain value.

    Raises:
        ValueError: The mask's shape differs from the image's, or the percentiles are not increasing
            within [0, 100].
    """
    mask = resolve_brain_mask(image, brain_mask)
    return apply_brain_intensity_stats(image, mask, brain_intensity_stats(image, mask, clip_percentiles))


def center_pad_or_crop(array: np.ndarray, size: int, fill_value: float = 0.0) -> np.ndarray:
    """Pad (with ``fill_value``) or crop the last two axes symmetrically to ``size × size``.

    When the difference is odd the extra row/column is padded (or removed) at the end.

    Args:
        array: Array of shape ``(..., H, W)``.
        size: Target height and width.
        fill_value: Value of padded pixels.

    Returns:
        Array of shape ``(..., size, size)`` and the same dtype.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    result = array
    for axis in (-2, -1):
        length = result.shape[axis]
        if length > size:
            start = (length - size) // 2
            result = np.take(result, np.arange(start, start + size), axis=axis)
        elif length < size:
            before = (size - length) // 2
            widths = [(0, 0)] * result.ndim
            widths[axis] = (before, size - length - before)
            result = np.pad(result, widths, mode="constant", constant_values=fill_value)
    return result


def finish_brain_slice(normalised_slice: np.ndarray, size: int) -> np.ndarray:
    """Pad or crop an already normalised 2D slice to ``(1, size, size)`` ``float32``.

    Padding uses the slice's minimum, i.e. the outside-brain value of :func:`normalise_brain_intensities`.
    """
    if normalised_slice.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {normalised_slice.shape}")
    fill = float(normalised_slice.min()) if normalised_slice.size else 0.0
    return center_pad_or_crop(normalised_slice.astype(np.float32), size, fill)[None]


def preprocess_brain_slice(
    slice2d: np.ndarray,
    brain_mask: np.ndarray | None,
    size: int = DEFAULT_BRAIN_SIZE,
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
) -> np.ndarray:
    """Normalise one 2D MRI slice with its own statistics and bring it to ``size × size``.

    Args:
        slice2d: ``(H, W)`` intensities (any numeric dtype).
        brain_mask: ``(H, W)`` brain mask, or ``None`` for the non-zero pixels.
        size: Output height and width (pad or crop around the centre, no resampling).
        clip_percentiles: Clipping range in percentiles of the in-brain values.

    Returns:
        ``float32`` array ``(1, size, size)``.

    Raises:
        ValueError: ``slice2d`` is not 2D or the mask does not match it.
    """
    array = np.asarray(slice2d)
    if array.ndim != 2:
        raise ValueError(f"expected a 2D slice (H, W), got shape {array.shape}")
    return finish_brain_slice(normalise_brain_intensities(array, brain_mask, clip_percentiles), size)


def pad_or_crop_label(label: np.ndarray, size: int) -> np.ndarray:
    """Pad (with background 0) or crop a 2D label map to ``size × size``; returns ``int64``."""
    return center_pad_or_crop(np.asarray(label).astype(np.int64), size, 0)


# -------------------------------------------------------------------------------------------- fundus


def rgb_to_unit_float(rgb: np.ndarray) -> np.ndarray:
    """Bring an RGB(A) or grey image to ``float32`` ``(H, W, 3)`` in [0, 1].

    Integer images are divided by their dtype's maximum; float images must already lie in [0, 1]. Grey
    images are repeated over three channels; an alpha channel is dropped.

    Raises:
        ValueError: Unsupported shape, or a float image outside [0, 1].
    """
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    array = array[..., :3]
    if np.issubdtype(array.dtype, np.integer):
        return (array.astype(np.float32) / float(np.iinfo(array.dtype).max)).astype(np.float32)
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.float32)
    values = array.astype(np.float32)
    if values.size and (float(values.min()) < 0.0 or float(values.max()) > 1.0):
        raise ValueError(f"float RGB image must lie in [0, 1], got range [{values.min():.3g}, {values.max():.3g}]")
    return values


def resize_channels(image_hwc: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, antialiased resize of a float ``(H, W, C)`` image to ``(size, size, C)`` (Pillow)."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image_hwc[..., c], dtype=np.float32)).resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        for c in range(image_hwc.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D label map (values < 256) to ``size × size``; returns ``int64``."""
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(f"expected a 2D label map, got shape {array.shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise ValueError(f"label values must lie in [0, 255], got [{array.min()}, {array.max()}]")
    if array.shape == (size, size):
        return array.astype(np.int64)
    resized = Image.fromarray(array.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(np.int64)


def preprocess_fundus_image(rgb: np.ndarray, size: int = DEFAULT_FUNDUS_SIZE) -> np.ndarray:
    """Scale to [0, 1], resize to ``size × size`` and z-score each channel.

    Args:
        rgb: ``(H, W, 3)`` image (``uint8``/``uint16``, or float in [0, 1]); grey or RGBA accepted.
        size: Output height and width. Non-square inputs are stretched.

    Returns:
        ``float32`` array ``(3, size, size)`` with per-channel mean 0 and standard deviation 1.
    """
    resized = resize_channels(rgb_to_unit_float(rgb), size).astype(np.float64)
    mean = resized.mean(axis=(0, 1))
    std = resized.std(axis=(0, 1))
    std = np.where(std > MIN_STD, std, 1.0)
    normalised = (resized - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)
