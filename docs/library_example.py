"""clickadapt from Python: one import, five calls.

Run it as ``python docs/library_example.py [IMAGE] [--output adapted.pt]``: it segments IMAGE (a PNG, JPEG,
TIFF or NIfTI brain slice; default: a synthetic 240×240 slice with a bright lesion) with the shipped brain
model, clicking the brightest pixel, and saves the adapted weights.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import clickadapt


def synthetic_slice(size: int = 240) -> np.ndarray:
    """A grey 240×240 'slice': a mid-grey head with a bright round lesion."""
    rows, cols = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    image[(rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.4 * size) ** 2] = 100.0
    image[(rows - 0.42 * size) ** 2 + (cols - 0.55 * size) ** 2 < (0.08 * size) ** 2] = 220.0
    return image


def main(image: np.ndarray | Path, output: Path) -> np.ndarray:
    """The five calls; returns the final mask (the image's own shape)."""
    predictor = clickadapt.load_predictor("brain", adapt="oaims", safety=True)  # 1. the model (or a .pt path)
    predictor.set_image(image)  # 2. any size, grey or RGB pixels, or a file path
    pixels = np.asarray(image) if isinstance(image, np.ndarray) else None
    row, col = np.unravel_index(np.argmax(pixels), pixels.shape) if pixels is not None else (120, 120)
    mask = predictor.add_click(int(row), int(col), "lesion")  # 3. a click in the image's own coordinates
    print(f"after one click: {int(mask.sum())} lesion pixels of {mask.size}")
    final = predictor.finish()  # 4. accept the mask: the model learns from this image
    predictor.save(output)  # 5. keep the adapted weights
    print(f"final mask {final.shape}, model version {predictor.model_version}, saved to {output}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="image file (default: a synthetic slice)")
    parser.add_argument("--output", type=Path, default=Path(tempfile.gettempdir()) / "adapted.pt")
    arguments = parser.parse_args()
    main(arguments.image if arguments.image is not None else synthetic_slice(), arguments.output)
