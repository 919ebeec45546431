"""The volume files MONAI Label clients see: images, their labels by tag, and session volumes.

Layout under ``<store>/monailabel/``::

    images/<id><ext>            volumes uploaded with ``PUT /datastore/?image=<id>``
    labels/<tag>/<id><ext>      labels: ``final`` (saved by the client), ``original`` (the model's first mask)
    sessions/<session>/<file>   volumes a client loaded locally (``PUT /session/``)
    series/<id>.nii.gz          data-folder DICOM series, as NIfTI

Volume files of the data folder (``--data``; NIfTI and NRRD) are listed too, under ``data-<digest>`` ids,
and read in place, except those the web page does not list as scans either (label volumes such as MSLUB's
``GOLD_STANDARD…``, reference masks ``X_mask.nii.gz``). A data-folder scan's reference mask (the web page's: its
``X_mask.nii.gz`` or its folder's only label volume) is offered, read-only, as its label tagged ``reference``;
what the web page labelled of it (its labelled slices, as ``GET /api/sources/{id}/export`` gives them) as its label
tagged ``web``, made when asked for (never written to disk).
A data-folder DICOM series (:mod:`clickadapt.server.service.series`) is listed under the id and name the web page
gives it, as the NIfTI it stands for, written once to ``series/<id>.nii.gz`` (again when one of its files changes).
Ids are safe file-name stems; nothing is ever written outside the folder above.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

from clickadapt.server.service.catalogue import data_source_id
from clickadapt.server.service.errors import BadRequest, NotFound, PayloadTooLarge
from clickadapt.server.service.series import series_name, series_path
from clickadapt.volumes.dicom import DicomSeries, SliceHeaderCache, find_dicom_series, read_dicom_series
from clickadapt.volumes.io import is_volume_path

logger = logging.getLogger(__name__)

MONAILABEL_FOLDER = "monailabel"
ACCEPTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
"""Volume file endings accepted from clients (a detached ``.nhdr`` header cannot come in one upload)."""
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
REFERENCE_TAG = "reference"
"""The read-only label tag of a data-folder scan's reference mask (an expert's, never learnt from)."""
WEB_TAG = "web"
"""The read-only label tag of what the web page labelled of a data-folder scan: its labelled slices in one volume."""
READ_ONLY_TAGS = (REFERENCE_TAG, WEB_TAG)


def volume_suffix(filename: str) -> str:
    """The accepted volume ending of a file name (``.nii.gz``, ``.nii`` or ``.nrrd``).

    Raises:
        BadRequest: Any other ending.
    """
    lowered = filename.lower()
    for suffix in ACCEPTED_SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    raise BadRequest(
        f"{filename!r} is not a volume file this server reads ({', '.join(ACCEPTED_SUFFIXES)}); "
        "2D pictures (e.g. fundus photographs) are labelled in the web page"
    )


def check_id(value: str, what: str = "image id") -> str:
    """``value`` when it is a safe id (letters, digits, ``.``, ``_``, ``-``; up to 128 characters).

    Raises:
        BadRequest: Anything else (path separators, a leading dot, empty…).
    """
    if not ID_PATTERN.match(value) or ".." in value:
        raise BadRequest(f"invalid {what} {value[:80]!r}: use letters, digits, '.', '_' or '-'")
    return value


def check_tag(value: str) -> str:
    """``value`` when it is a safe label tag (e.g. ``final``, ``original``).

    Raises:
        BadRequest: Anything else.
    """
    if not TAG_PATTERN.match(value):
        raise BadRequest(f"invalid label tag {value[:40]!r}: use letters, digits, '_' or '-'")
    return value


def check_writable_tag(value: str) -> str:
    """``value`` when a client may save a label under it: a safe tag other than ``reference`` and ``web``.

    Raises:
        BadRequest: An unsafe tag, or a read-only one (the data folder's expert mask; the web page's slices).
    """
    if check_tag(value) in READ_ONLY_TAGS:
        meaning = "the data folder's reference mask" if value == REFERENCE_TAG else "what the web page labelled"
        raise BadRequest(f"label tag {value!r} is {meaning} and read-only; save under 'final'")
    return value


def declared_voxels(path: Path) -> int:
    """The number of voxels a volume file declares in its header (nothing is decoded).

    Raises:
        BadRequest: The header cannot be read.
    """
    try:
        if path.name.lower().endswith(".nrrd"):
            import nrrd

            header = nrrd.read_header(str(path))
            sizes = [int(size) for size in header.get("sizes", [])]
        else:
            sizes = [int(size) for size in nib.load(str(path)).shape]  # type: ignore[attr-defined]
    except Exception as error:  # decoders raise many unrelated types
        raise BadRequest(f"cannot read the volume header of {path.name}: {error}") from error
    count = 1
    for size in sizes:
        count *= max(size, 0)
    return count


@dataclass(frozen=True)
class VolumeFile:
    """One image of the MONAI Label datastore.

    Attributes:
        id: Its id.
        path: The file.
        name: The file name shown to clients (a data-folder file: its path relative to the data folder).
        data_path: A data-folder DICOM series: its source path (``folder/#uid``), by which its reference is found.
    """

    id: str
    path: Path
    name: str
    data_path: str | None = None

    @property
    def suffix(self) -> str:
        """The file's volume ending."""
        return volume_suffix(self.path.name)


class VolumeFiles:
    """Images, labels and session volumes as files (see the module docstring).

    Args:
        store: The store folder (``<store>/monailabel`` is created inside it).
        data_root: The data folder, if any (its NIfTI and NRRD files are listed read-only).
        max_volume_voxels: Largest volume a file may declare.
        not_scans: Data-folder files (paths relative to it) that are labels, not images to label.
        reference_of: A data-folder scan's reference mask (from its path relative to the data folder), if any.
    """

    def __init__(
        self,
        store: Path,
        data_root: Path | None,
        max_volume_voxels: int,
        not_scans: frozenset[str] = frozenset(),
        reference_of: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.root = Path(store) / MONAILABEL_FOLDER
        self.data_root = data_root
        self.max_volume_voxels = max_volume_voxels
        self.not_scans = not_scans
        self.reference_of = reference_of
        self._unstackable: set[str] = set()
        """Data-folder DICOM series (ids) found not to stack, already logged."""
        self._dicom_headers = SliceHeaderCache(self.root / "dicom_headers.json")
        """The data folder's DICOM headers: each listing opens only the files that changed."""
        for folder in ("images", "labels", "sessions", "incoming", "series"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ incoming files
    def incoming(self, filename: str) -> Path:
        """A fresh temporary path (with ``filename``'s volume ending) to receive an upload into.

        Raises:
            BadRequest: Not a volume file name.
        """
        suffix = volume_suffix(filename)
        return self.root / "incoming" / f"{time.time_ns()}{suffix}"

    def check_volume(self, path: Path) -> None:
        """Refuse a file that declares more voxels than allowed (checked on its header).

        Raises:
            PayloadTooLarge: Too many voxels.
            BadRequest: An unreadable header.
        """
        voxels = declared_voxels(path)
        if voxels > self.max_volume_voxels:
            raise PayloadTooLarge(f"the volume declares {voxels} voxels; the limit is {self.max_volume_voxels}")

    # ------------------------------------------------------------------ images
    def _series_file(self, image_id: str, series: DicomSeries) -> Path | None:
        """The NIfTI of a data-folder DICOM series, written when missing or older than one of its files (``None``:
        it does not stack; logged once)."""
        target = self.root / "series" / f"{image_id}.nii.gz"
        newest = max(path.stat().st_mtime_ns for path in series.files)
        if target.is_file() and target.stat().st_mtime_ns >= newest:
            return target
        try:
            image = read_dicom_series(series, max_voxels=self.max_volume_voxels)
        except ValueError as error:
            if image_id not in self._unstackable:
                self._unstackable.add(image_id)
                logger.warning("MONAI Label datastore: a DICOM series is left out: %s", error)
            return None
        partial = target.with_name(f".{time.time_ns()}-{target.name}")
        nib.save(image, str(partial))
        partial.replace(target)
        return target

    def _data_series(self) -> dict[str, VolumeFile]:
        assert self.data_root is not None
        files = [path for path in sorted(self.data_root.rglob("*")) if path.resolve().is_relative_to(self.data_root)]
        found = {}
        series_found = find_dicom_series(files, self._dicom_headers)
        self._dicom_headers.save()
        for series in series_found:
            relative = series_path(series, self.data_root)
            image_id = data_source_id(relative)
            path = self._series_file(image_id, series)
            if path is not None:
                found[image_id] = VolumeFile(image_id, path, series_name(series, self.data_root), relative)
        return found

    def _data_images(self) -> dict[str, VolumeFile]:
        if self.data_root is None:
            return {}
        found = self._data_series()
        for path in sorted(self.data_root.rglob("*")):
            if not path.is_file() or path.name.startswith(".") or not is_volume_path(path.name):
                continue
            if not path.resolve().is_relative_to(self.data_root) or path.name.lower().endswith(".nhdr"):
                continue
            relative = path.relative_to(self.data_root).as_posix()
            if relative in self.not_scans:
                continue
            image_id = data_source_id(relative)
            found[image_id] = VolumeFile(image_id, path, relative)
        return found

    def images(self) -> dict[str, VolumeFile]:
        """Every image by id: uploads, then data-folder volumes, each in name order."""
        uploads = {}
        for path in sorted((self.root / "images").iterdir()):
            if path.is_file():
                image_id = path.name[: -len(volume_suffix(path.name))]
                uploads[image_id] = VolumeFile(image_id, path, path.name)
        return {**uploads, **self._data_images()}

    def image(self, image_id: str) -> VolumeFile:
        """One image.

        Raises:
            NotFound: Unknown id.
        """
        found = self.images().get(check_id(image_id))
        if found is None:
            raise NotFound(f"unknown image {image_id!r}")
        return found

    def add_image(self, image_id: str, received: Path) -> VolumeFile:
        """Keep a received volume as image ``image_id`` (replacing one of the same id).

        Raises:
            BadRequest: An invalid id, or the id of a data-folder file.
        """
        check_id(image_id)
        if image_id.startswith("data-"):
            raise BadRequest("ids starting with 'data-' name data-folder files; choose another image id")
        suffix = volume_suffix(received.name)
        for old in (self.root / "images").glob(f"{image_id}.*"):
            if old.name[: -len(volume_suffix(old.name))] == image_id:
                old.unlink()
        target = self.root / "images" / f"{image_id}{suffix}"
        received.replace(target)
        return VolumeFile(image_id, target, target.name)

    # ------------------------------------------------------------------ labels
    def label(self, image_id: str, tag: str) -> Path | None:
        """The label file of an image and tag, if any (tag ``reference``: a data-folder scan's reference mask)."""
        if check_tag(tag) == REFERENCE_TAG:
            return self.reference(self.image(image_id))
        folder = self.root / "labels" / tag
        if not folder.is_dir():
            return None
        check_id(image_id)
        for path in folder.iterdir():
            if path.is_file() and path.name[: -len(volume_suffix(path.name))] == image_id:
                return path
        return None

    def reference(self, image: VolumeFile) -> Path | None:
        """A data-folder scan's reference mask, if it has one (an upload has none)."""
        if self.reference_of is None or not image.id.startswith("data-"):  # uploads cannot take such ids
            return None
        return self.reference_of(image.data_path or image.name)

    def labels(self, image: VolumeFile) -> dict[str, Path]:
        """Every label of an image by tag (``reference`` first, when the scan has one)."""
        reference = self.reference(image)
        found = {} if reference is None else {REFERENCE_TAG: reference}
        for folder in sorted((self.root / "labels").iterdir()):
            path = self.label(image.id, folder.name) if folder.is_dir() and folder.name not in READ_ONLY_TAGS else None
            if path is not None:
                found[folder.name] = path
        return found

    def put_label(self, image_id: str, tag: str, received: Path) -> Path:
        """Keep a received label file as the label ``tag`` of an image (replacing an earlier one); never under a
        read-only tag."""
        folder = self.root / "labels" / check_writable_tag(tag)
        folder.mkdir(parents=True, exist_ok=True)
        old = self.label(image_id, tag)
        if old is not None:
            old.unlink()
        target = folder / f"{check_id(image_id)}{volume_suffix(received.name)}"
        received.replace(target)
        return target

    def write_label_bytes(self, image_id: str, tag: str, payload: bytes, suffix: str) -> Path:
        """Write a label file from bytes (e.g. the model's first mask as ``original``)."""
        received = self.root / "incoming" / f"{time.time_ns()}{suffix}"
        received.write_bytes(payload)
        return self.put_label(image_id, tag, received)

    # ------------------------------------------------------------------ sessions
    def add_session(self, session_id: str, received: Path, filename: str) -> Path:
        """Keep a volume a client loaded locally under session ``session_id``."""
        folder = self.root / "sessions" / check_id(session_id, "session id")
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(filename.replace("\\", "/")).name
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name[: -len(volume_suffix(name))]).strip("._") or "volume"
        target = folder / f"{stem}{volume_suffix(name)}"
        received.replace(target)
        return target

    def session_volume(self, session_id: str) -> Path:
        """The volume of a session.

        Raises:
            NotFound: Unknown session.
        """
        folder = self.root / "sessions" / check_id(session_id, "session id")
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        if not files:
            raise NotFound(f"session {session_id!r} not found")
        return files[0]

    def sessions(self) -> list[str]:
        """Session ids, oldest first."""
        folders = [path for path in (self.root / "sessions").iterdir() if path.is_dir()]
        return [path.name for path in sorted(folders, key=lambda path: path.stat().st_mtime)]

    def remove_session(self, session_id: str) -> None:
        """Delete a session's files (no-op for an unknown one)."""
        folder = self.root / "sessions" / check_id(session_id, "session id")
        if folder.is_dir():
            shutil.rmtree(folder)
