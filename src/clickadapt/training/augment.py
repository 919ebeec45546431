"""Training augmentation built from MONAI dictionary transforms."""

from __future__ import annotations

import math

from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from clickadapt.training.config import AugmentationConfig


def build_augmentation(config: AugmentationConfig, colour: bool) -> Compose:
    """Random geometric and intensity transforms on ``{"image": (C,H,W), "label": (1,H,W)}``.

    Args:
        config: Probabilities and ranges.
        colour: Apply per-channel (colour) scaling and shifts, for RGB fundus photographs.

    Returns:
        A MONAI ``Compose``; call ``set_random_state(seed)`` on it for determinism.
    """
    keys = ["image", "label"]
    transforms = [
        RandFlipd(keys, prob=config.flip_probability, spatial_axis=1),
        RandAffined(
            keys,
            prob=config.affine_probability,
            rotate_range=math.radians(config.rotate_degrees),
            scale_range=(config.scale_range, config.scale_range),
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandScaleIntensityd("image", factors=0.15, prob=config.intensity_probability, channel_wise=colour),
        RandShiftIntensityd("image", offsets=0.15, prob=config.intensity_probability, channel_wise=colour),
        RandGaussianNoised("image", prob=config.intensity_probability / 2, std=config.noise_std),
    ]
    if not colour:
        transforms.append(RandAdjustContrastd("image", prob=config.intensity_probability / 2, gamma=config.gamma_range))
    return Compose(transforms)
