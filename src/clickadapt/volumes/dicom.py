"""DICOM series: a folder of single-slice DICOM files read as one volume, with its geometry.

A scanner or a PACS exports an MR or CT series as one file per slice. Read file by file, each slice would be
a separate picture normalised with its own statistics, in the order of the file names; read as a series it is
one volume, ordered along the slice normal by each file's ``ImagePositionPatient`` (file names and
``InstanceNumber`` are not trusted: exports often number them otherwise), with a voxel-to-RAS affine built
from ``ImageOrientationPatient``, ``PixelSpacing`` and the positions, the way dcm2niix and dicom2nifti build
theirs. The result is a :class:`nibabel.Nifti1Image`, so everything that reads a NIfTI volume (the library's
predictor, the web server's volumes and their NIfTI export) reads a series the same way.

Only what is safe to stack is stacked: one ``SeriesInstanceUID``, single-frame greyscale slices of one size and
orientation, evenly spaced, no two at the same position. Anything else is refused with the file and the value
that stop it (a missing slice shows as a gap twice the spacing). Files without a position or orientation
(secondary captures, photographs) are not series slices: they stay 2D pictures.

pydicom reads the headers (``stop_before_pixels`` while grouping, so a folder of hundreds of files is scanned
in well under a second) and the pixels; nibabel holds the result. A :class:`SliceHeaderCache` remembers what
each file's header said, by path, size and modification time, so that scanning a folder of thousands of
slices again (each start of the web server, each listing of its data folder) opens only the files that changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from clickadapt.models.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
PREAMBLE_BYTES = 132
"""A DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
SPACING_TOLERANCE = 0.01
"""Largest relative difference between two slice gaps of one series (and between the gap and the slices' own
orientation) still read as even spacing."""
ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between two slices' direction cosines still read as one orientation."""


@dataclass(frozen=True)
class DicomSeries:
    """The slices of one DICOM series found in a folder.

    Attributes:
        folder: The folder the files lie in.
        uid: ``SeriesInstanceUID``.
        files: The slices' files, ordered along the slice normal (lowest position first).
        number: ``SeriesNumber``, if the files give one.
        description: ``SeriesDescription`` (``""`` without one).
    """

    folder: Path
    uid: str
    files: tuple[Path, ...]
    number: int | None = None
    description: str = ""
    headers: tuple[_SliceHeader, ...] = field(default=(), repr=False, compare=False)
    """The slices' headers as :func:`find_dicom_series` read them, in :attr:`files`' order (read again when
    empty)."""

    @property
    def label(self) -> str:
        """How a person tells the series apart: ``"series 3 T2 FLAIR AX"``, ``"series 3"`` or the UID's end."""
        head = f"series {self.number}" if self.number is not None else f"series …{self.uid[-8:]}"
        description = " ".join(self.description.replace("/", " ").split())
        return f"{head} {description}".strip()


def looks_like_dicom(path: Path) -> bool:
    """Whether a file is a DICOM Part 10 file: ``.dcm`` ending, or ``DICM`` after the preamble (PACS exports
    often have no ending at all)."""
    if path.name.lower().endswith(DICOM_SUFFIX):
        return True
    try:
        with path.open("rb") as stream:
            head = stream.read(PREAMBLE_BYTES)
    except OSError:
        return False
    return len(head) == PREAMBLE_BYTES and head[128:132] == b"DICM"


def _float_list(dataset: Any, keyword: str, count: int) -> list[float] | None:
    value = getattr(dataset, keyword, None)
    if value is None:
        return None
    try:
        numbers = [float(item) for item in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


@dataclass(frozen=True)
class _SliceHeader:
    path: Path
    uid: str
    position: np.ndarray
    orientation: np.ndarray
    """Row direction (along a row: increasing column) then column direction, LPS."""
    spacing: tuple[float, float]
    """Between rows, between columns (``PixelSpacing``), mm."""
    size: tuple[int, int]
    """Rows, columns."""
    number: int | None
    description: str


def _slice_header(path: Path) -> _SliceHeader | None:
    """The geometry of a single-frame greyscale slice, or ``None`` when the file is not one (unreadable, a
    multi-frame volume, a colour picture, no position or orientation)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    uid = str(getattr(dataset, "SeriesInstanceUID", "") or "")
    position = _float_list(dataset, "ImagePositionPatient", 3)
    orientation = _float_list(dataset, "ImageOrientationPatient", 6)
    spacing = _float_list(dataset, "PixelSpacing", 2)
    rows, columns = int(getattr(dataset, "Rows", 0) or 0), int(getattr(dataset, "Columns", 0) or 0)
    if frames != 1 or not uid or position is None or orientation is None or spacing is None or min(rows, columns) < 1:
        return None
    if int(getattr(dataset, "SamplesPerPixel", 1) or 1) != 1:
        return None
    number = getattr(dataset, "SeriesNumber", None)
    return _SliceHeader(
        path=path,
        uid=uid,
        position=np.asarray(position),
        orientation=np.asarray(orientation),
        spacing=(spacing[0], spacing[1]),
        size=(rows, columns),
        number=int(number) if number not in (None, "") else None,
        description=str(getattr(dataset, "SeriesDescription", "") or ""),
    )


def _header_or_none(path: Path) -> _SliceHeader | None:
    """:func:`_slice_header` of a file that looks like DICOM, else ``None`` (no header read)."""
    return _slice_header(path) if looks_like_dicom(path) else None


HEADER_CACHE_VERSION = 1
"""Format of :class:`SliceHeaderCache`'s file; a file of another version is read afresh."""


class SliceHeaderCache:
    """What the headers of DICOM files said (the slice geometry, or "not a series slice"), remembered by absolute
    path, size and modification time, so that a file whose size and time did not change is not opened again.

    Scanning a folder of 10,000 slices reads 10,000 headers (about 0.35 ms each on a 2-core CPU, 3–4 s); with
    the cache, a scan of the unchanged folder only lists it. Kept in memory and, when given a file, in a JSON
    file written atomically by :meth:`save` (an unreadable or foreign file is read afresh, with a warning).
    """

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self._entries: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        self._changed = False
        if file is not None and file.is_file():
            try:
                stored = json.loads(file.read_text(encoding="utf-8"))
                if not isinstance(stored, dict) or stored.get("version") != HEADER_CACHE_VERSION:
                    raise ValueError(f"not a version-{HEADER_CACHE_VERSION} header cache")
                entries = stored["entries"]
                if not isinstance(entries, dict):
                    raise ValueError("its entries are not a mapping")
                self._entries = entries
            except (OSError, ValueError, KeyError) as error:
                logger.warning("DICOM header cache %s is unreadable (%s): every header is read again", file, error)

    def header(self, path: Path) -> _SliceHeader | None:
        """The file's slice header (``None``: not a series slice), from the cache when the file is unchanged."""
        key = str(path.absolute())
        self._seen.add(key)
        stat = path.stat()
        entry = self._entries.get(key)
        if entry is not None and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            try:
                return _header_from_record(path, entry.get("header"))
            except (KeyError, TypeError, ValueError):
                pass  # a damaged entry: read the file
        header = _header_or_none(path)
        self._entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "header": _header_record(header)}
        self._changed = True
        return header

    def save(self) -> None:
        """Write the cache file (if any) when a header was read since it was loaded, keeping only the files looked
        at since then (a file that left the folder leaves the cache); a file that cannot be written is logged."""
        if self.file is None or not (self._changed or set(self._entries) - self._seen):
            return
        self._entries = {key: entry for key, entry in self._entries.items() if key in self._seen}
        record = json.dumps({"version": HEADER_CACHE_VERSION, "entries": self._entries}).encode("utf-8")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.file, record)
        except OSError as error:  # a read-only store still serves; the next scan reads the headers again
            logger.warning("could not write the DICOM header cache %s: %s", self.file, error)
            return
        self._changed = False


def _header_record(header: _SliceHeader | None) -> dict[str, Any] | None:
    if header is None:
        return None
    return {
        "uid": header.uid,
        "position": header.position.tolist(),
        "orientation": header.orientation.tolist(),
        "spacing": list(header.spacing),
        "size": list(header.size),
        "number": header.number,
        "description": header.description,
    }


def _header_from_record(path: Path, record: dict[str, Any] | None) -> _SliceHeader | None:
    if record is None:
        return None
    position, orientation = np.asarray(record["position"], float), np.asarray(record["orientation"], float)
    spacing, size = [float(value) for value in record["spacing"]], [int(value) for value in record["size"]]
    if position.shape != (3,) or orientation.shape != (6,) or len(spacing) != 2 or len(size) != 2:
        raise ValueError(f"cached header of {path} has the wrong shape")
    number = record["number"]
    return _SliceHeader(
        path=path,
        uid=str(record["uid"]),
        position=position,
        orientation=orientation,
        spacing=(spacing[0], spacing[1]),
        size=(size[0], size[1]),
        number=None if number is None else int(number),
        description=str(record["description"]),
    )


def _normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def find_dicom_series(files: Iterable[Path], cache: SliceHeaderCache | None = None) -> list[DicomSeries]:
    """The DICOM series among ``files``: single-frame slices with a position and an orientation, grouped by folder
    and ``SeriesInstanceUID``; a group of at least two slices is a series. Files that are not DICOM, or not such
    slices, are left out (they are 2D pictures, volumes of their own, or not images).

    Args:
        files: The files to look at.
        cache: Headers remembered from an earlier scan (see :class:`SliceHeaderCache`); ``None`` reads every one.

    Returns:
        The series, in the order their first file comes in ``files``; each one's files ordered along its slice
        normal (see :func:`read_dicom_series` for what makes one readable as a volume).
    """
    groups: dict[tuple[Path, str], list[_SliceHeader]] = {}
    for path in files:
        path = Path(path)
        if not path.is_file():
            continue
        header = _header_or_none(path) if cache is None else cache.header(path)
        if header is not None:
            groups.setdefault((path.parent, header.uid), []).append(header)
    found: list[DicomSeries] = []
    for (folder, uid), headers in groups.items():
        if len(headers) < 2:
            continue
        normal = _normal(headers[0].orientation)
        ordered = sorted(headers, key=lambda header: (float(header.position @ normal), header.path.name))
        first = headers[0]
        files = tuple(header.path for header in ordered)
        found.append(DicomSeries(folder, uid, files, first.number, first.description, tuple(ordered)))
    return found


def series_in_folder(folder: str | Path, uid: str | None = None, within: Path | None = None) -> DicomSeries:
    """The DICOM series whose slices lie in ``folder`` (not its sub-folders): the only one, or the one of ``uid``;
    with ``within``, only files that are (or link to) files inside that folder count.

    Raises:
        FileNotFoundError: No such folder.
        ValueError: No series there; several and no ``uid`` (naming them); none of ``uid``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM series folder {folder} does not exist")
    files = sorted(folder.iterdir())
    if within is not None:
        files = [path for path in files if path.resolve().is_relative_to(within)]
    found = find_dicom_series(files)
    if uid is not None:
        found = [series for series in found if series.uid == uid]
        if not found:
            raise ValueError(f"{folder}: no DICOM series with SeriesInstanceUID {uid}")
    return the_only_series(found, str(folder), "name one by its SeriesInstanceUID")


def the_only_series(found: Sequence[DicomSeries], where: str, choose: str) -> DicomSeries:
    """The one series of ``found`` (those of a folder or a zip, named ``where`` in errors).

    Raises:
        ValueError: None (saying what a series needs), or several (listing them, with ``choose``: what to do).
    """
    if not found:
        raise ValueError(
            f"{where}: no DICOM series (at least two single-frame slices of one SeriesInstanceUID with "
            "ImagePositionPatient and ImageOrientationPatient)"
        )
    if len(found) > 1:
        names = "; ".join(f"{series.label} ({series.uid}, {len(series.files)} files)" for series in found)
        raise ValueError(f"{where} holds {len(found)} DICOM series; {choose}: {names}")
    return found[0]


def _check_geometry(headers: Sequence[_SliceHeader]) -> float:
    """The even gap between consecutive slices of ``headers`` (ordered along their normal), in mm.

    Raises:
        ValueError: Slices of other sizes, orientations or pixel spacings, two at one position, or uneven gaps
            (naming the files).
    """
    first = headers[0]
    for header in headers[1:]:
        if header.size != first.size:
            raise ValueError(
                f"{header.path}: {header.size[0]} × {header.size[1]} pixels, {first.path}: "
                f"{first.size[0]} × {first.size[1]}; a series' slices must have one size"
            )
        if np.abs(header.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise ValueError(
                f"{header.path}: ImageOrientationPatient {header.orientation.tolist()} differs from "
                f"{first.path}'s {first.orientation.tolist()}; not one stack of slices"
            )
        if not np.allclose(header.spacing, first.spacing, rtol=SPACING_TOLERANCE):
            raise ValueError(
                f"{header.path}: PixelSpacing {list(header.spacing)} differs from {first.path}'s {list(first.spacing)}"
            )
    normal = _normal(first.orientation)
    steps = np.diff([float(header.position @ normal) for header in headers])
    for index, step in enumerate(steps):
        if step <= 1e-6 * max(1.0, float(np.abs(steps).max())):
            raise ValueError(
                f"{headers[index].path} and {headers[index + 1].path} lie at the same position "
                f"{headers[index].position.tolist()}: two copies of one slice, or two series in one"
            )
    gap = float(np.median(steps))
    offset = headers[-1].position - first.position
    sideways = offset - (offset @ normal) * normal
    if np.linalg.norm(sideways) > SPACING_TOLERANCE * gap * len(headers):
        raise ValueError(
            f"{first.path.parent}: the slices shift sideways along the stack ({np.linalg.norm(sideways):.3g} mm from "
            f"{first.path.name} to {headers[-1].path.name}: a tilted gantry or sheared stack), which one affine "
            "cannot hold; resample it to an upright stack first"
        )
    for index, step in enumerate(steps):
        if abs(step - gap) > SPACING_TOLERANCE * gap:
            raise ValueError(
                f"uneven slice spacing: {float(step):.3g} mm between {headers[index].path.name} and "
                f"{headers[index + 1].path.name}, {gap:.3g} mm elsewhere (a missing slice, or slices of another "
                f"acquisition) in {first.path.parent}"
            )
    return gap


def read_dicom_series(series: DicomSeries | str | Path, max_voxels: int | None = None) -> nib.Nifti1Image:
    """Read a DICOM series as one volume.

    Args:
        series: A :class:`DicomSeries`, or a folder holding exactly one series.
        max_voxels: Refuse a series with more voxels than this, before reading any pixel (``None``: no limit).

    Returns:
        A NIfTI image: ``float32`` values (``RescaleSlope`` / ``RescaleIntercept`` applied; ``MONOCHROME1``
        inverted), voxel axes (column, row, slice) and a voxel-to-RAS affine, slice 0 the lowest position along
        the slice normal.

    Raises:
        FileNotFoundError: No such folder.
        ValueError: Not a series that can be stacked (naming the file and the value), or too many voxels.
    """
    if not isinstance(series, DicomSeries):
        series = series_in_folder(series)
    headers: list[_SliceHeader | None] = list(series.headers) or [_slice_header(path) for path in series.files]
    missing = [path for path, header in zip(series.files, headers, strict=True) if header is None]
    if missing:
        raise ValueError(f"{missing[0]}: not a readable single-frame DICOM slice with a position and an orientation")
    checked = [header for header in headers if header is not None]
    if len({header.uid for header in checked}) > 1:
        raise ValueError(f"{series.folder}: the files belong to several SeriesInstanceUIDs")
    gap = _check_geometry(checked)
    first = checked[0]
    rows, columns = first.size
    voxels = rows * columns * len(checked)
    if max_voxels is not None and voxels > max_voxels:
        raise ValueError(
            f"{series.folder}: DICOM series of {columns} × {rows} × {len(checked)} ({voxels} voxels) exceeds the "
            f"limit of {max_voxels} voxels"
        )
    import pydicom

    data = np.empty((columns, rows, len(checked)), dtype=np.float32)
    for index, header in enumerate(checked):
        try:
            dataset = pydicom.dcmread(str(header.path))
            pixels = np.asarray(dataset.pixel_array, dtype=np.float32)
        except Exception as error:  # pydicom and its pixel handlers raise many unrelated types
            raise ValueError(f"{header.path}: cannot decode the DICOM pixel data: {error}") from error
        if pixels.shape != (rows, columns):
            raise ValueError(f"{header.path}: pixel data of shape {pixels.shape}, the header says {rows} × {columns}")
        pixels = pixels * float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
        pixels += float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
        if str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
            pixels = pixels.max() - pixels
        if not np.isfinite(pixels).all():
            raise ValueError(f"{header.path}: the slice contains NaN or infinite values")
        data[:, :, index] = pixels.T  # (rows, columns) -> (column, row): x runs along a row
    row_step, column_step = first.spacing
    normal = _normal(first.orientation)
    lps = np.eye(4)
    lps[:3, 0] = first.orientation[:3] * column_step  # voxel axis 0: along a row (next column)
    lps[:3, 1] = first.orientation[3:] * row_step  # voxel axis 1: down a column (next row)
    lps[:3, 2] = normal * gap
    lps[:3, 3] = first.position
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's patient space is LPS, NIfTI's RAS
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    return image
