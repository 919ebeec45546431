"""Dataset selection: one typed config names a reader and filters, :func:`load_samples` returns samples.

Example::

    from clickadapt.data.registry import DatasetConfig, load_samples

    source = DatasetConfig(reader="rimone-dl", split="train", domains=["r2"])
    target = DatasetConfig(reader="brats", split="test", modality="T1c", slice_policy="largest")
    samples = load_samples(target, cache_dir=Path(".cache/clickadapt"))

Samples come back sorted by ``(dataset, domain, patient, slice_index)`` (numeric slice order), which is
the order of :attr:`Sample.key` with slice numbers compared as numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clickadapt.data.base import DatasetReader, LoadUnit, SlicePolicy
from clickadapt.data.brain import BratsReader, LggReader, MslubReader
from clickadapt.data.files import require_dir
from clickadapt.data.folder import FolderReader
from clickadapt.data.fundus import (
    DEFAULT_DISC_CROP_FRACTION,
    DofeReader,
    DrishtiGS1Reader,
    OrigaReader,
    RimOneDLReader,
)
from clickadapt.data.preprocess import DEFAULT_CLIP_PERCENTILES, PreprocessingConfig, default_size
from clickadapt.data.sample import Sample
from clickadapt.paths import default_data_root
from clickadapt.tasks import TASKS

logger = logging.getLogger(__name__)

# Bump when the cache file layout or any shared preprocessing changes (readers have their own version).
CACHE_FORMAT_VERSION = 1

READERS: dict[str, DatasetReader] = {
    reader.name: reader
    for reader in (
        RimOneDLReader(),
        DrishtiGS1Reader(),
        OrigaReader(),
        DofeReader(),
        FolderReader(),
        BratsReader(),
        MslubReader(),
        LggReader(),
    )
}


def get_reader(name: str) -> DatasetReader:
    """The reader registered under ``name``.

    Raises:
        ValueError: Unknown name (the message lists the known readers).
    """
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown reader {name!r}; allowed: {sorted(READERS)}") from None


def _canonical(value: str, allowed: Sequence[str], field: str, reader: str) -> str:
    """``value`` spelt as in ``allowed`` (case-insensitive match), or a ``ValueError`` listing them."""
    if not allowed:
        raise ValueError(f"reader {reader!r} has no {field}; leave {field} unset (got {value!r})")
    for candidate in allowed:
        if candidate.lower() == value.lower():
            return candidate
    raise ValueError(f"unknown {field} {value!r} for reader {reader!r}; allowed: {list(allowed)}")


class PatientFold(BaseModel):
    """A fixed patient subset chosen by rule, written in the config before any training.

    The candidate patients (after ``split``, ``domains``, ``patients`` and ``exclude_patients``) are
    sorted by id; the fold is every ``every``-th of them starting at position ``offset``.

    Attributes:
        every: Fold stride (5 = every fifth patient).
        offset: Position of the fold's first patient, ``0 <= offset < every``.
        keep: ``"fold"`` keeps the fold's patients (e.g. validation), ``"rest"`` the others (training).
    """

    model_config = ConfigDict(extra="forbid")

    every: int = Field(ge=2)
    offset: int = Field(default=0, ge=0)
    keep: Literal["fold", "rest"] = "fold"

    @model_validator(mode="after")
    def _offset_below_stride(self) -> PatientFold:
        if self.offset >= self.every:
            raise ValueError(f"patient_fold.offset must be below every={self.every}, got {self.offset}")
        return self

    def select(self, patients: Sequence[str]) -> set[str]:
        """The patients of ``patients`` this rule keeps."""
        ordered = sorted(set(patients))
        fold = set(ordered[self.offset :: self.every])
        return fold if self.keep == "fold" else set(ordered) - fold


class DatasetConfig(BaseModel):
    """Which samples to load and how to preprocess them.

    After validation ``task``, ``size`` and (for brain readers) ``modality`` hold their resolved values,
    so a dumped config is explicit.

    Attributes:
        reader: ``rimone-dl``, ``drishti-gs1``, ``origa``, ``dofe``, ``folder``, ``brats``, ``mslub`` or
            ``lgg``.
        root: Dataset folder; ``None`` = ``default_data_root()/<reader's subfolder>``. Required for
            ``folder``.
        task: ``fundus`` or ``brain``; follows from the reader, required for ``folder``.
        split: rimone-dl ``train``/``test``; drishti-gs1 ``Training``/``Test``; brats
            ``train``/``validation``/``test``; dofe ``train``/``test``; ``None`` = all.
        domains: rimone-dl name prefixes ``r1``/``r2``/``r3``; dofe ``Domain1``..``Domain4``; lgg
            institution codes ``CS``/``DU``/``EZ``/``FG``/``HT``; ``None`` = all.
        modality: brats ``FLAIR``/``T1c``; mslub ``FLAIR``/``T1``/``T1POST``/``T2``; lgg
            ``pre-contrast``/``FLAIR``/``post-contrast`` (TIFF channels 0/1/2). Default ``FLAIR``.
        patients: Keep only these patient ids (``Sample.patient``); an id not found is an error.
        exclude_patients: Drop these patient ids.
        patient_fold: Keep a rule-based patient subset (:class:`PatientFold`), applied last.
        slice_policy: Brain: ``largest`` = one slice per volume (LGG: per patient), the one with most
            lesion pixels, as in the paper; ``all`` = every slice with at least ``min_lesion_pixels``.
        min_lesion_pixels: Brain: slices with less lesion are never used.
        size: Output height and width; default 512 fundus, 256 brain.
        limit: Keep the first ``limit`` samples after sorting (``None`` = all).
        disc_crop_fraction: Drishti-GS1: side of the square crop around the disc centre as a fraction
            of the image side.
        clip_percentiles: Brain: intensity clipping range in percentiles of the in-brain voxels.
    """

    model_config = ConfigDict(extra="forbid")

    reader: str
    root: Path | None = None
    task: str | None = None
    split: str | None = None
    domains: list[str] | None = None
    modality: str | None = None
    patients: list[str] | None = None
    exclude_patients: list[str] = Field(default_factory=list)
    patient_fold: PatientFold | None = None
    slice_policy: SlicePolicy = "largest"
    min_lesion_pixels: int = Field(default=1, ge=1)
    size: int | None = Field(default=None, gt=0)
    limit: int | None = Field(default=None, ge=0)
    disc_crop_fraction: float = Field(default=DEFAULT_DISC_CROP_FRACTION, gt=0.0, le=1.0)
    clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES

    @model_validator(mode="after")
    def _resolve_and_check(self) -> DatasetConfig:
        reader = get_reader(self.reader)
        if reader.task is None:
            if self.task is None:
                raise ValueError(f"reader {self.reader!r} needs a task; allowed: {sorted(TASKS)}")
            if self.task not in TASKS:
                raise ValueError(f"unknown task {self.task!r}; allowed: {sorted(TASKS)}")
            if self.root is None:
                raise ValueError(f"reader {self.reader!r} needs a root folder (with images/ and masks/)")
        elif self.task is None:
            self.task = reader.task
        elif self.task != reader.task:
            raise ValueError(f"reader {self.reader!r} reads task {reader.task!r}, not {self.task!r}")
        if self.split is not None:
            self.split = _canonical(self.split, reader.splits, "split", self.reader)
        if self.domains is not None:
            self.domains = [_canonical(d, reader.domains, "domain", self.reader) for d in self.domains]
        if self.modality is not None:
            self.modality = _canonical(self.modality, reader.modalities, "modality", self.reader)
        else:
            self.modality = reader.default_modality
        if self.size is None:
            self.size = default_size(self.task)
        low, high = self.clip_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles}")
        return self

    @property
    def resolved_task(self) -> str:
        """The task (always set after validation)."""
        assert self.task is not None
        return self.task

    @property
    def resolved_size(self) -> int:
        """Output size (always set after validation)."""
        assert self.size is not None
        return self.size

    @property
    def resolved_modality(self) -> str:
        """The modality of a brain reader.

        Raises:
            ValueError: The reader has no modalities.
        """
        if self.modality is None:
            raise ValueError(f"reader {self.reader!r} has no modality")
        return self.modality

    def resolved_root(self) -> Path:
        """``root``, or the reader's folder under :func:`~clickadapt.paths.default_data_root`."""
        if self.root is not None:
            return Path(self.root)
        subfolder = get_reader(self.reader).subfolder
        assert subfolder is not None  # enforced by the validator for readers without one
        return default_data_root() / subfolder

    def preprocessing(self) -> PreprocessingConfig:
        """The preprocessing these samples get, in the form stored in checkpoints."""
        config = PreprocessingConfig.for_task(self.resolved_task, self.resolved_size)
        return config.model_copy(update={"clip_percentiles": self.clip_percentiles})


def sample_sort_key(sample: Sample) -> tuple[str, str, str, int]:
    """``(dataset, domain, patient, slice_index)`` with slice numbers compared as numbers."""
    return sample.dataset, sample.domain, sample.patient, -1 if sample.slice_index is None else sample.slice_index


def data_digest(samples: Iterable[Sample]) -> str:
    """SHA-256 over the sample keys in order (one per line): identifies a training set."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _select_units(config: DatasetConfig, units: list[LoadUnit]) -> list[LoadUnit]:
    if config.patients is not None:
        known = {unit.patient for unit in units}
        unknown = sorted(set(config.patients) - known)
        if unknown:
            preview = sorted(known)[:20]
            raise ValueError(
                f"patients {unknown} not found for {config.reader!r} with this split/domain; known: {preview}"
            )
        wanted = set(config.patients)
        units = [unit for unit in units if unit.patient in wanted]
    excluded = set(config.exclude_patients)
    units = [unit for unit in units if unit.patient not in excluded]
    if config.patient_fold is not None:
        kept = config.patient_fold.select([unit.patient for unit in units])
        units = [unit for unit in units if unit.patient in kept]
    return sorted(units, key=lambda unit: unit.sort_key)


def cache_key(config: DatasetConfig) -> str:
    """Hex SHA-256 of everything that determines the samples: config, resolved root and reader version."""
    reader = get_reader(config.reader)
    payload = {
        "config": config.model_dump(mode="json"),
        "root": str(config.resolved_root().resolve()),
        "reader": reader.name,
        "reader_version": reader.version,
        "cache_format": CACHE_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


META_FIELDS = ("task", "dataset", "domain", "patient", "slice_index", "source")


def save_samples_npz(path: Path, samples: Sequence[Sample], extra: dict[str, Any] | None = None) -> None:
    """Write samples to one compressed ``.npz`` atomically (images ``float32``, labels ``uint8``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"samples": [{name: getattr(s, name) for name in META_FIELDS} for s in samples], **(extra or {})}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for index, sample in enumerate(samples):
        arrays[f"image_{index}"] = np.asarray(sample.image, dtype=np.float32)  # no copy when already float32
        arrays[f"label_{index}"] = sample.label.astype(np.uint8)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_samples_npz(path: Path) -> list[Sample]:
    """Read samples written by :func:`save_samples_npz`.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: The file is not a readable sample archive (naming it).
    """
    if not path.is_file():
        raise FileNotFoundError(f"sample archive not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            return [
                Sample(
                    image=archive[f"image_{index}"].astype(np.float32),
                    label=archive[f"label_{index}"].astype(np.int64),
                    **{name: fields[name] for name in META_FIELDS},
                )
                for index, fields in enumerate(meta["samples"])
            ]
    except Exception as error:  # zip, zlib, json and key errors all mean the same: unusable file
        raise ValueError(f"cannot read sample archive {path}: {error}") from error


def load_samples(config: DatasetConfig, cache_dir: Path | None = None) -> list[Sample]:
    """Load, preprocess and select samples, in deterministic order.

    Args:
        config: What to load.
        cache_dir: If given, the result is stored there as ``<reader>-<hash>.npz`` (hash of the config,
            the resolved root and the reader version) and reused by later calls.

    Returns:
        Samples sorted by ``(dataset, domain, patient, slice_index)``, at most ``config.limit``.

    Raises:
        FileNotFoundError: The root folder or a file is missing (naming the path).
        ValueError: Unknown patient ids, a corrupt file, or an image/mask size mismatch.
    """
    reader = get_reader(config.reader)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{reader.name}-{cache_key(config)[:24]}.npz"
        if cache_path.is_file():
            try:
                return load_samples_npz(cache_path)
            except ValueError as error:
                logger.warning("ignoring unreadable cache file: %s", error)
    root = require_dir(config.resolved_root(), f"{reader.name} data folder")
    units = _select_units(config, reader.list_units(config, root))
    samples: list[Sample] = []
    for unit in units:
        if config.limit is not None and len(samples) >= config.limit:
            break
        samples.extend(reader.load_unit(unit, config))
    samples.sort(key=sample_sort_key)
    if config.limit is not None:
        samples = samples[: config.limit]
    if not samples:
        logger.warning("no samples for %s", config.model_dump_json(exclude_defaults=True))
    if cache_path is not None:
        save_samples_npz(cache_path, samples, {"config": config.model_dump(mode="json")})
    return samples
