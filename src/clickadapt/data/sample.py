"""One preprocessed 2D image with its label map and where it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """A preprocessed 2D sample.

    Attributes:
        image: ``float32`` array of shape ``(C, H, W)``; fundus RGB scaled to [0, 1] then
            normalised per channel, brain one z-scored modality.
        label: ``int64`` array of shape ``(H, W)`` with class indices of the task.
        task: Task name (``"fundus"`` or ``"brain"``).
        dataset: Dataset name, e.g. ``"rimone-dl"``, ``"brats"``.
        domain: Acquisition domain inside the dataset, e.g. ``"r2"``, ``"FLAIR"``, ``"T1c"``.
        patient: Patient or image identifier (patients are kept disjoint between splits).
        slice_index: Axial slice index for slices of a volume, ``None`` for 2D images.
        source: Path of the file the image was read from.
    """

    image: np.ndarray
    label: np.ndarray
    task: str
    dataset: str
    domain: str
    patient: str
    slice_index: int | None
    source: str

    @property
    def key(self) -> str:
        """A stable identifier: ``dataset/domain/patient[/slice]``."""
        base = f"{self.dataset}/{self.domain}/{self.patient}"
        return base if self.slice_index is None else f"{base}/{self.slice_index}"

    @property
    def shape(self) -> tuple[int, int]:
        """Spatial size ``(H, W)``."""
        return int(self.label.shape[0]), int(self.label.shape[1])
