"""What every dataset reader provides: a cheap listing of load units and the loading of one unit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from clickadapt.data.sample import Sample

if TYPE_CHECKING:
    from clickadapt.data.registry import DatasetConfig

SlicePolicy = Literal["largest", "all"]


@dataclass(frozen=True)
class LoadUnit:
    """One image (2D datasets) or one patient volume / slice stack (brain) to load.

    Attributes:
        domain: ``Sample.domain`` of everything the unit yields.
        patient: ``Sample.patient`` of everything the unit yields.
        files: Named input files (``"image"``, ``"mask"``, ``"brainmask"``, …).
        extra: Reader-specific details (Drishti disc centre file, LGG slice numbers, …).
    """

    domain: str
    patient: str
    files: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sort_key(self) -> tuple[str, str]:
        """Units load in ``(domain, patient)`` order, the order of the samples they yield."""
        return self.domain, self.patient


class DatasetReader(ABC):
    """A reader of one on-disk layout.

    Class attributes describe what a :class:`~clickadapt.data.registry.DatasetConfig` may ask of it:
    ``splits``, ``domains`` (filter values) and ``modalities`` are the allowed values (empty = the
    field must stay ``None``). ``version`` is part of the cache key: bump it whenever the output of
    the reader changes.
    """

    name: ClassVar[str]
    task: ClassVar[str | None]
    subfolder: ClassVar[str | None]
    splits: ClassVar[tuple[str, ...]] = ()
    domains: ClassVar[tuple[str, ...]] = ()
    modalities: ClassVar[tuple[str, ...]] = ()
    default_modality: ClassVar[str | None] = None
    version: ClassVar[int] = 1

    @abstractmethod
    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """All units that match the config's split, domains and modality (no pixel data is read).

        Raises:
            FileNotFoundError: ``root`` or an expected file is missing.
        """

    @abstractmethod
    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read and preprocess one unit into samples ordered by slice index.

        Raises:
            FileNotFoundError: A file is missing.
            ValueError: A file is corrupt, or image and mask sizes differ.
        """


def select_lesion_slices(
    lesion_pixels: Sequence[int] | np.ndarray, policy: SlicePolicy, min_lesion_pixels: int = 1
) -> list[int]:
    """Choose slices of one volume (or one patient's slice stack) by lesion size.

    Args:
        lesion_pixels: Lesion pixel count of every slice.
        policy: ``"largest"``: the one slice with most lesion pixels (the lowest index on ties), as
            in the paper; ``"all"``: every slice.
        min_lesion_pixels: Slices with fewer lesion pixels are never chosen.

    Returns:
        Chosen positions in ascending order (empty when no slice has enough lesion).

    Raises:
        ValueError: Unknown policy.
    """
    counts = np.asarray(lesion_pixels, dtype=np.int64).reshape(-1)
    eligible = np.flatnonzero(counts >= max(min_lesion_pixels, 1))
    if policy == "all":
        return [int(i) for i in eligible]
    if policy == "largest":
        if eligible.size == 0:
            return []
        return [int(eligible[np.argmax(counts[eligible])])]
    raise ValueError(f"unknown slice_policy {policy!r}; allowed: ['all', 'largest']")
