"""DICOM series of the data folder: a folder of single-slice DICOM files served as one volume.

A series is a volume source whose path is its folder and its ``SeriesInstanceUID`` (``study/flair/#1.2.840…``,
:func:`series_path`): the folder's own label volumes (a reference NIfTI beside the slices) are its references as
they are a NIfTI scan's, and a second series in the same folder is another source. Its bytes are those of the
series saved as an uncompressed NIfTI (:func:`series_nifti_bytes`), so that slicing, the slice panel, references
and the volume NIfTI export treat it exactly as the NIfTI file it stands for. Its member files are not listed one
by one; a series that cannot be stacked (a missing slice, mixed sizes) is, with the reason logged.
"""

from __future__ import annotations

from pathlib import Path

from clickadapt.server.service.errors import BadRequest, NotFound
from clickadapt.volumes.dicom import DicomSeries, read_dicom_series, series_in_folder

SERIES_MARK = "#"
"""Starts the last part of a DICOM series' source path: its ``SeriesInstanceUID`` after the folder."""


def series_path(series: DicomSeries, root: Path) -> str:
    """The source path of ``series``: ``folder/#uid`` relative to the data folder ``root`` (``#uid`` at its top)."""
    folder = series.folder.relative_to(root).as_posix()
    return f"{SERIES_MARK}{series.uid}" if folder == "." else f"{folder}/{SERIES_MARK}{series.uid}"


def series_name(series: DicomSeries, root: Path) -> str:
    """What the image list calls ``series``: its folder and :attr:`~DicomSeries.label` (``study/flair/series 3
    FLAIR AX``)."""
    folder = series.folder.relative_to(root).as_posix()
    return series.label if folder == "." else f"{folder}/{series.label}"


def is_series_request(relative: str, root: Path) -> bool:
    """Whether a data-folder path names a series: ``folder/#uid``, or a folder (its only series); a file whose name
    starts with ``#`` stays a file."""
    candidate = root / relative
    if candidate.is_file():
        return False
    return Path(relative).name.startswith(SERIES_MARK) or candidate.is_dir()


def resolve_series(relative: str, root: Path) -> DicomSeries:
    """The series a data-folder path names (see :func:`is_series_request`).

    Raises:
        BadRequest: A folder outside the data folder; a folder with several series and no UID; files that do not
            form a series.
        NotFound: No such folder, or no series of that UID in it.
    """
    head = Path(relative)
    uid = head.name.removeprefix(SERIES_MARK) if head.name.startswith(SERIES_MARK) else None
    folder = (root / (head.parent if uid is not None else head)).resolve()
    if not folder.is_relative_to(root):
        raise BadRequest(f"path {relative!r} is outside the data folder")
    try:
        return series_in_folder(folder, uid)
    except FileNotFoundError as error:
        raise NotFound(f"folder {folder.relative_to(root).as_posix()!r} does not exist in the data folder") from error
    except ValueError as error:
        message = str(error).replace(f"{folder}", folder.relative_to(root).as_posix() or ".")
        raise (NotFound if uid is not None and "no DICOM series with" in message else BadRequest)(message) from error


def series_nifti_bytes(series: DicomSeries, root: Path, max_voxels: int) -> bytes:
    """The series as the bytes of an uncompressed NIfTI file (what the server decodes).

    Raises:
        BadRequest: The files do not stack into one volume, or it has more than ``max_voxels`` voxels (naming the
            file and the value).
    """
    try:
        image = read_dicom_series(series, max_voxels=max_voxels)
    except ValueError as error:
        raise BadRequest(str(error).replace(f"{root}/", "")) from error
    return bytes(image.to_bytes())
