"""Helpers of the volume tests: an oblique, non-RAS test volume with a lesion blob, and a tiny network that
segments the bright region near positive clicks (so that geometry and propagation can be checked exactly)."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from clickadapt.adaptation.model_state import ModelState
from clickadapt.models.checkpoint import CheckpointMeta
from clickadapt.models.factory import ModelConfig
from clickadapt.predictor import Predictor
from clickadapt.tasks import BRAIN

LAS_SHAPE = (40, 36, 24)
"""Shape of the test volume in (L, A, S) order."""
BLOB_CENTRE = (22, 17, 12)
"""Lesion centre in (L, A, S) voxels."""
BLOB_RADII = (7.0, 6.0, 4.5)
"""Lesion semi-axes in voxels: it spans (L, A, S) slices 8..16 along S."""
BRAIN_VALUE, LESION_VALUE = 100.0, 300.0
MODEL_SIZE = 48


def las_blob() -> np.ndarray:
    """Boolean lesion ellipsoid in (L, A, S) order."""
    grid = np.indices(LAS_SHAPE, dtype=np.float64)
    distance = sum(((grid[a] - BLOB_CENTRE[a]) / BLOB_RADII[a]) ** 2 for a in range(3))
    return np.asarray(distance <= 1.0)


def las_image(seed: int = 0) -> np.ndarray:
    """Brain value everywhere (all voxels are brain), brighter lesion, a little noise, a marker-free volume."""
    rng = np.random.default_rng(seed)
    image = np.full(LAS_SHAPE, BRAIN_VALUE) + rng.normal(0.0, 2.0, LAS_SHAPE)
    image[las_blob()] = LESION_VALUE
    return image.astype(np.float32)


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3×3 rotation about a world axis."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


# File axis d holds (L, A, S) axis FILE_ORDER[d], flipped where FILE_FLIPS[d]: (S, P, L) on disk.
FILE_ORDER = (2, 1, 0)
FILE_FLIPS = (False, True, False)


def to_file_order(las: np.ndarray) -> np.ndarray:
    """An (L, A, S) array stored in the test file's voxel order (S, P, L)."""
    array = np.transpose(las, FILE_ORDER)
    for axis, flip in enumerate(FILE_FLIPS):
        if flip:
            array = np.flip(array, axis=axis)
    return np.ascontiguousarray(array)


def oblique_affine() -> np.ndarray:
    """Voxel-to-RAS affine of the (S, P, L) file: anisotropic voxels, rotated 20° and 10° (oblique)."""
    zooms = np.array([2.5, 1.2, 1.0])
    # World direction of each file axis before the rotation: S = +z, P = −y, L = −x.
    axes = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]).T  # columns
    matrix = rotation(0, 20.0) @ rotation(2, 10.0) @ axes @ np.diag(zooms)
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = (-40.0, 25.0, -12.5)
    return affine


def write_oblique_volume(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the test image and its ground-truth lesion as NIfTI in the (S, P, L) oblique file geometry."""
    affine = oblique_affine()
    image_path, label_path = folder / "image.nii.gz", folder / "lesion.nii.gz"
    nib.save(nib.Nifti1Image(to_file_order(las_image(seed)), affine), image_path)
    nib.save(nib.Nifti1Image(to_file_order(las_blob().astype(np.uint8)), affine), label_path)
    return image_path, label_path


class BrightNearClicks(nn.Module):
    """Lesion where the (normalised) image is bright and a positive click is near, unless a negative click is
    nearer: a fixed, exact stand-in for a trained network (one parameter, so strategies can bind to it)."""

    def __init__(self, threshold: float = 2.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        image, negative, positive = inputs[:, 0], inputs[:, 1], inputs[:, 2]
        lesion = torch.minimum(4.0 * (image - self.threshold), 40.0 * (positive - 0.01))
        lesion = torch.minimum(lesion, 40.0 * (0.9 - negative)) * self.scale  # a hole of ~2 px
        return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def bright_predictor(strategy: str = "frozen") -> Predictor:
    """A brain predictor of :class:`BrightNearClicks` at ``MODEL_SIZE`` (pad-crop, σ = 5)."""
    from clickadapt.adaptation.strategies import make_strategy

    state = ModelState(BrightNearClicks(), BRAIN, make_strategy(strategy, BRAIN))
    meta = CheckpointMeta(task="brain", model=ModelConfig(), preprocessing={"size": MODEL_SIZE, "click_sigma": 5.0})
    return Predictor(state, meta, undo_depth=0)


class BlobNearClicks(BrightNearClicks):
    """Lesion wherever a positive click is near, whatever the image: a network that answers any seed click with
    a blob (what the shipped brain model does past a lesion's end), to check the "faded" stop rule."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        negative, positive = inputs[:, 1], inputs[:, 2]
        lesion = torch.minimum(40.0 * (positive - 0.6), 40.0 * (0.9 - negative)) * self.scale
        return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def blob_predictor() -> Predictor:
    """A brain predictor of :class:`BlobNearClicks` (frozen), otherwise like :func:`bright_predictor`."""
    from clickadapt.adaptation.strategies import make_strategy

    state = ModelState(BlobNearClicks(), BRAIN, make_strategy("frozen", BRAIN))
    meta = CheckpointMeta(task="brain", model=ModelConfig(), preprocessing={"size": MODEL_SIZE, "click_sigma": 5.0})
    return Predictor(state, meta, undo_depth=0)
