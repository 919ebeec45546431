"""Labelled source images for the source sentinel and the source rehearsal: validated, on the model's device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clickadapt.adaptation.model_state import ModelState


@dataclass(frozen=True)
class _LabelledSourceImage:
    image: torch.Tensor
    label: np.ndarray


def _labelled_source_image(image: np.ndarray, label: np.ndarray, state: ModelState, role: str) -> _LabelledSourceImage:
    """Validate one labelled source image (``role``: sentinel or rehearsal) and put it on the model's device."""
    task = state.task
    pixels = np.asarray(image, dtype=np.float32)
    classes = np.asarray(label)
    if pixels.ndim != 3 or pixels.shape[0] != task.image_channels or classes.shape != pixels.shape[1:]:
        raise ValueError(
            f"{role} images must be (C, H, W) with C = {task.image_channels} and labels (H, W) of the same "
            f"size, got {pixels.shape} and {classes.shape}"
        )
    if not np.any(classes > 0):
        raise ValueError(f"a {role} label has no foreground: the simulated user would have nothing to click")
    if classes.min() < 0 or classes.max() >= task.num_classes:
        raise ValueError(
            f"a {role} label holds classes {classes.min()}..{classes.max()}; task {task.name!r} has classes "
            f"0..{task.num_classes - 1}"
        )
    if not np.isfinite(pixels).all():
        raise ValueError(f"a {role} image contains NaN or infinite values")
    return _LabelledSourceImage(torch.as_tensor(pixels, device=state.device), classes.astype(np.int64))
