"""Preparing a 2D picture or slice for a model, and mapping the model's outputs back onto it.

Used by the library predictor (:mod:`clickadapt.predictor`) and the server alike, so both feed the model
exactly what the data readers fed it in training (:mod:`clickadapt.data.preprocess`): brain slices are
z-scored inside the brain and centre padded or cropped to ``size × size`` (no resampling); fundus
photographs are resized to ``size × size`` and z-scored per channel. :class:`Geometry` records how to undo
every step, and the ``*_to_source`` functions use it to bring masks, logits and probabilities back to the
picture's own size: logits are resampled *before* the argmax, so a mask upsampled to a large photograph has
smooth edges instead of the model grid's staircase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel

from clickadapt.data.preprocess import (
    apply_brain_intensity_stats,
    brain_intensity_stats,
    center_pad_or_crop,
    finish_brain_slice,
    pad_or_crop_label,
    preprocess_brain_slice,
    preprocess_fundus_image,
    resize_channels,
    resize_label,
    rgb_to_unit_float,
)
from clickadapt.tasks import TaskSpec

BACKGROUND_FRACTION = 0.05
"""A 2D brain slice whose minimum value covers at least this fraction is taken to have a background
(outside-brain) region of that value; otherwise every pixel counts as brain."""
DISPLAY_PERCENTILES = (0.5, 99.5)
"""Windowing of grey images for display."""
STATS_SAMPLE_PIXELS = 4 * 1024 * 1024
"""Brain pictures above this many pixels take their intensity statistics from an even subsample of about
this size (memory: a 4096 × 4096 photograph would need ~1 GB of float64 copies otherwise)."""
OUTSIDE_LOGIT = -1.0e4
"""Logit given to every foreground class where the model saw nothing (margins a centre crop cut away), so
that those pixels are background with probability 1."""


class ImageDecodeError(ValueError):
    """An upload or data file cannot be decoded (corrupt, truncated, or not an image)."""


class Geometry(BaseModel):
    """How a preprocessed image maps back onto its source.

    Attributes:
        kind: ``"pad-crop"`` (brain: centre pad or crop, no resampling) or ``"resize"`` (fundus: stretched).
        source_shape: ``(H, W)`` of the source 2D image (the upright slice for volumes).
        size: Side of the preprocessed image.
        volume_shape: Shape of the source volume as stored in the file (NIfTI only).
        affine: The source volume's 4×4 affine (NIfTI only).
        slice_index: Axial slice (in L, A, S orientation) the image was taken from (volumes only).
        axcodes: Orientation of the stored volume's axes (NIfTI only).
    """

    kind: Literal["pad-crop", "resize"]
    source_shape: tuple[int, int]
    size: int
    volume_shape: tuple[int, ...] | None = None
    affine: list[list[float]] | None = None
    slice_index: int | None = None
    axcodes: tuple[str, str, str] | None = None


@dataclass
class PreparedImage:
    """A 2D image ready for the model and the page.

    Attributes:
        pixels: ``float32 (C, H, W)`` model input (without click maps).
        display: ``uint8`` ``(H, W)`` grey or ``(H, W, 3)`` RGB picture of the same geometry.
        geometry: How to map a mask back onto the source.
    """

    pixels: np.ndarray
    display: np.ndarray
    geometry: Geometry


def guess_brain_mask(slice2d: np.ndarray) -> np.ndarray:
    """Brain pixels of a 2D slice without a mask: all but the background, if there is one.

    The background is the set of pixels holding the slice's minimum value when they cover at least
    :data:`BACKGROUND_FRACTION` of the slice (zeros of a skull-stripped PNG, the constant negative value of
    a z-scored volume); otherwise every pixel counts as brain.
    """
    values = np.asarray(slice2d)
    background = values == values.min()
    if background.mean() >= BACKGROUND_FRACTION and not background.all():
        return ~background
    return np.ones_like(background)


def window_to_uint8(values: np.ndarray, percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> np.ndarray:
    """Linear window between two percentiles of ``values`` to ``uint8`` (constant images become 0)."""
    array = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(array, percentiles)
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round(np.clip((array - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def display_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """An 8-bit picture of preprocessed pixels ``(C, H, W)``: grey for one channel, RGB for three."""
    if pixels.shape[0] == 1:
        return window_to_uint8(pixels[0])
    channels = [window_to_uint8(pixels[c], (0.0, 100.0)) for c in range(min(pixels.shape[0], 3))]
    return np.stack(channels, axis=-1)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey ``float32 (H, W)`` of a grey or RGB picture (mean of the channels; float32 halves the memory a
    4096 × 4096 picture needs, and holds 8- and 16-bit values exactly)."""
    if image.ndim == 3:
        return np.asarray(image, dtype=np.float32).mean(axis=-1, dtype=np.float32)
    return np.asarray(image, dtype=np.float32)


def prepare_image(image2d: np.ndarray, task: TaskSpec, size: int) -> PreparedImage:
    """Preprocess a 2D picture or slice for ``task`` exactly as the data readers do.

    Args:
        image2d: ``(H, W)`` grey or ``(H, W, 3)`` RGB, any numeric type.
        task: The task (brain: grey, pad/crop; fundus: RGB, resize).
        size: Side of the output.

    Returns:
        Pixels, display picture and geometry (``volume_*`` fields left empty; see :func:`prepare_slice`).

    Raises:
        ImageDecodeError: If the picture cannot be used for this task (e.g. a float RGB outside [0, 1]).
    """
    source_shape = (int(image2d.shape[0]), int(image2d.shape[1]))
    if task.image_channels == 1:
        grey = to_grey(image2d)
        mask = guess_brain_mask(grey)
        if grey.size > STATS_SAMPLE_PIXELS and min(grey.shape) >= size:
            # A huge picture: intensity statistics from an even subsample, normalisation of the kept centre
            # only (pad-crop keeps size × size of it); the full-size float64 copies would need ~1 GB.
            step = math.ceil(math.sqrt(grey.size / STATS_SAMPLE_PIXELS))
            stats = brain_intensity_stats(grey[::step, ::step], mask[::step, ::step])
            centre, centre_mask = center_pad_or_crop(grey, size), center_pad_or_crop(mask, size, False)
            pixels = finish_brain_slice(apply_brain_intensity_stats(centre, centre_mask, stats), size)
        else:
            pixels = preprocess_brain_slice(grey, mask, size)
        display = window_to_uint8(center_pad_or_crop(grey, size, float(grey.min())))
        return PreparedImage(pixels, display, Geometry(kind="pad-crop", source_shape=source_shape, size=size))
    array = np.asarray(image2d)
    if array.dtype.kind == "f" or array.dtype.itemsize > 2 or array.dtype.kind == "i":
        array = window_to_uint8(array, (0.0, 100.0))  # floats, 32-bit or signed: rescale to 8 bits first
    try:
        # Resized once, then normalised: the same numbers as preprocess_fundus_image(array) (a size × size
        # resize is the identity) without a second full-size float copy of a large photograph.
        resized = resize_channels(rgb_to_unit_float(array), size).clip(0.0, 1.0)
        pixels = preprocess_fundus_image(resized, size)
        display = np.round(resized * 255.0).astype(np.uint8)
    except ValueError as error:
        raise ImageDecodeError(f"cannot use this picture for the {task.name} task: {error}") from error
    return PreparedImage(pixels, display, Geometry(kind="resize", source_shape=source_shape, size=size))


def mask_to_source(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Map a mask from the preprocessed geometry back onto the source 2D image (upright slice).

    Brain: undo the centre pad / crop (cropped-away margins become background). Fundus: nearest-neighbour
    resize back to the source size.
    """
    height, width = geometry.source_shape
    labels = np.asarray(mask).astype(np.uint8)
    if geometry.kind == "resize":
        if labels.shape == (height, width):
            return labels
        return np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
    result = labels
    for axis, length in ((0, height), (1, width)):
        size = result.shape[axis]
        if length < size:  # was padded: drop the padding
            before = (size - length) // 2
            result = np.take(result, np.arange(before, before + length), axis=axis)
        elif length > size:  # was cropped: put back into a background-filled frame
            start = (length - size) // 2
            widths = [(0, 0), (0, 0)]
            widths[axis] = (start, length - size - start)
            result = np.pad(result, widths, mode="constant", constant_values=0)
    return np.ascontiguousarray(result)


def source_to_model_point(row: int, col: int, geometry: Geometry) -> tuple[int, int]:
    """The pixel of the preprocessed ``size × size`` grid that shows pixel ``(row, col)`` of the source.

    Args:
        row: Row in the source image (0-based).
        col: Column in the source image.
        geometry: How the source was preprocessed.

    Returns:
        ``(row, col)`` on the model grid.

    Raises:
        ValueError: If the pixel is outside the source image, or in a margin a centre crop cut away (the model
            never sees it).
    """
    height, width = geometry.source_shape
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"pixel ({row}, {col}) is outside the {height}×{width} image")
    size = geometry.size
    if geometry.kind == "resize":
        return min(int((row + 0.5) * size / height), size - 1), min(int((col + 0.5) * size / width), size - 1)
    mapped = []
    for value, length in ((row, height), (col, width)):
        offset = (size - length) // 2 if length <= size else -((length - size) // 2)
        mapped.append(value + offset)
    if not all(0 <= value < size for value in mapped):
        raise ValueError(
            f"pixel ({row}, {col}) lies in the margin of the {height}×{width} image that is cropped away: the model "
            f"sees only its central {size}×{size} pixels"
        )
    return mapped[0], mapped[1]


def mask_to_model(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A class mask of the source image brought onto the preprocessed grid (``int64 (size, size)``).

    Brain: centre pad (background) or crop, like the image. Fundus: nearest-neighbour resize.

    Raises:
        ValueError: If the mask does not have the source's shape.
    """
    labels = np.asarray(mask)
    if labels.shape != tuple(geometry.source_shape):
        raise ValueError(f"mask has shape {labels.shape}, the image is {tuple(geometry.source_shape)}")
    if geometry.kind == "resize":
        return resize_label(labels, geometry.size)
    return pad_or_crop_label(labels, geometry.size)


def logits_to_source(logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Logits ``(K, size, size)`` of the preprocessed grid brought to the source's ``(K, H, W)``.

    Fundus (``resize``): bilinear resampling of the logits, so the argmax has smooth edges at any size.
    Brain (``pad-crop``): the pad or crop is undone without resampling (the pixels are the source's); margins
    a centre crop cut away become background (:data:`OUTSIDE_LOGIT` for every other class).

    Raises:
        ValueError: If the logits are not ``(K, size, size)``.
    """
    size = geometry.size
    if logits.ndim != 3 or tuple(logits.shape[-2:]) != (size, size):
        raise ValueError(f"logits must have shape (K, {size}, {size}), got {tuple(logits.shape)}")
    height, width = geometry.source_shape
    values = logits.float()
    if geometry.kind == "resize":
        if (height, width) == (size, size):
            return values
        resized = torch.nn.functional.interpolate(
            values[None], size=(height, width), mode="bilinear", align_corners=False
        )
        return resized[0]
    result = values
    for axis, length in ((1, height), (2, width)):
        current = result.shape[axis]
        if length < current:  # was padded: drop the padding
            before = (current - length) // 2
            result = result.narrow(axis, before, length)
        elif length > current:  # was cropped: put back into a background frame
            start = (length - current) // 2
            frame_shape = list(result.shape)
            frame_shape[axis] = length
            frame = torch.full(frame_shape, OUTSIDE_LOGIT, dtype=result.dtype, device=result.device)
            frame[0] = 0.0
            frame.narrow(axis, start, current).copy_(result)
            result = frame
    return result.contiguous()


def class_map_to_source(mask: np.ndarray, geometry: Geometry, num_classes: int) -> np.ndarray:
    """A class mask of the preprocessed grid at the source's size with smooth edges (``uint8 (H, W)``).

    For a mask whose logits are gone (a stored mask): its one-hot encoding is resampled like logits by
    :func:`logits_to_source` before the argmax, instead of the blocky nearest-neighbour :func:`mask_to_source`.
    """
    labels = torch.as_tensor(np.asarray(mask).astype(np.int64))
    classes = max(num_classes, int(labels.max()) + 1 if labels.numel() else 1)
    one_hot = torch.nn.functional.one_hot(labels, classes).permute(2, 0, 1).float()
    return logits_to_source(one_hot, geometry).argmax(dim=0).numpy().astype(np.uint8)
