"""DICOM series of the data folder: a folder of single-slice DICOM files served as one volume.

A series is a volume source whose path is its folder and its ``SeriesInstanceUID`` (``study/flair/#1.2.840…``,
:func:`series_path`): the folder's own label volumes (a reference NIfTI beside the slices) are its references as
they are a NIfTI scan's, and a second series in the same folder is another source. Its bytes are those of the
series saved as an uncompressed NIfTI (:func:`series_nifti_bytes`), so that slicing, the slice panel, references
and the volume NIfTI export treat it exactly as the NIfTI file it stands for. Its member files are not listed one
by one; a series that cannot be stacked (a missing slice, mixed sizes) is, with the reason logged.

An upload of a series is a zip of its files (what a PACS exports; the page zips a chosen folder): it is stored as
the NIfTI it stands for (:func:`series_upload`), so the same series uploaded twice is stored once.
"""

from __future__ import annotations

import gzip
import io
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from clickadapt.server.service.errors import BadRequest, NotFound, PayloadTooLarge
from clickadapt.volumes.dicom import (
    DicomSeries,
    find_dicom_series,
    read_dicom_series,
    series_in_folder,
    the_only_series,
)

SERIES_MARK = "#"
"""Starts the last part of a DICOM series' source path: its ``SeriesInstanceUID`` after the folder."""
ZIP_MAGIC = b"PK\x03\x04"
SKIPPED_ZIP_FOLDERS = ("__MACOSX",)
"""Folders of a zip left unread (macOS's resource forks)."""


def is_zip(payload: bytes | bytearray) -> bool:
    """Whether an upload is a zip file."""
    return bytes(payload[:4]) == ZIP_MAGIC


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
        return series_in_folder(folder, uid, within=root)  # links leading out of the data folder are not followed
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


def zip_member_path(folder: Path, member: str) -> Path | None:
    """Where a zip member goes under ``folder`` (``None``: a folder, a hidden file or one of
    :data:`SKIPPED_ZIP_FOLDERS`); ``..`` and absolute parts are dropped, so nothing lands outside ``folder``."""
    parts = [part for part in PurePosixPath(member.replace("\\", "/")).parts if part not in ("", ".", "..", "/")]
    if not parts or member.endswith("/") or parts[-1].startswith(".") or parts[0] in SKIPPED_ZIP_FOLDERS:
        return None
    target = folder.joinpath(*parts).resolve()
    return target if target.is_relative_to(folder.resolve()) else None


def series_upload(payload: bytes | bytearray, name: str, max_bytes: int, max_voxels: int) -> tuple[bytes, str]:
    """The one DICOM series of an uploaded zip as gzipped NIfTI bytes (deterministic: the same series gives the same
    bytes), and its display name (``"<zip name> (series 3 FLAIR AX)"``).

    Raises:
        PayloadTooLarge: The members unpack to more than ``max_bytes`` (checked before unpacking), or the series
            has more than ``max_voxels`` voxels.
        BadRequest: Not a readable zip; no series in it, or several (naming them); a series that does not stack
            (naming the member and the value).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(payload)))
    except zipfile.BadZipFile as error:
        raise BadRequest(f"{name}: not a readable zip file: {error}") from error
    with archive, tempfile.TemporaryDirectory(prefix="clickadapt-series-") as unpacked:
        folder = Path(unpacked)
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        if total > max_bytes:
            raise PayloadTooLarge(f"{name}: its files unpack to {total} bytes, above the upload limit of {max_bytes}")
        for info in members:
            target = zip_member_path(folder, info.filename)
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.write_bytes(archive.read(info))  # zipfile stops at the declared size and checks the CRC
            except (zipfile.BadZipFile, OSError, NotImplementedError) as error:
                raise BadRequest(f"{name}: cannot unpack {info.filename}: {error}") from error
        found = find_dicom_series(sorted(path for path in folder.rglob("*") if path.is_file()))
        try:
            series = the_only_series(found, name, "upload one at a time")
        except ValueError as error:
            raise BadRequest(str(error)) from error
        try:
            image = read_dicom_series(series, max_voxels=max_voxels)
        except ValueError as error:
            message = str(error).replace(f"{folder}/", f"{name}: ").replace(str(folder), name)
            too_large = "exceeds the limit" in message
            raise (PayloadTooLarge if too_large else BadRequest)(message) from error
    stem = name[: -len(".zip")] if name.lower().endswith(".zip") else name
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0), f"{stem} ({series.label})"
