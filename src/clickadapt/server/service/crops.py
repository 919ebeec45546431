"""Cropping a photograph to its region of interest, and mapping masks between the crop and the whole picture.

The fundus model was trained on crops centred on the optic disc, the disc filling about two thirds of the side
(RIM-ONE's, and the benchmark's Drishti-GS1 and ORIGA crops). A photograph in which the disc is small is
stretched onto the model's grid with the disc far smaller than anything it learnt from, and the masks suffer:
on the 1024-px Drishti-GS1 test pictures as shared (disc at a median 38 % of the side), disc Dice after 10
clicks of the simulated user was 53.5 against 94.5 on the benchmark's disc-centred crops of the same 40
images (cup 70.1 against 90.5; frozen shipped model, click seed 0, 2026-12-02). The page's crop tool lets the
user draw a box around the disc: the box becomes a square of the picture (:func:`square_box`), which becomes
a new image of the list, prepared like any photograph; its masks are exported, and labels accepted, in the
whole picture's frame (:func:`embed_in_picture`, :func:`cut_from_picture`).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

MIN_CROP_SIDE = 16
"""Smallest side of a crop in picture pixels (a smaller box is refused: it is a slip, not a region)."""


class ImageCrop(BaseModel):
    """Where a cropped image lies in the picture it was cut from (stored with the image's geometry).

    Attributes:
        root: Id of the uncropped image whose picture the crop was cut from.
        top: First row of the crop in the picture.
        left: First column of the crop in the picture.
        size: Side of the square crop in picture pixels.
        picture_shape: ``(H, W)`` of the whole picture.
    """

    root: str
    top: int = Field(ge=0)
    left: int = Field(ge=0)
    size: int = Field(ge=1)
    picture_shape: tuple[int, int]


def square_box(
    top: float, left: float, bottom: float, right: float, picture_shape: tuple[int, int]
) -> tuple[int, int, int]:
    """The square of the picture a user's box asks for: centred on the box, as long as its longer side, moved
    (not shrunk) to lie inside the picture, at most the picture's shorter side.

    Args:
        top, left, bottom, right: The box in picture pixels (``bottom`` and ``right`` exclusive).
        picture_shape: ``(H, W)`` of the picture.

    Returns:
        ``(top, left, size)`` of the square.

    Raises:
        ValueError: An empty box, or a square smaller than :data:`MIN_CROP_SIDE` pixels.
    """
    height, width = picture_shape
    if bottom <= top or right <= left:
        raise ValueError(f"the crop box is empty: rows {top:g}..{bottom:g}, columns {left:g}..{right:g}")
    size = min(round(max(bottom - top, right - left)), height, width)
    if size < MIN_CROP_SIDE:
        raise ValueError(f"the crop box is {size} pixels of the picture; draw one of at least {MIN_CROP_SIDE}")
    row = min(max(round((top + bottom - size) / 2), 0), height - size)
    col = min(max(round((left + right - size) / 2), 0), width - size)
    return int(row), int(col), int(size)


def embed_in_picture(mask: np.ndarray, crop: ImageCrop) -> np.ndarray:
    """A mask of the crop (``(size, size)``) placed in the whole picture's frame, background elsewhere."""
    if mask.shape != (crop.size, crop.size):
        raise ValueError(f"a mask of the crop must be {crop.size}×{crop.size}, got {mask.shape}")
    frame = np.zeros(crop.picture_shape, dtype=mask.dtype)
    frame[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size] = mask
    return frame


def cut_from_picture(label: np.ndarray, crop: ImageCrop) -> np.ndarray:
    """The crop's part of a label given in the whole picture's frame.

    Raises:
        ValueError: A label of another shape than the picture's.
    """
    if label.shape != crop.picture_shape:
        height, width = crop.picture_shape
        raise ValueError(
            f"the label has shape {label.shape}; this image is a crop of a {height}×{width} picture, "
            f"give the label in that picture's frame ({height}, {width})"
        )
    return label[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
