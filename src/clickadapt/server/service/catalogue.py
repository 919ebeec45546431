"""The image catalogue: the images the server offers and where their pixels come from.

Images come from the built-in demo slices (or samples given by the caller), from files of the data folder
(``--data``; scanned at start-up, more added by path) and from uploads (stored under ``<store>/uploads``, the
same content once). A volume (NIfTI, multi-frame DICOM, a folder's DICOM series:
:mod:`~clickadapt.server.service.series`) is a *source* with one image per chosen axial slice.
Pixels are prepared for the model once (:func:`~clickadapt.server.images.prepare_source`) and kept in the
datastore with the display picture and the :class:`~clickadapt.data.prepare.Geometry` that maps masks back
onto the source.

Every public method that writes to the store takes the service lock given at construction (see
:mod:`clickadapt.server.service`); reads of stored rows do not need it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image as PILImage

from clickadapt.data.preprocess import DEFAULT_CLIP_PERCENTILES
from clickadapt.data.sample import Sample
from clickadapt.models.checkpoint import atomic_write_bytes
from clickadapt.server.datastore import Datastore, ImageData, ImageRecord, SourceRecord
from clickadapt.server.images import (
    SUPPORTED_FORMATS,
    DecodedSource,
    DecodeLimits,
    Geometry,
    ImageDecodeError,
    UnsupportedFormatError,
    decode_file,
    display_from_pixels,
    encode_page_picture,
    encode_png,
    has_supported_suffix,
    page_geometry,
    prepare_image,
    prepare_source,
    task_fit_warning,
    window_to_uint8,
)
from clickadapt.server.schemas import ImageInfo, ReferenceChoices, ReferenceSlices, SourceInfo, UploadResult
from clickadapt.server.service.crops import ImageCrop, square_box
from clickadapt.server.service.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    slug,
)
from clickadapt.server.service.series import (
    is_series_request,
    is_zip,
    resolve_series,
    series_name,
    series_nifti_bytes,
    series_path,
    series_upload,
)
from clickadapt.server.settings import ServerSettings
from clickadapt.tasks import TaskSpec
from clickadapt.volume_input import stats_step
from clickadapt.volumes.dicom import DicomSeries, SliceHeaderCache, find_dicom_series

logger = logging.getLogger(__name__)

UPLOADS_FOLDER = "uploads"
DICOM_HEADER_CACHE = Path("cache") / "dicom_headers.json"
"""Where in the store the data folder's DICOM headers are remembered (:class:`SliceHeaderCache`)."""
FIT_CHECKED_FILES = 3
"""Data-folder files decoded at start-up to tell whether they look like what the model segments (colour vs grey)."""
VOLUME_CACHE_SIZE = 2
"""Decoded volumes kept in memory (the slice slider previews many slices of one volume)."""
PAGE_PICTURE_CACHE = 8
"""Page pictures (:meth:`ImageCatalogue.page_picture`) kept encoded in memory, the most recently asked last."""
PROGRESS_SECONDS = 5.0
"""While the data folder is read at start-up, how often the log says how far (the first start on a store prepares
every picture: 20 s for the 1,243 LGG pictures; later starts take under a second and say nothing)."""
UPLOAD_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "webp": ".webp", "nifti": ".nii", "dicom": ".dcm"}


MASK_SUFFIX = "_mask"
"""A data file named ``<name>_mask.<ext>`` beside ``<name>.<ext>`` is that image's mask (the TCGA-LGG kaggle_3m
layout), not an image to label: the page shows how the mask compares with it (:meth:`ImageCatalogue.reference_label`),
the model never sees it."""


def mask_partner(path: Path) -> Path | None:
    """The image whose mask ``path`` is (``X_mask.tif`` → ``X.tif`` when that file exists), else ``None``."""
    name = path.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    stem = name[: len(name) - len(suffix)]
    if not stem.endswith(MASK_SUFFIX):
        return None
    partner = path.with_name(stem[: -len(MASK_SUFFIX)] + suffix)
    return partner if partner.is_file() else None


LABEL_VOLUME_MAX_VALUES = 16
"""A NIfTI volume whose voxels take at most this many values, all non-negative integers with 0 among them, is a
segmentation (a *label volume*: MSLUB's ``GOLD_STANDARD…``, BraTS's ``OTMultiClass``), not a scan to label."""
LABEL_VOLUMES_GROUP = (
    "label volume(s) (segmentations, not scans; a folder's only one is the reference mask of the scans beside it)"
)


BRAIN_MASK_NAME = re.compile(r"brain[_-]?mask|skull", re.IGNORECASE)
"""A label volume named like this (BraTS's ``brainmask.nii.gz``) marks where the brain is, not a finding: it is
left out when a folder's reference is chosen."""


def _looks_like_labels(values: np.ndarray) -> bool:
    if values.size == 0:
        return False
    if values.dtype.kind == "f":  # whole numbers, give or take float rounding (BraTS's brainmask: 0.99999997)
        rounded = np.rint(values)
        if not np.allclose(values, rounded, rtol=0, atol=1e-3):
            return False
        values = rounded
    distinct = np.unique(values)
    return distinct.size <= LABEL_VOLUME_MAX_VALUES and distinct[0] == 0


def is_label_volume(decoded: DecodedSource) -> bool:
    """Whether a decoded NIfTI volume is a segmentation (see :data:`LABEL_VOLUME_MAX_VALUES`).

    The middle slice is looked at first (a scan fails there at once), then a sample of the whole volume.
    """
    if decoded.format != "nifti" or decoded.kind != "volume" or decoded.reader is None or decoded.values is None:
        return False
    if not _looks_like_labels(decoded.reader((decoded.slices or 1) // 2)):
        return False
    return _looks_like_labels(decoded.values(stats_step(math.prod(decoded.volume_shape or ()))))


def reference_candidates(label_volumes: Sequence[Path], name_pattern: str | None = None) -> list[Path]:
    """The label volumes of a folder that may be its scans' reference: those whose file name matches
    ``name_pattern`` (``fnmatch``, case-sensitive) when one is given and some do, else all but brain masks
    (:data:`BRAIN_MASK_NAME`)."""
    if name_pattern is not None:
        matching = [path for path in label_volumes if fnmatch.fnmatchcase(path.name, name_pattern)]
        if matching:
            return matching
    return [path for path in label_volumes if not BRAIN_MASK_NAME.search(path.name)]


CROP_ID = re.compile(r"^(?P<root>.+)-crop\d+-\d+-\d+$")
"""Id of a crop: the id of the uncropped picture it was cut from, then ``-crop<row>-<col>-<side>``."""


MAX_REFERENCE_VOLUMES = 4
"""Reference volumes kept as class indices (a 240 × 240 × 155 BraTS volume: 9 MB)."""
REFERENCE_CHOICE = "reference-choice:"
"""Datastore meta key prefix (+ data-folder folder): the file name of the label volume chosen in the page as the
reference of the folder's scans."""
LABEL_CHECK = "label-volume-check:"
"""Datastore meta key prefix (+ source id): whether a registered data-folder volume was found to be a label volume
(``label``) or a scan (``scan``)."""
LABEL_VOLUME_REASON = (
    f"a label volume (at most {LABEL_VOLUME_MAX_VALUES} integer voxel values), not a scan to label (the reference "
    "mask of the scans beside it when it is their folder's only one)"
)


class LabelVolumeError(BadRequest):
    """A data file that is a label volume, not a scan to label."""


class SkipReason(NamedTuple):
    """Why a data-folder entry is not an image to label."""

    text: str
    """Said about the file (``""``: left out without a word, e.g. hidden files)."""
    group: str | None
    """Label shared by every file skipped for this kind of reason (reported together, with a count); ``None``:
    reported file by file."""
    partner: Path | None = None
    """For a mask ``X_mask.ext``: the picture ``X.ext`` it belongs to."""


def data_file_skip_reason(path: Path) -> SkipReason | None:
    """Why an entry of the data folder is not an image to label (``None`` for a readable image file); hidden
    files and plain folders get an empty text (left out without a word)."""
    if path.is_symlink() and path.is_dir():
        return SkipReason("a link to a folder; links are not followed (copy it)", "links to folders (not followed)")
    if not path.is_file() or path.name.startswith("."):
        return SkipReason("", None)
    if not has_supported_suffix(path.name):
        unsupported = f"unsupported file type (expected {SUPPORTED_FORMATS})"
        return SkipReason(unsupported, f"file(s) of an {unsupported}")
    partner = mask_partner(path)
    if partner is None:
        return None
    return SkipReason(
        f"the reference mask of {partner.name}, not an image to label",
        "reference mask(s) beside their images (X_mask.ext: the page compares masks with them; never learnt from)",
        partner,
    )


@dataclass(frozen=True)
class SkippedFile:
    """A data-folder entry left out at start-up."""

    path: str
    """Relative to the data folder."""
    reason: str
    group: str | None = None
    """See :attr:`SkipReason.group`."""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def summarise_skipped(skipped: Sequence[SkippedFile], examples: int = 3, singles: int = 10) -> list[str]:
    """Lines that say what start-up left out: files with their own reason one by one (at most ``singles``, then
    a count), files of a shared reason as one line each with a count and ``examples`` names."""
    lines: list[str] = []
    groups: dict[str, list[SkippedFile]] = {}
    alone = [entry for entry in skipped if entry.group is None]
    lines.extend(str(entry) for entry in alone[:singles])
    if len(alone) > singles:
        lines.append(f"… and {len(alone) - singles} more file(s) left out, each for its own reason")
    for entry in skipped:
        if entry.group is not None:
            groups.setdefault(entry.group, []).append(entry)
    for group, entries in groups.items():
        names = ", ".join(entry.path for entry in entries[:examples]) + (", …" if len(entries) > examples else "")
        lines.append(f"{len(entries)} {group}: {names}")
    return lines


def data_source_id(relative: str) -> str:
    """The source id of a data-folder file (or DICOM series path) relative to the data folder."""
    return "data-" + hashlib.sha256(relative.encode()).hexdigest()[:12]


def natural_key(relative: str) -> tuple[list[str | int], str]:
    """Sort key that orders numbers by value: ``x_9.png`` before ``x_10.png`` (slices of a series in order);
    names equal but for leading zeros fall back to their text."""
    parts = re.split(r"(\d+)", relative)  # text, digits, text, …: digits at the odd places
    return [int(part) if index % 2 else part for index, part in enumerate(parts)], relative


def data_folder_entries(root: Path) -> list[Path]:
    """Everything under the data folder, in natural order of the relative paths (the order of the image list)."""
    return sorted(root.rglob("*"), key=lambda path: natural_key(path.relative_to(root).as_posix()))


def check_data_root(data: Path | None) -> Path | None:
    """The data folder, resolved (``None`` without one).

    Raises:
        FileNotFoundError: It does not exist.
    """
    if data is None:
        return None
    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist")
    return root


class ImageCatalogue:
    """The images, their sources (data-folder files and uploads, 2D or volumes) and their prepared pixels.

    Args:
        settings: Server settings (data folder, upload and decode limits).
        store: The datastore.
        task: The model's task (images are prepared for it).
        image_size: Side of the model's input grid.
        lock: The service lock shared by every part.
        samples: Pre-made samples to serve instead of the data folder or the demo images (tests, embedding).
        clip_percentiles: The model's brain intensity clipping range (``CheckpointMeta.preprocessing``): volume
            slices are normalised with it, as the model's training slices were.

    Raises:
        FileNotFoundError: The data folder does not exist.
        ValueError: A sample is for another task.
    """

    def __init__(
        self,
        settings: ServerSettings,
        store: Datastore,
        task: TaskSpec,
        image_size: int,
        lock: threading.RLock,
        samples: Sequence[Sample] | None = None,
        clip_percentiles: tuple[float, float] = DEFAULT_CLIP_PERCENTILES,
    ) -> None:
        self.settings = settings
        self.store = store
        self.task = task
        self.image_size = image_size
        self.clip_percentiles = clip_percentiles
        self.lock = lock
        self.data_root: Path | None = check_data_root(settings.data)
        """The data folder (resolved), or ``None``."""
        self._dicom_headers = SliceHeaderCache(store.folder / DICOM_HEADER_CACHE)
        """The data folder's DICOM headers by path, size and time: a restart or a listing reads only changed files."""
        self._volumes: OrderedDict[str, DecodedSource] = OrderedDict()
        self._page_pictures: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        """Image id → what :meth:`page_picture` answered (the most recently asked last)."""
        self._references: dict[str, Path] = {}
        """Data-folder picture (relative path) → its reference mask ``X_mask.ext`` (see :meth:`reference_label`)."""
        self._label_volumes: dict[str, list[Path]] = {}
        """Data-folder folder (relative path) → the label volumes in it, by name."""
        self._folder_references: dict[str, Path] = {}
        """Data-folder folder (relative path) → its only label volume (brain masks aside), the reference mask of the
        volumes in it that have no ``X_mask.nii.gz`` of their own."""
        self._reference_classes: OrderedDict[str, np.ndarray] = OrderedDict()
        """Reference volumes (relative path) as class indices, the most recently used last (see
        :meth:`reference_volume`)."""
        self._label_sources: set[str] = set()
        """Sources an older version registered as scans that are label volumes: their images nobody labelled are
        not listed (nothing is deleted)."""
        self.label_files: set[str] = set()
        """Data-folder files (relative paths) found at start-up to be labels, not images: label volumes and the
        reference masks ``X_mask.ext`` of pictures and volumes."""
        self.data_warning: str | None = None
        """A sentence when one of the data folder's first files does not look like what the model segments (a colour
        picture for a grey model without ``--channel``, a grey one or a volume for a colour model); the page shows
        it."""
        self._broken_series: set[Path] = set()
        """Files of DICOM series that did not stack into a volume at start-up: listed one by one instead."""
        self._series_member_sources: set[str] = set()
        """Sources of single files of a DICOM series read as one volume (registered one by one by an older version,
        or added by path): their images nobody labelled are not listed, the series' volume is."""
        self.skipped: list[SkippedFile] = []
        """Files of the data folder left out at start-up (unsupported type, undecodable, a mask…); logged as
        :func:`summarise_skipped` lines, which ``clickadapt serve`` prints."""
        with lock:
            self._register_images(samples)

    # ================================================================== start-up

    def _register_images(self, samples: Sequence[Sample] | None) -> None:
        if samples is None and self.data_root is None:
            from clickadapt.data.demo import load_demo_samples

            samples = load_demo_samples()
        if samples is not None:
            for sample in samples:
                if sample.task != self.task.name:
                    raise ValueError(
                        f"image {sample.key} is for task {sample.task!r} but the model is for {self.task.name!r}; "
                        "give --data with images of the model's task"
                    )
                image_id = "demo-" + slug(sample.key.replace("/", "_"))
                if self.store.get_image(image_id) is not None:
                    continue
                pixels = np.asarray(sample.image, dtype=np.float32)
                geometry = Geometry(kind="pad-crop", source_shape=sample.shape, size=sample.shape[0])
                data = ImageData(pixels, encode_png(display_from_pixels(pixels)), geometry.model_dump(mode="json"))
                self.store.add_image(image_id, sample.key, "demo", self.task.name, data=data)
        if self.data_root is not None:
            scanned: list[str] = []
            label_volumes: dict[str, list[Path]] = {}
            entries = data_folder_entries(self.data_root)
            series_of_file = self._data_folder_series(entries)
            in_series: set[Path] = set()  # files of the series read as volumes: not listed one by one
            said = time.monotonic()
            for done, path in enumerate(entries):
                if time.monotonic() - said >= PROGRESS_SECONDS:  # a first start prepares every picture: say how far
                    said = time.monotonic()
                    logger.info("data folder: %d of %d files read (each prepared once per store)", done, len(entries))
                relative = path.relative_to(self.data_root).as_posix()
                if path in in_series:
                    continue
                series = series_of_file.pop(path, None)
                if series is not None:
                    for member in series.files:  # the series is listed once, where its first file comes
                        series_of_file.pop(member, None)
                    try:
                        scanned.append(self._register_data_series(series, None).image.id)
                        in_series.update(series.files)
                        self._series_member_sources.update(
                            data_source_id(member.relative_to(self.data_root).as_posix()) for member in series.files
                        )
                        logger.info(
                            "data folder: %s: DICOM series of %d files read as one volume",
                            series_name(series, self.data_root),
                            len(series.files),
                        )
                        continue
                    except ServiceError as error:
                        logger.warning(
                            "data folder: %s: its %d DICOM files are listed one by one, not as one volume: %s",
                            series_name(series, self.data_root),
                            len(series.files),
                            error.message,
                        )
                        self._broken_series.update(series.files)
                skip = data_file_skip_reason(path)
                if skip is not None and skip.partner is not None and path.resolve().is_relative_to(self.data_root):
                    self._references[skip.partner.relative_to(self.data_root).as_posix()] = path  # no link out
                    self.label_files.add(relative)
                if skip is not None:
                    if skip.text:
                        self.skipped.append(SkippedFile(relative, skip.text, skip.group))
                    continue
                try:
                    scanned.append(self._register_data_file(relative, None).image.id)
                except LabelVolumeError:
                    label_volumes.setdefault(Path(relative).parent.as_posix(), []).append(path)
                    self.label_files.add(relative)
                    reason = "a label volume, not a scan to label"
                    self.skipped.append(SkippedFile(relative, reason, LABEL_VOLUMES_GROUP))
                except ServiceError as error:
                    message = error.message.removeprefix(f"{relative}: ")
                    self.skipped.append(SkippedFile(relative, message))
            self.store.list_data_folder_first(scanned)  # natural order, also in a store made in another one
            self.data_warning = self._data_fit_warning(scanned[:FIT_CHECKED_FILES])
            if self.data_warning is not None:
                logger.warning("data folder: %s", self.data_warning)
            for entry in self.skipped:
                logger.debug("data folder: skipping %s", entry)
            for line in summarise_skipped(self.skipped):
                logger.warning("data folder: skipping %s", line)
            pattern = self.settings.reference_name
            for folder, volumes in label_volumes.items():
                self._label_volumes[folder] = sorted(volumes, key=lambda path: path.name)
                chosen = self._chosen_reference(folder)
                if chosen is not None:
                    self._folder_references[folder] = chosen
                    continue
                candidates = reference_candidates(volumes, pattern)
                if len(candidates) == 1:
                    self._folder_references[folder] = candidates[0]
                elif len(candidates) > 1:
                    logger.warning(
                        "data folder: %s holds %d label volumes%s (%s), so none is the reference of its scans; choose "
                        "one in the page's volume panel, with --reference-name PATTERN, or name it <scan>_mask.nii.gz",
                        folder or ".",
                        len(candidates),
                        "" if pattern is None else f" (--reference-name {pattern!r} matches none or several)",
                        ", ".join(sorted(volume.name for volume in candidates)),
                    )

    def _data_folder_series(self, entries: Sequence[Path]) -> dict[Path, DicomSeries]:
        """The DICOM series among the data folder's files (links leading out left aside), by member file."""
        assert self.data_root is not None
        inside = [path for path in entries if path.resolve().is_relative_to(self.data_root)]
        found = find_dicom_series(inside, self._dicom_headers)
        self._dicom_headers.save()
        return {member: series for series in found for member in series.files}

    def _data_fit_warning(self, image_ids: list[str]) -> str | None:
        """:attr:`data_warning` from the files of these data-folder images, else ``None``."""
        for image_id in image_ids:
            record = self.store.get_image(image_id)
            source = self.store.get_source(record.source_id) if record is not None and record.source_id else None
            if source is None or (source.kind == "volume" and self.task.image_channels == 1):
                continue  # a volume is grey: what a grey model segments
            try:
                warning = task_fit_warning(self._decode(self._read_source_bytes(source), source.name), self.task)
            except (ServiceError, OSError):
                continue  # said when the file is opened
            if warning is not None:
                return f"{source.name}: {warning}"
        return None

    @property
    def skipped_files(self) -> list[str]:
        """:attr:`skipped` as ``"relative/path: reason"`` strings."""
        return [str(entry) for entry in self.skipped]

    # ================================================================== images

    def require_image(self, image_id: str) -> ImageRecord:
        """The stored record of an image.

        Raises:
            NotFound: Unknown image.
        """
        record = self.store.get_image(image_id)
        if record is None:
            raise NotFound(f"unknown image {image_id!r}")
        return record

    def image_info(self, record: ImageRecord) -> ImageInfo:
        """The API view of an image record (with its volume's slice count)."""
        num_slices = None
        if record.source_id is not None and record.slice_index is not None:
            source = self.store.get_source(record.source_id)
            num_slices = source.num_slices if source is not None else None
        return ImageInfo(
            id=record.id,
            name=record.name,
            origin=record.origin,
            task=record.task,
            status=record.status,
            clicks=record.clicks,
            source_id=record.source_id,
            slice_index=record.slice_index,
            num_slices=num_slices,
            height=record.height,
            width=record.width,
            has_reference=self._reference_path(record) is not None,
        )

    def _reference_path(self, record: ImageRecord) -> Path | None:
        """A data-folder picture's ``X_mask.ext`` (also for a crop of it); for a slice of a data-folder volume
        ``X.nii.gz``, the volume ``X_mask.nii.gz`` beside it, else the only label volume of its folder."""
        crop = CROP_ID.match(record.id) if record.origin == "upload" else None
        root = self.store.get_image(crop.group("root")) if crop is not None else None
        if root is not None:
            return self._reference_path(root)  # compared in the whole picture's frame, where a crop's masks go
        if record.origin != "data":
            return None
        if record.slice_index is None:
            return self._references.get(record.name)
        source = self.store.get_source(record.source_id) if record.source_id else None
        return None if source is None else self._volume_reference_path(source)

    def _volume_reference_path(self, source: SourceRecord) -> Path | None:
        """A data-folder volume's ``X_mask.nii.gz``, else the only label volume of its folder (or ``None``)."""
        if source.origin != "data" or source.kind != "volume":
            return None
        return self.volume_reference_file(source.path)

    def volume_reference_file(self, relative: str) -> Path | None:
        """The reference mask of the data-folder volume at ``relative`` (a path relative to the data folder): its
        ``X_mask.nii.gz``, else its folder's only label volume, else ``None``. The grid is not checked here."""
        partner = self._references.get(relative)
        return partner if partner is not None else self._folder_references.get(Path(relative).parent.as_posix())

    def _chosen_reference(self, folder: str) -> Path | None:
        """The label volume chosen in the page as the reference of ``folder``'s scans, if it is still there."""
        name = self.store.get_meta(REFERENCE_CHOICE + folder)
        found = [path for path in self._label_volumes.get(folder, []) if path.name == name]
        return found[0] if found else None

    def reference_choices(self, source_id: str) -> ReferenceChoices:
        """The label volumes of a data-folder volume's folder that may be its reference, and the one in use.

        Raises:
            NotFound: Unknown source.
            BadRequest: A 2D image.
        """
        with self.lock:
            source = self._require_volume(source_id)
            folder = Path(source.path).parent.as_posix()
            own = self._references.get(source.path) if source.origin == "data" else None
            in_use = self._volume_reference_path(source)
            return ReferenceChoices(
                label_volumes=[self._data_relative(path) for path in self._label_volumes.get(folder, [])]
                if source.origin == "data"
                else [],
                reference=None if in_use is None else self._data_relative(in_use),
                own_mask=own is not None,
            )

    def choose_reference(self, source_id: str, label_volume: str) -> ReferenceChoices:
        """Make one of the label volumes of a data-folder volume's folder the reference of every scan there without
        an ``X_mask.nii.gz`` of its own (kept in the store; it outlasts a restart and ``--reference-name``).

        Raises:
            NotFound: Unknown source.
            BadRequest: A 2D image, an upload, a scan with its own ``X_mask.nii.gz``, or not a label volume of the
                folder.
        """
        with self.lock:
            source = self._require_volume(source_id)
            if source.origin != "data":
                raise BadRequest(f"{source.name} is an upload: only data-folder scans have reference masks")
            if source.path in self._references:
                own = self._data_relative(self._references[source.path])
                raise BadRequest(f"{source.name} has its own reference mask {own}; it is not chosen")
            folder = Path(source.path).parent.as_posix()
            found = [path for path in self._label_volumes.get(folder, []) if self._data_relative(path) == label_volume]
            if not found:
                names = ", ".join(self._data_relative(path) for path in self._label_volumes.get(folder, []))
                raise BadRequest(
                    f"{label_volume!r} is not a label volume of {folder or 'the data folder'}"
                    + (f" (there: {names})" if names else " (it holds none)")
                )
            self._folder_references[folder] = found[0]
            self.store.set_meta(REFERENCE_CHOICE + folder, found[0].name)
            return self.reference_choices(source_id)

    def _data_relative(self, path: Path) -> str:
        """A data-folder path relative to the data folder."""
        assert self.data_root is not None
        return path.relative_to(self.data_root).as_posix()

    def _reference_reader(
        self, source: SourceRecord, path: Path, relative: str
    ) -> tuple[Callable[[int], np.ndarray], int]:
        """The slice reader and slice count of the reference volume at ``path`` of the scan ``source`` (decoded
        once, kept with the decoded volumes); its slices are upright like the scan's.

        Raises:
            BadRequest: The volume cannot be read or does not share the scan's voxel grid.
        """
        scan = self._decoded_source(source)
        key = "reference:" + relative
        reference = self._volumes.get(key)
        if reference is None:
            try:
                reference = self._decode(path.read_bytes(), relative)
            except ServiceError as error:
                raise BadRequest(f"reference volume {relative} cannot be read: {error.message}") from error
            self._cache_volume(key, reference)
        same_grid = (
            reference.volume_shape == scan.volume_shape
            and reference.affine is not None
            and scan.affine is not None
            and np.allclose(reference.affine, scan.affine, atol=1e-3)
        )
        if not same_grid or reference.reader is None:
            shape = "×".join(map(str, reference.volume_shape or ()))
            raise BadRequest(
                f"reference volume {relative} ({shape or reference.kind}) does not share the voxel grid (shape and "
                f"affine) of the scan {source.path} ({'×'.join(map(str, scan.volume_shape or ()))})"
            )
        return reference.reader, reference.slices or 0

    def reference_slices(self, source_id: str) -> ReferenceSlices:
        """Per axial slice of a data-folder volume, how many pixels its reference mask marks (any class but
        background), so that the page can point to the slices with a finding.

        Raises:
            NotFound: Unknown source, or no reference mask.
            BadRequest: A 2D image, or a reference that cannot be read, does not share the scan's grid or holds
                values that are not classes of the task.
        """
        relative, volume = self.reference_volume(source_id)
        return ReferenceSlices(reference=relative, pixels=[int(np.count_nonzero(plane)) for plane in volume])

    def reference_volume(self, source_id: str) -> tuple[str, np.ndarray]:
        """The reference mask of a data-folder volume (``X_mask.nii.gz`` beside it, else its folder's only label
        volume) as ``uint8`` class indices ``(slices, H, W)``, each slice upright like the scan's, with its path
        relative to the data folder. Only for comparing masks with it: the model never sees it.

        Raises:
            NotFound: Unknown source, or no reference mask.
            BadRequest: A 2D image, or a reference that cannot be read, does not share the scan's grid or holds
                values that are not classes of the task.
        """
        with self.lock:
            source = self._require_volume(source_id)
            path = self._volume_reference_path(source)
            if path is None or self.data_root is None:
                raise NotFound(
                    f"{source.name} has no reference mask (X_mask.nii.gz, its folder's only label volume, or the one "
                    "chosen among several)"
                )
            relative = self._data_relative(path)
            reader, count = self._reference_reader(source, path, relative)  # checks the grid for this scan
            classes = self._reference_classes.get(relative)
            if classes is None:
                classes = np.stack([self._class_indices(reader(index), relative) for index in range(count)])
                classes.flags.writeable = False  # shared by every caller
                self._reference_classes[relative] = classes
                while len(self._reference_classes) > MAX_REFERENCE_VOLUMES:
                    self._reference_classes.popitem(last=False)
            self._reference_classes.move_to_end(relative)
            return relative, classes

    def reference_label(self, image_id: str) -> tuple[str, np.ndarray] | None:
        """The reference mask of a data-folder picture ``X.ext`` — the file ``X_mask.ext`` beside it (the TCGA-LGG
        kaggle_3m layout) — as ``uint8`` class indices at the picture's size, with its relative path; ``None``
        when there is none. For a slice of a data-folder volume, that slice of the volume ``X_mask.nii.gz`` beside
        it or else of the only label volume in its folder (:func:`is_label_volume`; MSLUB's layout), which must
        share the scan's voxel grid. A crop of a picture has the picture's reference, in the picture's frame (where
        the crop's masks are placed for comparison and export). For a two-class task every non-zero value is the
        class; otherwise the values must be class indices. Only for showing the user how a mask compares: the
        model never sees it.

        Raises:
            NotFound: Unknown image.
            BadRequest: The mask file cannot be read or holds values that are not classes of the task.
        """
        record = self.require_image(image_id)
        path = self._reference_path(record)
        if path is None or self.data_root is None:
            return None
        relative = path.relative_to(self.data_root).as_posix()
        if record.slice_index is not None and record.source_id is not None:
            return relative, self.reference_volume(record.source_id)[1][record.slice_index]
        try:
            # Not ``decode_file``: it turns palette pictures into RGB, and a mask's palette indices are its classes.
            with PILImage.open(path) as picture:  # reads the header only, until the pixels are asked for
                width, height = picture.size
                if width * height > self.settings.max_image_pixels:
                    raise BadRequest(
                        f"reference mask {relative} declares {height}×{width} pixels, more than "
                        f"--max-image-pixels {self.settings.max_image_pixels}"
                    )
                values = np.asarray(picture)
        except (OSError, ValueError) as error:
            raise BadRequest(f"reference mask {relative} cannot be read: {error}") from error
        if values.ndim == 3:
            values = values[..., 0]
        return relative, self._class_indices(values, relative)

    def _class_indices(self, values: np.ndarray, relative: str) -> np.ndarray:
        """A reference mask's values as ``uint8`` classes: for a two-class task any non-zero value is the class."""
        if values.dtype.kind == "f":
            values = np.rint(values)  # a label volume's 0.99999997 is class 1
        if self.task.num_classes == 2:
            return (values > 0).astype(np.uint8)
        if values.size and (float(values.min()) < 0 or int(values.max()) >= self.task.num_classes):
            raise BadRequest(
                f"reference mask {relative} holds values {values.min():g}..{values.max():g}; class indices "
                f"0..{self.task.num_classes - 1} of task {self.task.name!r} were expected"
            )
        return values.astype(np.uint8)

    def _listed_records(self) -> list[ImageRecord]:
        """The stored images in list order, but for the unlabelled images of label volumes an older version
        registered as scans, and of single files of a DICOM series read as one volume."""
        hidden = self._label_sources | self._series_member_sources
        return [
            record for record in self.store.list_images() if not (record.source_id in hidden and record.status == "new")
        ]

    def list_images(self) -> list[ImageInfo]:
        """Every image in list order with status and click count."""
        return [self.image_info(record) for record in self._listed_records()]

    def get_image(self, image_id: str) -> ImageInfo:
        """One image.

        Raises:
            NotFound: Unknown image.
        """
        return self.image_info(self.require_image(image_id))

    def image_data(self, image_id: str) -> ImageData:
        """The image's stored pixels (model input), display picture and geometry, decoding a data-folder file
        on first use.

        Raises:
            NotFound: Unknown image, or its file vanished.
            BadRequest: Its file can no longer be decoded.
        """
        record = self.require_image(image_id)
        data = self.store.get_image_data(image_id)
        if data is not None:
            return data
        if record.source_id is None:
            raise NotFound(f"image {image_id!r} has no pixels")
        source = self.store.get_source(record.source_id)
        if source is None:
            raise NotFound(f"the source of image {image_id!r} is missing")
        with self.lock:
            self.store.set_image_data(image_id, self._prepare(source, None, record.slice_index))
        data = self.store.get_image_data(image_id)
        assert data is not None
        return data

    def geometry(self, image_id: str) -> Geometry:
        """How the image's model grid maps back onto its source (size, pad/crop or resize, volume placement).

        Raises:
            NotFound: Unknown image.
        """
        return Geometry.model_validate(self.image_data(image_id).geometry)

    def display_png(self, image_id: str) -> bytes:
        """The 8-bit PNG of the model's grid (same geometry as the model input; click coordinates are its pixels)."""
        return self.image_data(image_id).display_png

    def page_picture(self, image_id: str) -> tuple[bytes, str]:
        """The picture the page draws under the mask, as file bytes and media type.

        For a photograph the model sees resized onto its grid (fundus), ``display.png`` is that square grid: blurred
        (a 2048-pixel photograph shown from 256 pixels) and stretched to a square. The page draws this instead: the
        photograph itself (a crop: its square of the picture) at the resolution of the mask overlay
        (:func:`~clickadapt.server.images.page_geometry`, at most ``PAGE_OVERLAY_MAX_SIDE`` a side), with its own
        aspect ratio, as a JPEG. Every other image (grey slices, whose display pixels are the source's; a built-in
        image without a file; a file that can no longer be read) answers ``display.png``.

        Raises:
            NotFound: Unknown image.
        """
        with self.lock:  # the routes run in a thread pool
            cached = self._page_pictures.get(image_id)
            if cached is not None:
                self._page_pictures.move_to_end(image_id)
                return cached
        record = self.require_image(image_id)
        geometry, crop = self.placement(image_id)
        answer = (self.display_png(image_id), "image/png")
        root = self.store.get_image(crop.root) if crop is not None else record
        source = self.store.get_source(root.source_id) if root is not None and root.source_id is not None else None
        if geometry.kind == "resize" and record.slice_index is None and source is not None:
            try:
                with self.lock:
                    picture = self._decoded_source(source).picture()
                prepared_from = crop.picture_shape if crop is not None else geometry.source_shape
                if tuple(picture.shape[:2]) != tuple(prepared_from):
                    raise ValueError(
                        f"the file is now {picture.shape[1]}×{picture.shape[0]} pixels, not the picture "
                        f"prepared from it ({prepared_from[1]}×{prepared_from[0]})"
                    )
                if crop is not None:
                    picture = picture[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
                answer = (encode_page_picture(picture, page_geometry(geometry).source_shape), "image/jpeg")
            except (ServiceError, OSError, ValueError) as error:
                logger.warning("%s: the page shows the model's grid picture (%s)", record.name, error)
        with self.lock:
            self._page_pictures[image_id] = answer
            while len(self._page_pictures) > PAGE_PICTURE_CACHE:
                self._page_pictures.popitem(last=False)
        return answer

    def next_image(self, after: str | None = None) -> ImageInfo | None:
        """The first image after ``after`` in list order (wrapping around) that is not done; ``None`` if all are."""
        images = self._listed_records()
        start = 0
        if after is not None:
            positions = [index for index, record in enumerate(images) if record.id == after]
            start = positions[0] + 1 if positions else 0
        for record in images[start:] + images[:start]:
            if record.status != "done" and record.id != after:
                return self.image_info(record)
        return None

    # ================================================================== sources: decoding and preparing

    def _read_source_bytes(self, source: SourceRecord) -> bytes:
        if source.origin == "data":
            if self.data_root is not None and is_series_request(source.path, self.data_root):
                series = resolve_series(source.path, self.data_root)
                return series_nifti_bytes(series, self.data_root, self.settings.max_volume_voxels)
            return self.resolve_data_path(source.path).read_bytes()
        path = (self.store.folder / source.path).resolve()
        if not path.is_relative_to(self.store.folder.resolve()) or not path.is_file():
            raise NotFound(f"the stored upload of source {source.id!r} is missing")
        return path.read_bytes()

    def _decode(self, payload: bytes | bytearray, name: str) -> DecodedSource:
        try:
            limits = DecodeLimits(self.settings.max_image_pixels, self.settings.max_volume_voxels)
            decoded = decode_file(payload, name, limits)
        except UnsupportedFormatError as error:
            raise UnsupportedMediaType(str(error)) from error
        except ImageDecodeError as error:
            raise BadRequest(str(error)) from error
        return self._chosen_channel(decoded)

    def _chosen_channel(self, decoded: DecodedSource) -> DecodedSource:
        """A multichannel picture reduced to the channel ``settings.channel`` for a grey model (else as it is)."""
        channel = self.settings.channel
        if channel is None or self.task.image_channels != 1 or decoded.kind != "image" or decoded.array is None:
            return decoded
        if decoded.array.ndim != 3:
            return decoded  # already grey: nothing to choose
        decoded.array = np.ascontiguousarray(decoded.array[..., channel])
        return decoded

    def _cache_volume(self, source_id: str, decoded: DecodedSource) -> None:
        if decoded.kind == "volume":
            self._volumes[source_id] = decoded
            self._volumes.move_to_end(source_id)
            while len(self._volumes) > VOLUME_CACHE_SIZE:
                self._volumes.popitem(last=False)

    def _decoded_source(self, source: SourceRecord) -> DecodedSource:
        cached = self._volumes.get(source.id)
        if cached is not None:
            self._volumes.move_to_end(source.id)
            return cached
        decoded = self._decode(self._read_source_bytes(source), source.name)
        self._cache_volume(source.id, decoded)
        return decoded

    @staticmethod
    def _checked_slice(source: SourceRecord, slice_index: int | None) -> int | None:
        """The slice to label (the middle one of a volume by default).

        Raises:
            BadRequest: A slice of a 2D image, or a slice outside the volume.
        """
        if source.kind == "volume" and slice_index is None:
            slice_index = (source.num_slices or 1) // 2
        if source.kind == "image" and slice_index is not None:
            raise BadRequest(f"{source.name} is a 2D image; it has no slices (leave out 'slice')")
        if slice_index is not None and not 0 <= slice_index < (source.num_slices or 0):
            raise BadRequest(f"slice {slice_index} is outside {source.name} (slices 0..{(source.num_slices or 1) - 1})")
        return slice_index

    def _image_from_source(
        self,
        source: SourceRecord,
        decoded: DecodedSource | None,
        slice_index: int | None,
        data: ImageData | None = None,
    ) -> ImageRecord:
        """Register (or find) the image of a source and slice; decodes now when ``decoded`` is given (or uses
        the already prepared ``data``)."""
        slice_index = self._checked_slice(source, slice_index)
        existing = self.store.find_image(source.id, slice_index)
        if existing is not None:
            return existing
        image_id = source.id if slice_index is None else f"{source.id}-s{slice_index}"
        name = source.name if slice_index is None else f"{source.name} [slice {slice_index}]"
        if data is None and decoded is not None:
            data = self._prepare(source, decoded, slice_index)
        origin = "upload" if source.origin == "upload" else "data"
        return self.store.add_image(image_id, name, origin, self.task.name, source.id, slice_index, data)

    def _prepare(self, source: SourceRecord, decoded: DecodedSource | None, slice_index: int | None) -> ImageData:
        decoded = decoded if decoded is not None else self._decoded_source(source)
        try:
            prepared = prepare_source(decoded, self.task, self.image_size, slice_index, self.clip_percentiles)
        except ValueError as error:
            raise BadRequest(f"{source.name}: {error}") from error
        return ImageData(prepared.pixels, encode_png(prepared.display), prepared.geometry.model_dump(mode="json"))

    # ================================================================== the data folder

    def resolve_data_path(self, relative: str) -> Path:
        """The file ``relative`` inside the data folder.

        Raises:
            BadRequest: No data folder, an absolute path, or a path (or link) that leads outside it.
            NotFound: The file does not exist.
        """
        if self.data_root is None:
            raise BadRequest("the server was started without a data folder (--data)")
        if "\x00" in relative:
            raise BadRequest("path must not contain a NUL byte")
        candidate = Path(relative)
        if candidate.is_absolute() or not relative.strip():
            raise BadRequest(f"path {relative!r} must be relative to the data folder")
        resolved = (self.data_root / candidate).resolve()
        if not resolved.is_relative_to(self.data_root):
            raise BadRequest(f"path {relative!r} is outside the data folder")
        if not resolved.is_file():
            raise NotFound(f"file {relative!r} does not exist in the data folder")
        return resolved

    def _register_data_series(self, series: DicomSeries, slice_index: int | None) -> UploadResult:
        """Register a DICOM series of the data folder as a volume source (and its slice, default the middle one)."""
        assert self.data_root is not None
        relative = series_path(series, self.data_root)
        source_id = data_source_id(relative)
        source = self.store.get_source(source_id)
        if source is not None:
            image = self._image_from_source(source, None, slice_index)
            return UploadResult(source=self.source_info(source), image=self.image_info(image))
        name = series_name(series, self.data_root)
        decoded = self._decode(series_nifti_bytes(series, self.data_root, self.settings.max_volume_voxels), name)
        candidate = SourceRecord(source_id, name, "data", relative, decoded.kind, decoded.num_slices)
        slice_index = self._checked_slice(candidate, slice_index)  # refuse before anything is stored
        data = self._prepare(candidate, decoded, slice_index)
        source = self.store.add_source(candidate)
        self.store.set_meta(LABEL_CHECK + source_id, "scan")
        self._cache_volume(source_id, decoded)
        image = self._image_from_source(source, decoded, slice_index, data)
        warning = task_fit_warning(decoded, self.task)
        return UploadResult(source=self.source_info(source), image=self.image_info(image), warning=warning)

    def _register_data_file(self, relative: str, slice_index: int | None) -> UploadResult:
        if self.data_root is not None and is_series_request(relative, self.data_root):
            return self._register_data_series(resolve_series(relative, self.data_root), slice_index)
        path = self.resolve_data_path(relative)
        relative = path.relative_to(self.data_root or path.parent).as_posix()
        source_id = data_source_id(relative)
        source = self.store.get_source(source_id)
        decoded = None
        checked = (
            self.store.get_meta(LABEL_CHECK + source_id) if source is not None and source.kind == "volume" else None
        )
        if source is not None and source.kind == "volume" and checked is None:
            # registered by a version that did not tell label volumes apart: checked once, then remembered
            decoded = self._decode(path.read_bytes(), relative)
            checked = "label" if is_label_volume(decoded) else "scan"
            self.store.set_meta(LABEL_CHECK + source_id, checked)
        if checked == "label":
            self._label_sources.add(source_id)  # its images nobody labelled leave the list (see _listed_records)
            raise LabelVolumeError(f"{relative}: {LABEL_VOLUME_REASON}")
        if source is None:
            if not has_supported_suffix(path.name):
                raise UnsupportedMediaType(f"{relative}: unsupported file type (expected {SUPPORTED_FORMATS})")
            decoded = self._decode(path.read_bytes(), relative)
            if is_label_volume(decoded):
                raise LabelVolumeError(f"{relative}: {LABEL_VOLUME_REASON}")
            candidate = SourceRecord(source_id, relative, "data", relative, decoded.kind, decoded.num_slices)
            slice_index = self._checked_slice(candidate, slice_index)  # refuse before anything is stored
            data = self._prepare(candidate, decoded, slice_index)
            source = self.store.add_source(candidate)
            if decoded.kind == "volume":
                self.store.set_meta(LABEL_CHECK + source_id, "scan")
            image = self._image_from_source(source, decoded, slice_index, data)
            warning = task_fit_warning(decoded, self.task)
            return UploadResult(source=self.source_info(source), image=self.image_info(image), warning=warning)
        image = self._image_from_source(source, decoded, slice_index)
        return UploadResult(source=self.source_info(source), image=self.image_info(image))

    def add_data_image(self, relative: str, slice_index: int | None = None) -> UploadResult:
        """Register a file of the data folder (and slice) as an image.

        A file new to the store (added to the folder after start-up) is checked as an upload is: the result
        carries a warning when it does not look like what the model segments.

        Raises:
            BadRequest: Path outside the data folder, or no data folder.
            NotFound: No such file.
        """
        with self.lock:
            return self._register_data_file(relative, slice_index)

    def data_files(self) -> list[str]:
        """Readable files of the data folder, relative paths (empty without a data folder); a DICOM series once, as
        ``folder/#SeriesInstanceUID`` where its first file comes, instead of its files."""
        if self.data_root is None:
            return []
        entries = data_folder_entries(self.data_root)
        series_of_file = self._data_folder_series(entries)
        files: list[str] = []
        for path in entries:
            series = series_of_file.get(path)
            if series is not None and path not in self._broken_series:
                relative = series_path(series, self.data_root)
                if relative not in files:
                    files.append(relative)
                continue
            if data_file_skip_reason(path) is None and path.resolve().is_relative_to(self.data_root):
                files.append(path.relative_to(self.data_root).as_posix())
        return files

    # ================================================================== uploads and volumes

    def upload(self, payload: bytes | bytearray, filename: str, slice_index: int | None = None) -> UploadResult:
        """Store an uploaded file and make an image of it (volumes: of ``slice_index``, default the middle).

        The same content uploaded twice is stored once. The result carries a warning when the picture does not
        look like the task's images (e.g. a colour photograph for the brain model).

        A zip holding one DICOM series is stored as that series saved as NIfTI (:func:`series_upload`).

        Raises:
            PayloadTooLarge: Above ``max_upload_bytes`` (a zip: also unpacked).
            UnsupportedMediaType: Not PNG, JPEG, TIFF, WebP, NIfTI, DICOM or a zipped DICOM series.
            BadRequest: Corrupt content, or a slice outside the volume.
        """
        if len(payload) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"upload of {len(payload)} bytes exceeds the limit of {self.settings.max_upload_bytes} bytes"
            )
        name = Path(filename.replace("\\", "/")).name or "upload"
        if is_zip(payload):  # a DICOM series, zipped: stored as the NIfTI it stands for
            payload, name = series_upload(
                payload, name, self.settings.max_upload_bytes, self.settings.max_volume_voxels
            )
        decoded = self._decode(payload, name)
        digest = hashlib.sha256(payload).hexdigest()
        source_id = f"up-{digest[:16]}"
        with self.lock:
            source = self.store.get_source(source_id)
            candidate = source or SourceRecord(source_id, name, "upload", "", decoded.kind, decoded.num_slices)
            # Everything is checked (slice, preprocessing) before a file or a row is stored.
            slice_index = self._checked_slice(candidate, slice_index)
            existing = self.store.find_image(source_id, slice_index) if source is not None else None
            data = self._prepare(candidate, decoded, slice_index) if existing is None else None
            warning = task_fit_warning(decoded, self.task)
            if warning is None and is_label_volume(decoded):
                warning = (
                    f"{name} looks like a label volume (at most {LABEL_VOLUME_MAX_VALUES} integer voxel values: a "
                    "segmentation), not a scan to label"
                )
            if source is None:
                gzipped = decoded.format == "nifti" and payload[:2] == b"\x1f\x8b"
                suffix = ".nii.gz" if gzipped else UPLOAD_SUFFIXES[decoded.format]
                relative = f"{UPLOADS_FOLDER}/{digest[:16]}{suffix}"
                atomic_write_bytes(self.store.folder / relative, bytes(payload))
                source = self.store.add_source(
                    SourceRecord(source_id, name, "upload", relative, decoded.kind, decoded.num_slices)
                )
            self._cache_volume(source_id, decoded)
            image = existing or self._image_from_source(source, decoded, slice_index, data)
        return UploadResult(source=self.source_info(source), image=self.image_info(image), warning=warning)

    def source_info(self, source: SourceRecord) -> SourceInfo:
        """The API view of a source record."""
        return SourceInfo(
            id=source.id,
            name=source.name,
            origin="upload" if source.origin == "upload" else "data",
            kind="volume" if source.kind == "volume" else "image",
            num_slices=source.num_slices,
            dicom_series=self._is_data_series(source),
        )

    def _is_data_series(self, source: SourceRecord) -> bool:
        return source.origin == "data" and self.data_root is not None and is_series_request(source.path, self.data_root)

    def dicom_series_of(self, source_id: str) -> DicomSeries:
        """The DICOM series of the data folder a source stands for (its files, for a DICOM SEG export).

        Raises:
            NotFound: Unknown source, or its series is gone.
            BadRequest: Not a data-folder DICOM series (an uploaded series is kept as NIfTI, without its files).
        """
        source = self._require_source(source_id)
        if not self._is_data_series(source):
            raise BadRequest(
                f"{source.name} is not a DICOM series of the data folder; a DICOM SEG refers to the series' own files "
                "(an uploaded series is kept as NIfTI): export it as NIfTI"
            )
        assert self.data_root is not None
        return resolve_series(source.path, self.data_root)

    def _require_source(self, source_id: str) -> SourceRecord:
        source = self.store.get_source(source_id)
        if source is None:
            raise NotFound(f"unknown source {source_id!r}")
        return source

    def get_source(self, source_id: str) -> SourceInfo:
        """A source (uploaded or data-folder file).

        Raises:
            NotFound: Unknown source.
        """
        return self.source_info(self._require_source(source_id))

    def _require_volume(self, source_id: str) -> SourceRecord:
        """The source, which must be a volume.

        Raises:
            NotFound: Unknown source.
            BadRequest: It is a 2D image.
        """
        source = self._require_source(source_id)
        if source.kind != "volume":
            raise BadRequest(f"{source.name} is a 2D image; it has no slices")
        return source

    def slice_preview(self, source_id: str, index: int) -> bytes:
        """An 8-bit PNG of one slice of a volume (for the page's slice slider).

        Raises:
            NotFound: Unknown source.
            BadRequest: Not a volume, or the index is outside it.
        """
        source = self._require_volume(source_id)
        with self.lock:
            decoded = self._decoded_source(source)
            try:
                return encode_png(window_to_uint8(decoded.slice(index)))
            except ValueError as error:
                raise BadRequest(f"{source.name}: {error}") from error

    def add_slice(self, source_id: str, index: int) -> ImageInfo:
        """Make (or find) the image of one slice of a volume.

        Raises:
            NotFound: Unknown source.
            BadRequest: Not a volume, or the index is outside it.
        """
        source = self._require_volume(source_id)
        with self.lock:
            decoded = self._decoded_source(source)
            return self.image_info(self._image_from_source(source, decoded, index))

    # ================================================================== crops

    def placement(self, image_id: str) -> tuple[Geometry, ImageCrop | None]:
        """How the image's model grid maps onto its source, and where a cropped image lies in the picture it was
        cut from (``None`` for an uncropped image); one read of the stored image data.

        Raises:
            NotFound: Unknown image.
        """
        stored = self.image_data(image_id).geometry
        raw = stored.get("crop")
        return Geometry.model_validate(stored), None if raw is None else ImageCrop.model_validate(raw)

    def crop_of(self, image_id: str) -> ImageCrop | None:
        """Where a cropped image lies in the picture it was cut from (``None`` for an uncropped image).

        Raises:
            NotFound: Unknown image.
        """
        return self.placement(image_id)[1]

    def add_crop(self, image_id: str, top: float, left: float, bottom: float, right: float) -> ImageInfo:
        """Make (or find) the image of a square crop of a photograph (see :mod:`~clickadapt.server.service.crops`).

        Args:
            image_id: The image the user drew the box on (itself possibly a crop).
            top, left, bottom, right: The box in that image's ``display.png`` pixels (bottom, right exclusive).

        Returns:
            The crop's image: a new entry of the list (or the existing one for the same square), prepared like
            any photograph from the square of the whole picture around the box.

        Raises:
            NotFound: Unknown image.
            BadRequest: Not a photograph resized onto the model's grid (volumes and brain slices are centre
                padded, never resampled: a crop would not change their scale), no file to crop from, or a box
                too small.
        """
        record = self.require_image(image_id)
        geometry, parent = self.placement(image_id)
        if geometry.kind != "resize" or record.slice_index is not None:
            raise BadRequest(
                f"{record.name}: only photographs, which the model sees resized onto its grid, can be cropped "
                "(a grey slice is padded, not resized: a crop would not change its scale)"
            )
        root = self.require_image(parent.root) if parent is not None else record
        source = self.store.get_source(root.source_id) if root.source_id is not None else None
        if source is None:
            raise BadRequest(f"{root.name}: a built-in image has no file to crop from; upload the picture")
        rows, cols = geometry.source_shape[0] / geometry.size, geometry.source_shape[1] / geometry.size
        row0, col0 = (parent.top, parent.left) if parent is not None else (0, 0)
        with self.lock:
            picture = self._decoded_source(source).picture()
            shape = (int(picture.shape[0]), int(picture.shape[1]))
            try:
                row, col, side = square_box(
                    row0 + top * rows, col0 + left * cols, row0 + bottom * rows, col0 + right * cols, shape
                )
            except ValueError as error:
                raise BadRequest(f"{record.name}: {error}") from error
            crop_id = f"{root.id}-crop{row}-{col}-{side}"  # CROP_ID
            existing = self.store.get_image(crop_id)
            if existing is not None:
                return self.image_info(existing)
            prepared = prepare_image(picture[row : row + side, col : col + side], self.task, self.image_size)
            crop = ImageCrop(root=root.id, top=row, left=col, size=side, picture_shape=shape)
            stored = {**prepared.geometry.model_dump(mode="json"), "crop": crop.model_dump(mode="json")}
            data = ImageData(prepared.pixels, encode_png(prepared.display), stored)
            name = f"{root.name} [crop {side}×{side} at row {row}, column {col}]"
            logger.info("cropped %s to %s", root.id, crop_id)
            return self.image_info(self.store.add_image(crop_id, name, "upload", self.task.name, data=data))
