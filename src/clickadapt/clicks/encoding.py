"""Gaussian click maps: one channel per class, concatenated to the image (method.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clickadapt.clicks.click import Click

DEFAULT_CLICK_SIGMA = 5.0


def click_maps(
    clicks: Sequence[Click], shape: tuple[int, int], num_classes: int, sigma: float = DEFAULT_CLICK_SIGMA
) -> np.ndarray:
    """Encode clicks as per-class Gaussian maps.

    Each class gets its own map: 1.0 at each of its clicks, blurred with a Gaussian of standard
    deviation ``sigma`` truncated at ``3 * sigma`` (kernel ``6σ+1``), then each non-empty map is
    rescaled to [0, 1]. Equivalent to blurring a delta image with a normalised kernel and rescaling.

    Args:
        clicks: Clicks in image coordinates.
        shape: Image size ``(H, W)``.
        num_classes: Number of classes, background included.
        sigma: Gaussian standard deviation in pixels.

    Returns:
        ``float32`` array of shape ``(num_classes, H, W)``.
    """
    height, width = shape
    maps = np.zeros((num_classes, height, width), dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel_1d = np.exp(-(offsets**2) / (2 * sigma**2)).astype(np.float32)
    kernel = np.outer(kernel_1d, kernel_1d)
    for click in clicks:
        click.validate(shape, num_classes)
        r0, r1 = max(click.row - radius, 0), min(click.row + radius + 1, height)
        c0, c1 = max(click.col - radius, 0), min(click.col + radius + 1, width)
        kr0, kc0 = r0 - (click.row - radius), c0 - (click.col - radius)
        maps[click.label, r0:r1, c0:c1] += kernel[kr0 : kr0 + (r1 - r0), kc0 : kc0 + (c1 - c0)]
    peaks = maps.reshape(num_classes, -1).max(axis=1)
    nonzero = peaks > 0
    maps[nonzero] /= peaks[nonzero][:, None, None]
    return maps


def model_input(
    image: torch.Tensor, clicks: Sequence[Click], num_classes: int, sigma: float = DEFAULT_CLICK_SIGMA
) -> torch.Tensor:
    """Stack an image ``(C, H, W)`` with its click maps into the network input ``(C + K, H, W)``."""
    shape = (int(image.shape[-2]), int(image.shape[-1]))
    maps = torch.from_numpy(click_maps(clicks, shape, num_classes, sigma)).to(image.device, image.dtype)
    return torch.cat([image, maps], dim=0)
