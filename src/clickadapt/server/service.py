"""The task layer of the server: images, per-client labelling sessions and the shared adapting model.

The HTTP routers are thin; everything the page can do is a method of :class:`AnnotationService`. It
drives :class:`~clickadapt.adaptation.session.InteractiveSession` objects on one shared
:class:`~clickadapt.adaptation.model_state.ModelState` and never predicts or adapts by itself.

- **Clients.** Each browser tab (``X-Client-Id`` header) has its own current image. An image being
  labelled by one client is refused to another until that client moves on or is idle for
  ``claim_timeout_s``.
- **Serialisation.** One service lock serialises every operation that touches a session or the model,
  so weight updates of several people never interleave; each answer carries the model version that
  produced its mask.
- **Persistence.** Every click, undo, reset and finish is written to the :class:`Datastore` before the
  answer leaves. After every finished image (and on demand) the weights are saved as a new model
  version ``<store>/models/v<N>.pt``. With ``autosave_every_click`` the weights are also saved after
  every click that changed them (``models/autosave.pt``), so a restart resumes with Mid-Interaction
  updates; without it a restart resumes from the last saved version.
- **Restart.** Re-opening an in-progress image replays its stored clicks through a session with
  adaptation switched off (the restored weights already contain their updates). Undo after a restart
  removes the click but cannot take back its weight update (there is no snapshot any more).
- **Source domain.** The domain router (:class:`~clickadapt.adaptation.domains.DomainScopedModels`) gives
  images whose name matches ``--source-domain`` an :class:`~clickadapt.adaptation.domains.EpisodicModel`:
  a copy of the base model that learns from that image's clicks only. They never change the shared model,
  and their clicks and masks are recorded with the base model's version. Each open source-domain image has
  its own copy (reset to the base weights and given back when it is finished or leaves memory); after a
  restart an in-progress source image is replayed on the base weights (its updates are not saved).
- **Finishing.** ``session.finish()`` reaches the safety layer and the episodic reset: they are listeners
  of the session's model state, so the service has no finish path of its own.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from clickadapt.adaptation.domains import DomainScopedModels, EpisodicModel
from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyEvent, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import STRATEGIES, STRATEGY_NAMES, AdaptationStrategy, make_strategy
from clickadapt.clicks.click import Click
from clickadapt.data.prepare import class_map_to_source, logits_to_source
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.data.sample import Sample
from clickadapt.models.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)
from clickadapt.paths import resolve_model_spec
from clickadapt.server.datastore import (
    ClickRecord,
    CorrectionRecord,
    Datastore,
    ImageData,
    ImageRecord,
    ModelVersionRecord,
    SourceRecord,
    utc_now,
)
from clickadapt.server.images import (
    DecodedSource,
    DecodeLimits,
    Geometry,
    ImageDecodeError,
    UnsupportedFormatError,
    decode_file,
    display_from_pixels,
    encode_png,
    has_supported_suffix,
    mask_to_nifti,
    overlay_png,
    paint_stroke,
    prepare_source,
    task_fit_warning,
    window_to_uint8,
)
from clickadapt.server.schemas import (
    ChartPoint,
    ClickOut,
    ImageInfo,
    ModelInfo,
    ModelVersionInfo,
    SafetyEventOut,
    SessionView,
    SourceInfo,
    UploadResult,
)
from clickadapt.server.settings import ServerSettings
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)

SAFETY_EVENTS_SHOWN = 50
"""The safety layer's latest events returned with the model information."""

AUTOSAVE_NAME = "autosave.pt"
MODELS_FOLDER = "models"
UPLOADS_FOLDER = "uploads"
DEFAULT_CLIENT = "api"
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VOLUME_CACHE_SIZE = 2
MaskChoice = Literal["current", "original", "final"]
SOURCE_DOMAIN = "source"
"""The router's domain of images matching ``--source-domain`` (each served by its own episodic copy)."""
SHARED_DOMAIN = "shared"
"""The router's domain of every other image (the shared, adapting model)."""


class ServiceError(Exception):
    """A request the service refuses; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    """Invalid input (click outside the image, unknown class, path outside the data folder…)."""

    status = 400


class NotFound(ServiceError):
    """Unknown image, source, model version or file."""

    status = 404


class Conflict(ServiceError):
    """The request does not fit the current state (finishing twice, image open elsewhere, nothing to undo)."""

    status = 409


class PayloadTooLarge(ServiceError):
    """An upload above the configured size limit."""

    status = 413


class UnsupportedMediaType(ServiceError):
    """An upload of a format the server does not read."""

    status = 415


def normalise_client_id(value: str | None) -> str:
    """A safe client id: the given one if well-formed, else ``"api"`` (the shared id of plain API callers).

    Raises:
        BadRequest: If ``value`` is given but malformed.
    """
    if not value:
        return DEFAULT_CLIENT
    if not CLIENT_ID_PATTERN.match(value):
        raise BadRequest("X-Client-Id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "image"


@dataclass
class LiveImage:
    """An image whose interactive session is in memory.

    Attributes:
        image_id: The image.
        session_id: Its datastore session.
        session: The interactive session (on the shared model).
        client_id: Client that has it open now (``None`` once it moved on).
        last_seen: ``time.monotonic()`` of that client's last request on it.
        message: A note for the next answer (e.g. why an undo kept the weights).
        corrections: Brush and eraser strokes in force, painted over the latest prediction in order.
        replayed_updates: For each click replayed from the datastore (after a restart): whether it changed
            the weights (it ran an update and the model version moved with it). Those updates are in the
            restored weights and cannot be undone any more.
    """

    image_id: str
    session_id: int
    session: InteractiveSession
    client_id: str | None
    last_seen: float
    message: str = ""
    replayed_updates: list[bool] = field(default_factory=list)
    corrections: list[CorrectionRecord] = field(default_factory=list)


class AnnotationService:
    """Everything the web page and the REST API can do.

    Args:
        settings: Server settings (store, data folder, model, strategy…).
        samples: Pre-made samples to serve instead of the data folder or the demo images (tests, embedding).

    Raises:
        FileNotFoundError: The model checkpoint or the data folder does not exist.
        ValueError: Unknown strategy, a store created with another base model, or a task mismatch.
        CheckpointError: A stored model version is corrupt.
    """

    def __init__(self, settings: ServerSettings, samples: Sequence[Sample] | None = None) -> None:
        self.settings = settings
        self.data_root = self._check_data_root(settings.data)
        resolve_model_spec(settings.model)  # fail before creating a store for a missing model
        self.store = Datastore(settings.store)
        self._lock = threading.RLock()
        self._live: OrderedDict[str, LiveImage] = OrderedDict()
        self._current: dict[str, str] = {}
        self._volumes: OrderedDict[str, DecodedSource] = OrderedDict()
        self._strategies: dict[str, AdaptationStrategy] = {}
        self._load_model()
        self._register_images(samples)

    # ================================================================== start-up

    @staticmethod
    def _check_data_root(data: Path | None) -> Path | None:
        if data is None:
            return None
        root = Path(data).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {data} does not exist")
        return root

    def _load_model(self) -> None:
        base_path = resolve_model_spec(self.settings.model)
        base = load_checkpoint(base_path, self.settings.device)
        self.task: TaskSpec = base.task
        self.base_meta: CheckpointMeta = base.meta
        self.image_size = self.settings.image_size or base.meta.preprocessing.image_size(self.task.name)
        self.click_sigma = base.meta.preprocessing.click_sigma
        stored_base = self.store.get_meta("base_model_sha256")
        if stored_base is None:
            self.store.set_meta("base_model_sha256", base.sha256)
            self.store.set_meta("base_model_path", str(base_path))
            self.store.set_meta("task", self.task.name)
            model = base.model
            version = base.meta.version
        elif stored_base != base.sha256:
            raise ValueError(
                f"store {self.store.folder} was started with another base model "
                f"({self.store.get_meta('base_model_path')}, sha256 {stored_base[:12]}…); "
                f"{base_path} has sha256 {base.sha256[:12]}…. Use another --store for another model."
            )
        else:
            latest = self.store.latest_model_version()
            assert latest is not None, "a store with a base model always records its initial version"
            loaded = load_checkpoint(self.store.folder / latest.path, self.settings.device)
            model, version = loaded.model, latest.version
            autosave = self.store.folder / MODELS_FOLDER / AUTOSAVE_NAME
            autosave_version = int(self.store.get_meta("autosave_version") or -1)
            if autosave_version > version and autosave.is_file():
                try:
                    model = load_checkpoint(autosave, self.settings.device).model
                    version = autosave_version
                    logger.info("resumed the weights of version %d from %s", version, autosave)
                except CheckpointError as error:
                    logger.warning("ignoring the autosave: %s; resuming from version %d", error, version)
        strategy_name = self._initial_setting("strategy", self.settings.strategy)
        adaptation = self._initial_setting("adaptation", "1" if self.settings.adaptation else "0") == "1"
        if strategy_name not in STRATEGIES:
            raise ValueError(f"unknown adaptation strategy {strategy_name!r}; known: {list(STRATEGY_NAMES)}")
        self.strategy_name = strategy_name
        self.adaptation = adaptation
        self.state = ModelState(model, self.task, self._strategy(), self.settings.device, version=version)
        # Safety layer on by default: update guard, bounded snapshots, drift monitor with rollback (issue 7);
        # the source sentinel and the source rehearsal when labelled source images are given.
        self.safety = attach_safety(
            self.state,
            sentinel_images=self._labelled_source_images(self.settings.sentinel, "sentinel"),
            rehearsal_images=self._labelled_source_images(self.settings.rehearsal, "rehearsal"),
        )
        # One router for every image: the shared model above, or for a source-domain image a guarded copy of
        # the base model that learns from that image only (an EpisodicModel, reset when it is finished).
        self.base_version = base.meta.version
        self.domains = DomainScopedModels(
            base.model,
            self.task,
            self.strategy_name,
            source_domains={SOURCE_DOMAIN},
            safety=SafetyConfig(),
            device=self.settings.device,
            source_mode="episodic",
            source_version=self.base_version,
        )
        self.domains.adopt(SHARED_DOMAIN, self.state, self.safety)
        self._autosaved_version = version
        if stored_base is None:
            self._save_version("initial", note=f"base model {base_path.name}")

    def _labelled_source_images(self, folder: Path | None, role: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """The labelled source images of a ``--sentinel`` or ``--rehearsal`` folder (none when unset).

        Raises:
            FileNotFoundError: The folder, its ``images/`` or a mask is missing (the path is named).
            ValueError: A mask holds a class the task does not have, or the folder has no image/mask pair.
        """
        if folder is None:
            return []
        config = DatasetConfig(reader="folder", root=folder, task=self.task.name, size=self.image_size)
        samples = load_samples(config)
        if not samples:
            raise ValueError(f"{role} folder {folder} holds no image/mask pairs")
        return [(sample.image, sample.label) for sample in samples]

    def _initial_setting(self, field: str, value: str) -> str:
        """A setting given on the command line wins; otherwise the one stored by the page, else the default."""
        stored = self.store.get_meta(field)
        chosen = value if field in self.settings.model_fields_set or stored is None else stored
        self.store.set_meta(field, chosen)
        return chosen

    def _strategy(self, strategy_name: str | None = None, adaptation: bool | None = None) -> AdaptationStrategy:
        """The strategy object for a setting (default: the one in force).

        One object per name is kept, so switching back keeps its optimizer state.
        """
        strategy_name = self.strategy_name if strategy_name is None else strategy_name
        adaptation = self.adaptation if adaptation is None else adaptation
        name = strategy_name if adaptation else "frozen"
        if name not in self._strategies:
            _, config_class = STRATEGIES[name]
            overrides = {"seed": self.settings.seed} if "seed" in config_class.model_fields else {}
            self._strategies[name] = make_strategy(name, self.task, **overrides)
        return self._strategies[name]

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
                image_id = "demo-" + _slug(sample.key.replace("/", "_"))
                if self.store.get_image(image_id) is not None:
                    continue
                pixels = np.asarray(sample.image, dtype=np.float32)
                geometry = Geometry(kind="pad-crop", source_shape=sample.shape, size=sample.shape[0])
                data = ImageData(pixels, encode_png(display_from_pixels(pixels)), geometry.model_dump(mode="json"))
                self.store.add_image(image_id, sample.key, "demo", self.task.name, data=data)
        if self.data_root is not None:
            self._scan_data_folder()

    def _scan_data_folder(self) -> None:
        assert self.data_root is not None
        for path in sorted(self.data_root.rglob("*")):
            if not path.is_file() or not has_supported_suffix(path.name) or path.name.startswith("."):
                continue
            relative = path.relative_to(self.data_root).as_posix()
            try:
                self._register_data_file(relative, None)
            except ServiceError as error:
                logger.warning("skipping %s: %s", relative, error.message)

    # ================================================================== paths and sources

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

    def _read_source_bytes(self, source: SourceRecord) -> bytes:
        if source.origin == "data":
            return self.resolve_data_path(source.path).read_bytes()
        path = (self.store.folder / source.path).resolve()
        if not path.is_relative_to(self.store.folder.resolve()) or not path.is_file():
            raise NotFound(f"the stored upload of source {source.id!r} is missing")
        return path.read_bytes()

    def _decode(self, payload: bytes | bytearray, name: str) -> DecodedSource:
        try:
            limits = DecodeLimits(self.settings.max_image_pixels, self.settings.max_volume_voxels)
            return decode_file(payload, name, limits)
        except UnsupportedFormatError as error:
            raise UnsupportedMediaType(str(error)) from error
        except ImageDecodeError as error:
            raise BadRequest(str(error)) from error

    def _decoded_source(self, source: SourceRecord) -> DecodedSource:
        cached = self._volumes.get(source.id)
        if cached is not None:
            self._volumes.move_to_end(source.id)
            return cached
        decoded = self._decode(self._read_source_bytes(source), source.name)
        if decoded.kind == "volume":
            self._volumes[source.id] = decoded
            while len(self._volumes) > VOLUME_CACHE_SIZE:
                self._volumes.popitem(last=False)
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
            prepared = prepare_source(decoded, self.task, self.image_size, slice_index)
        except ValueError as error:
            raise BadRequest(f"{source.name}: {error}") from error
        return ImageData(prepared.pixels, encode_png(prepared.display), prepared.geometry.model_dump(mode="json"))

    def _register_data_file(self, relative: str, slice_index: int | None) -> UploadResult:
        path = self.resolve_data_path(relative)
        relative = path.relative_to(self.data_root or path.parent).as_posix()
        source_id = "data-" + hashlib.sha256(relative.encode()).hexdigest()[:12]
        source = self.store.get_source(source_id)
        decoded = None
        if source is None:
            if not has_supported_suffix(path.name):
                raise UnsupportedMediaType(
                    f"{relative}: unsupported file type (expected PNG, JPEG, TIFF, NIfTI or DICOM)"
                )
            decoded = self._decode(path.read_bytes(), relative)
            candidate = SourceRecord(source_id, relative, "data", relative, decoded.kind, decoded.num_slices)
            slice_index = self._checked_slice(candidate, slice_index)  # refuse before anything is stored
            data = self._prepare(candidate, decoded, slice_index)
            source = self.store.add_source(candidate)
            image = self._image_from_source(source, decoded, slice_index, data)
            return UploadResult(source=self._source_info(source), image=self._image_info(image))
        image = self._image_from_source(source, decoded, slice_index)
        return UploadResult(source=self._source_info(source), image=self._image_info(image))

    # ================================================================== info views

    def _source_info(self, source: SourceRecord) -> SourceInfo:
        return SourceInfo(
            id=source.id,
            name=source.name,
            origin="upload" if source.origin == "upload" else "data",
            kind="volume" if source.kind == "volume" else "image",
            num_slices=source.num_slices,
        )

    def _image_info(self, record: ImageRecord) -> ImageInfo:
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
        )

    def _require_image(self, image_id: str) -> ImageRecord:
        record = self.store.get_image(image_id)
        if record is None:
            raise NotFound(f"unknown image {image_id!r}")
        return record

    def list_images(self) -> list[ImageInfo]:
        """Every image in list order with status and click count."""
        return [self._image_info(record) for record in self.store.list_images()]

    def get_image(self, image_id: str) -> ImageInfo:
        """One image.

        Raises:
            NotFound: Unknown image.
        """
        return self._image_info(self._require_image(image_id))

    def image_data(self, image_id: str) -> ImageData:
        """The image's stored pixels, decoding a data-folder file on first use.

        Raises:
            NotFound: Unknown image, or its file vanished.
            BadRequest: Its file can no longer be decoded.
        """
        record = self._require_image(image_id)
        data = self.store.get_image_data(image_id)
        if data is not None:
            return data
        if record.source_id is None:
            raise NotFound(f"image {image_id!r} has no pixels")
        source = self.store.get_source(record.source_id)
        if source is None:
            raise NotFound(f"the source of image {image_id!r} is missing")
        with self._lock:
            self.store.set_image_data(image_id, self._prepare(source, None, record.slice_index))
        data = self.store.get_image_data(image_id)
        assert data is not None
        return data

    def display_png(self, image_id: str) -> bytes:
        """The 8-bit PNG the page shows (same geometry as the model input)."""
        return self.image_data(image_id).display_png

    def next_image(self, after: str | None = None) -> ImageInfo | None:
        """The first image after ``after`` in list order (wrapping around) that is not done; ``None`` if all are."""
        images = self.store.list_images()
        start = 0
        if after is not None:
            positions = [index for index, record in enumerate(images) if record.id == after]
            start = positions[0] + 1 if positions else 0
        for record in images[start:] + images[:start]:
            if record.status != "done" and record.id != after:
                return self._image_info(record)
        return None

    # ================================================================== uploads and volumes

    def upload(self, payload: bytes | bytearray, filename: str, slice_index: int | None = None) -> UploadResult:
        """Store an uploaded file and make an image of it (volumes: of ``slice_index``, default the middle).

        The same content uploaded twice is stored once.

        Raises:
            PayloadTooLarge: Above ``max_upload_bytes``.
            UnsupportedMediaType: Not PNG, JPEG, TIFF, NIfTI or DICOM.
            BadRequest: Corrupt content, or a slice outside the volume.
        """
        if len(payload) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"upload of {len(payload)} bytes exceeds the limit of {self.settings.max_upload_bytes} bytes"
            )
        name = Path(filename.replace("\\", "/")).name or "upload"
        decoded = self._decode(payload, name)
        digest = hashlib.sha256(payload).hexdigest()
        source_id = f"up-{digest[:16]}"
        with self._lock:
            source = self.store.get_source(source_id)
            candidate = source or SourceRecord(source_id, name, "upload", "", decoded.kind, decoded.num_slices)
            # Everything is checked (slice, preprocessing) before a file or a row is stored.
            slice_index = self._checked_slice(candidate, slice_index)
            existing = self.store.find_image(source_id, slice_index) if source is not None else None
            data = self._prepare(candidate, decoded, slice_index) if existing is None else None
            warning = task_fit_warning(decoded, self.task)
            if source is None:
                suffix = ".nii.gz" if decoded.format == "nifti" and payload[:2] == b"\x1f\x8b" else ""
                suffix = (
                    suffix
                    or {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "nifti": ".nii", "dicom": ".dcm"}[decoded.format]
                )
                relative = f"{UPLOADS_FOLDER}/{digest[:16]}{suffix}"
                atomic_write_bytes(self.store.folder / relative, bytes(payload))
                source = self.store.add_source(
                    SourceRecord(source_id, name, "upload", relative, decoded.kind, decoded.num_slices)
                )
            if decoded.kind == "volume":
                self._volumes[source_id] = decoded
                while len(self._volumes) > VOLUME_CACHE_SIZE:
                    self._volumes.popitem(last=False)
            image = existing or self._image_from_source(source, decoded, slice_index, data)
        return UploadResult(source=self._source_info(source), image=self._image_info(image), warning=warning)

    def add_data_image(self, relative: str, slice_index: int | None = None) -> UploadResult:
        """Register a file of the data folder (and slice) as an image.

        Raises:
            BadRequest: Path outside the data folder, or no data folder.
            NotFound: No such file.
        """
        with self._lock:
            return self._register_data_file(relative, slice_index)

    def data_files(self) -> list[str]:
        """Readable files of the data folder, relative paths (empty without a data folder)."""
        if self.data_root is None:
            return []
        return [
            path.relative_to(self.data_root).as_posix()
            for path in sorted(self.data_root.rglob("*"))
            if path.is_file()
            and has_supported_suffix(path.name)
            and path.resolve().is_relative_to(self.data_root)
            and not path.name.startswith(".")
        ]

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
        return self._source_info(self._require_source(source_id))

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
        with self._lock:
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
        with self._lock:
            decoded = self._decoded_source(source)
            return self._image_info(self._image_from_source(source, decoded, index))

    # ================================================================== sessions

    def _touch_client(self, client_id: str, image_id: str) -> None:
        previous = self._current.get(client_id)
        if previous is not None and previous != image_id and previous in self._live:
            live = self._live[previous]
            if live.client_id == client_id:
                live.client_id = None
        self._current[client_id] = image_id

    def _claim(self, live: LiveImage, client_id: str, take_over: bool = False) -> None:
        now = time.monotonic()
        holder = live.client_id
        if (
            not take_over
            and holder is not None
            and holder != client_id
            and now - live.last_seen < self.settings.claim_timeout_s
            and self._current.get(holder) == live.image_id
        ):
            record = self.store.get_image(live.image_id)
            name = record.name if record is not None else "this image"
            minutes = max(1, round((self.settings.claim_timeout_s - (now - live.last_seen)) / 60))
            raise Conflict(
                f"“{name}” is open in another browser session (another tab or window); "
                f"it is free again when that tab closes or moves on, or in about {minutes} min. "
                "You can also take it over here (take_over=true)."
            )
        live.client_id = client_id
        live.last_seen = now
        self._touch_client(client_id, live.image_id)
        self._live.move_to_end(live.image_id)

    def is_source_domain(self, record: ImageRecord) -> bool:
        """Whether the image's name matches a ``--source-domain`` pattern (served by the episodic base model)."""
        return any(fnmatch.fnmatchcase(record.name, pattern) for pattern in self.settings.source_domains)

    def _served_by_source_model(self, record: ImageRecord) -> bool:
        return self.is_source_domain(record)

    def source_copy(self, image_id: str) -> EpisodicModel | None:
        """The copy of the base model that serves an open source-domain image, if any."""
        return self.domains.in_progress(image_id)

    def _on_source_model(self, session: InteractiveSession) -> bool:
        return session.state is not self.state

    def _new_session(self, record: ImageRecord) -> InteractiveSession:
        """A session on the model the domain router gives the image: the shared model, or for a source-domain
        image a copy of the base model that starts from the base weights."""
        domain = SOURCE_DOMAIN if self._served_by_source_model(record) else SHARED_DOMAIN
        self.domains.release(record.id)  # a source image opened anew starts from the base weights again
        session = InteractiveSession(self.domains.state(domain, record.id), click_sigma=self.click_sigma)
        if domain == SOURCE_DOMAIN:
            session.adapt = self.adaptation  # the copy learns only while adaptation is on
        return session

    def _drop_source_copy(self, image_id: str) -> None:
        self.domains.release(image_id)

    def _source_copy_safety_events(self) -> list[SafetyEvent]:
        """The guard events of the source-domain copies."""
        events = [event for monitor in self.domains.episodic_monitors() for event in monitor.events]
        return events[-SAFETY_EVENTS_SHOWN:]

    def _mask_version(self, session: InteractiveSession) -> int | None:
        """The model version recorded for the session's current mask (the base version on the source model)."""
        if not session.versions:
            return None
        return self.base_version if self._on_source_model(session) else int(session.versions[-1])

    def _live_image(self, image_id: str, client_id: str, relabel: bool = False, take_over: bool = False) -> LiveImage:
        """The in-memory session of an image for ``client_id``: existing, replayed from the store, or new."""
        record = self._require_image(image_id)
        live = self._live.get(image_id)
        if live is not None:
            self._claim(live, client_id, take_over)
            if not (relabel and live.session.finished):
                return live
            del self._live[image_id]
        stored = self.store.latest_session(image_id)
        if stored is not None and stored.status == "done" and not relabel:
            raise Conflict(
                f"image {image_id!r} is finished; open it with relabel=true to label it again "
                "(the finished label is kept)"
            )
        pixels = self.image_data(image_id).pixels
        session = self._new_session(record)
        session.set_image(pixels, image_id)
        if stored is None or stored.status == "done":
            if self._on_source_model(session):
                strategy, version = ("mid" if session.adapt else "frozen"), self.base_version
            else:
                strategy, version = self._strategy().name, self.state.version
            stored = self.store.start_session(image_id, client_id, strategy, version)
            if relabel and record.status == "done":
                self.store.add_event("relabel", {"image_id": image_id, "session_id": stored.id}, client_id)
        else:
            clicks = self.store.active_clicks(stored.id)
            versions = [stored.model_version_start, *(click.model_version for click in clicks)]
            replayed_updates = [
                click.update_s > 0 and click.model_version != versions[index] for index, click in enumerate(clicks)
            ]
            if clicks:
                adapt = session.adapt
                session.adapt = False  # the restored weights already contain these clicks' updates
                try:
                    for click in clicks:
                        session.add_click(Click(click.row, click.col, click.label))
                finally:
                    session.adapt = adapt
        live = LiveImage(image_id, stored.id, session, client_id, time.monotonic())
        if session.clicks:
            live.replayed_updates = replayed_updates
            live.corrections = self.store.active_corrections(stored.id)
        self._live[image_id] = live
        self._claim(live, client_id)
        while len(self._live) > self.settings.max_live_sessions:
            oldest_id, oldest = next(iter(self._live.items()))
            if oldest_id == image_id:
                break
            self._live.pop(oldest_id)
            self._drop_source_copy(oldest_id)
            if oldest.client_id is not None and self._current.get(oldest.client_id) == oldest_id:
                self._current.pop(oldest.client_id, None)
        return live

    def _live_with_clicks(self, image_id: str, client_id: str, action: str) -> LiveImage:
        """The live session of an image that has clicks to act on; refuses before anything is stored.

        Raises:
            NotFound: Unknown image.
            Conflict: The image is finished or has no click.
        """
        self._require_image(image_id)
        live = self._live.get(image_id)
        if live is None:
            stored = self.store.latest_session(image_id)
            if stored is not None and stored.status == "done":
                raise Conflict(
                    f"cannot {action} image {image_id!r}: it is already finished and its label is kept "
                    "(open it with relabel=true to label it again)"
                )
            if stored is None or not self.store.active_clicks(stored.id):
                raise Conflict(f"cannot {action} image {image_id!r}: it has no click")
        live = self._live_image(image_id, client_id)
        if live.session.finished:
            raise Conflict(f"cannot {action} image {image_id!r}: it is already finished")
        if not live.session.clicks:
            raise Conflict(f"cannot {action} image {image_id!r}: it has no click")
        return live

    def open_image(self, image_id: str, client_id: str, relabel: bool = False, take_over: bool = False) -> SessionView:
        """Make ``image_id`` the client's current image and return its state.

        A finished image opens read-only unless ``relabel`` is true (then a new session starts and the
        earlier final mask stays in the datastore).

        Raises:
            NotFound: Unknown image.
            Conflict: The image is being labelled by another client (unless ``take_over``).
        """
        with self._lock:
            record = self._require_image(image_id)
            stored = self.store.latest_session(image_id)
            if stored is not None and stored.status == "done" and not relabel:
                live = self._live.get(image_id)
                if live is not None:
                    self._claim(live, client_id, take_over)
                else:
                    self._touch_client(client_id, image_id)
                return self._done_view(record)
            live = self._live_image(image_id, client_id, relabel, take_over)
            if take_over:
                live.message = "taken over from the other tab; its clicks are here"
            view = self._view(live)
            live.message = ""
            return view

    def release(self, image_id: str, client_id: str) -> None:
        """The client gives the image up (its tab closed): another tab may open it at once. No-op otherwise."""
        with self._lock:
            live = self._live.get(image_id)
            if live is not None and live.client_id == client_id:
                live.client_id = None
            if self._current.get(client_id) == image_id:
                del self._current[client_id]

    def add_correction(
        self, image_id: str, client_id: str, points: list[tuple[int, int]], radius: float, label: int | str
    ) -> SessionView:
        """Paint a brush (class) or eraser (background) stroke over the current mask: a final touch-up.

        Strokes are stored as corrections, stay on top of later predictions, are undone by undo (the latest
        action first) and removed by reset; the finish update learns from the edited mask.

        Raises:
            NotFound: Unknown image.
            BadRequest: A point outside the image or an unknown class (nothing is stored).
            Conflict: No click yet (no mask to touch up), finished, or open in another client.
        """
        with self._lock:
            self._require_image(image_id)
            index = self._class_index(label)
            pixels = self.image_data(image_id).pixels
            height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
            for row, col in points:
                if not (0 <= row < height and 0 <= col < width):
                    raise BadRequest(f"stroke point ({row}, {col}) is outside the image ({height} × {width})")
            live = self._live_with_clicks(image_id, client_id, "paint on")
            correction = self.store.add_correction(
                CorrectionRecord(0, live.session_id, index, float(radius), list(points), len(live.session.clicks))
            )
            live.corrections.append(correction)
            live.message = ""
            return self._view(live)

    def _edited_mask(self, live: LiveImage) -> np.ndarray | None:
        """The latest prediction with the brush and eraser strokes painted over it."""
        mask = live.session.prediction
        if mask is None:
            return None
        for stroke in live.corrections:
            mask = paint_stroke(mask, stroke.points, stroke.radius, stroke.label)
        return mask

    def session_view(self, image_id: str, client_id: str) -> SessionView:
        """The image's state as this client would see it, without opening it."""
        with self._lock:
            record = self._require_image(image_id)
            live = self._live.get(image_id)
            if live is not None:
                return self._view(live)
            stored = self.store.latest_session(image_id)
            if stored is not None and stored.status == "done":
                return self._done_view(record)
            clicks = self.store.active_clicks(stored.id) if stored is not None else []
            return SessionView(
                image=self._image_info(record),
                session_id=stored.id if stored is not None else None,
                state=record.status,
                clicks=[self._click_out(click) for click in clicks],
                model_version=self.state.version,
                source_domain=self._served_by_source_model(record),
                message="open the image to see its mask",
            )

    def _class_index(self, label: int | str) -> int:
        if isinstance(label, str):
            if label.isascii() and label.isdigit() and len(label) <= 3:
                label = int(label)
            else:
                try:
                    return self.task.class_index(label)
                except ValueError as error:
                    raise BadRequest(str(error)) from error
        if not 0 <= label < self.task.num_classes:
            raise BadRequest(
                f"unknown class {label} for task {self.task.name!r}; classes: "
                + ", ".join(f"{index} {name}" for index, name in enumerate(self.task.class_names))
            )
        return label

    def add_click(self, image_id: str, client_id: str, row: int, col: int, label: int | str) -> SessionView:
        """Add a click to the client's session of an image (opening it if needed) and return the new mask.

        Raises:
            NotFound: Unknown image.
            BadRequest: Click outside the image or unknown class (nothing is stored).
            Conflict: Image finished, or open in another client.
        """
        with self._lock:
            self._require_image(image_id)
            pixels = self.image_data(image_id).pixels
            click = Click(int(row), int(col), self._class_index(label))
            try:  # validate before anything is opened or stored
                click.validate((int(pixels.shape[-2]), int(pixels.shape[-1])), self.task.num_classes)
            except ValueError as error:
                raise BadRequest(str(error)) from error
            live = self._live_image(image_id, client_id)
            session = live.session
            if session.finished:
                raise Conflict(f"image {image_id!r} is finished; open it with relabel=true to label it again")
            try:
                session.add_click(click)
            except ValueError as error:
                raise BadRequest(str(error)) from error
            timing = session.timings[-1]
            first = len(session.clicks) == 1
            self.store.add_click(
                ClickRecord(
                    id=0,
                    session_id=live.session_id,
                    row=click.row,
                    col=click.col,
                    label=click.label,
                    created="",
                    forward_s=timing.forward_s,
                    update_s=timing.update_s,
                    model_version=self._mask_version(session) or 0,  # set: the click produced a mask
                ),
                original_mask=session.prediction if first else None,
            )
            live.message = ""
            self._autosave()
            return self._view(live)

    def undo(self, image_id: str, client_id: str) -> SessionView:
        """Remove the last click (and its weight update, when nothing else updated the model since).

        Raises:
            NotFound: Unknown image.
            Conflict: No click to undo, image finished, or open in another client.
        """
        with self._lock:
            live = self._live_with_clicks(image_id, client_id, "undo a click of")
            if live.corrections and live.corrections[-1].after_clicks >= len(live.session.clicks):
                live.corrections.pop()  # the latest action was a stroke: undo that
                self.store.remove_corrections(live.session_id, "undo", last_only=True)
                live.message = "brush stroke undone"
                return self._view(live)
            position = len(live.session.clicks)  # of the click being undone, counting from 1
            live.session.undo()
            self.store.remove_last_click(live.session_id)
            outcome = live.session.last_undo
            live.message = outcome.reason if outcome is not None else ""
            if position <= len(live.replayed_updates):  # a click replayed after a restart
                live.message = (
                    "the click changed the weights before the server restarted; that update cannot be taken back "
                    "any more, so the weights are kept"
                    if live.replayed_updates[position - 1]
                    else "the click did not change the weights"
                )
                del live.replayed_updates[position - 1 :]
            self._autosave()
            view = self._view(live)
            view.weights_restored = outcome.restored_weights if outcome is not None else None
            return view

    def reset(self, image_id: str, client_id: str) -> SessionView:
        """Remove every click of the image (weights untouched).

        Raises:
            NotFound: Unknown image.
            Conflict: Image finished, or open in another client.
        """
        with self._lock:
            live = self._live_with_clicks(image_id, client_id, "reset")
            live.session.reset()
            self.store.remove_all_clicks(live.session_id)
            self.store.remove_corrections(live.session_id, "reset", last_only=False)
            live.corrections.clear()
            live.message = "all clicks removed; the model's weights are unchanged"
            return self._view(live)

    def finish(self, image_id: str, client_id: str) -> SessionView:
        """Accept the current mask as the image's label and run the after-image update.

        Stores the ``final`` mask, saves the adapted weights as a new model version when they changed.

        Raises:
            NotFound: Unknown image.
            Conflict: Already finished (the stored label is never overwritten), no click yet, or open in
                another client.
        """
        with self._lock:
            live = self._live_with_clicks(image_id, client_id, "finish")
            version_before = self.state.version
            edited = self._edited_mask(live) if live.corrections else None  # the touched-up mask is the label
            # The session's model hears the finish: the safety layer, and for a source image its reset.
            final = live.session.finish(edited)
            if self._on_source_model(live.session):
                self.store.finish_session(live.session_id, final, self.state.version)
                live.message = (
                    "finished; a source-domain image: its clicks adapted its own copy of the base model, now gone; "
                    f"the shared model stays at version {self.state.version}"
                )
                view = self._view(live)
                del self._live[image_id]
                return view
            version = self.state.version
            self.store.finish_session(live.session_id, final, version)
            if self.store.get_model_version(version) is None:
                self._save_version("image", image_id=image_id)
            self._autosave()
            live.message = (
                f"finished; model updated to version {version}"
                if version != version_before
                else "finished; the model did not change"
            )
            view = self._view(live)
            del self._live[image_id]
            return view

    def _click_out(self, click: ClickRecord) -> ClickOut:
        return ClickOut(
            row=click.row,
            col=click.col,
            label=click.label,
            class_name=self.task.class_names[click.label],
            model_version=click.model_version,
            forward_s=round(click.forward_s, 4),
            update_s=round(click.update_s, 4),
        )

    @staticmethod
    def _overlay(mask: np.ndarray | None) -> str | None:
        if mask is None:
            return None
        return "data:image/png;base64," + base64.b64encode(overlay_png(mask)).decode("ascii")

    def _view(self, live: LiveImage) -> SessionView:
        record = self._require_image(live.image_id)
        session = live.session
        clicks = [self._click_out(click) for click in self.store.active_clicks(live.session_id)]
        if session.finished:
            return self._done_view(record, message=live.message)
        timings = session.timings
        return SessionView(
            image=self._image_info(record),
            session_id=live.session_id,
            state=record.status,
            clicks=clicks,
            mask_overlay=self._overlay(self._edited_mask(live)),
            mask_model_version=self._mask_version(session),
            corrections=len(live.corrections),
            model_version=self.state.version,
            source_domain=self._on_source_model(session),
            last_click_s=round(timings[-1].total_s, 4) if timings else None,
            message=live.message,
        )

    def _done_view(self, record: ImageRecord, message: str = "") -> SessionView:
        stored = self.store.latest_session(record.id)
        final = self.store.get_mask(record.id, "final")
        clicks = self.store.active_clicks(stored.id) if stored is not None else []
        return SessionView(
            image=self._image_info(record),
            session_id=stored.id if stored is not None else None,
            state="done",
            clicks=[self._click_out(click) for click in clicks],
            mask_overlay=self._overlay(final.mask if final is not None else None),
            mask_model_version=clicks[-1].model_version if clicks else None,
            model_version=self.state.version,
            source_domain=self._served_by_source_model(record),
            message=message or "finished",
        )

    # ================================================================== masks and export

    def mask(self, image_id: str, tag: MaskChoice = "current") -> tuple[np.ndarray, int]:
        """A mask of the image in preprocessed geometry and the model version that produced it.

        ``current``: the live prediction (or the final mask of a finished image); ``original``: the model's
        first-click mask; ``final``: the user's finished mask.

        Raises:
            NotFound: Unknown image, or no such mask yet.
        """
        with self._lock:
            self._require_image(image_id)
            live = self._live.get(image_id)
            if tag == "current" and live is not None and live.session.prediction is not None:
                edited = self._edited_mask(live)
                assert edited is not None
                return edited, self._mask_version(live.session) or 0
            if tag == "current":
                stored = self.store.latest_session(image_id)
                tag = "final" if stored is not None and stored.status == "done" else "original"
                if tag == "original":
                    raise NotFound(f"image {image_id!r} has no mask yet; open it and click")
            found = self.store.get_mask(image_id, tag)
            if found is None:
                raise NotFound(f"image {image_id!r} has no {tag} mask")
            return found.mask, found.model_version

    def export(self, image_id: str, tag: MaskChoice = "current", file_format: str = "png") -> tuple[bytes, str, str]:
        """The mask in the source image's geometry as a file.

        Args:
            image_id: The image.
            tag: Which mask (see :meth:`mask`).
            file_format: ``png`` (class indices, 8-bit grey, source size) or ``nifti`` (aligned with the source
                volume: its shape and affine, only the labelled slice filled).

        Returns:
            File bytes, media type, file name.

        Raises:
            NotFound: Unknown image or no mask.
            BadRequest: Unknown format.
        """
        if file_format not in ("png", "nifti"):
            raise BadRequest(f"unknown export format {file_format!r}; use 'png' or 'nifti'")
        mask, _version = self.mask(image_id, tag)
        geometry = Geometry.model_validate(self.image_data(image_id).geometry)
        stem = _slug(self._require_image(image_id).name.rsplit(".", 1)[0])
        if file_format == "png":
            return encode_png(self._mask_at_source(image_id, tag, mask, geometry)), "image/png", f"{stem}_mask.png"
        return mask_to_nifti(mask, geometry), "application/gzip", f"{stem}_mask.nii.gz"

    def _mask_at_source(self, image_id: str, tag: MaskChoice, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
        """The mask at the source's size with smooth edges: the live logits resampled before the argmax when the
        mask is the open session's prediction, else the stored class map's one-hot (see ``data.prepare``)."""
        live = self._live.get(image_id)
        logits = live.session.logits if live is not None and tag == "current" else None
        if logits is not None and live is not None and live.session.prediction is mask:
            return logits_to_source(logits[0], geometry).argmax(dim=0).cpu().numpy().astype(np.uint8)
        return class_map_to_source(mask, geometry, self.task.num_classes)

    def chart(self) -> list[ChartPoint]:
        """Clicks needed per finished image, in order of finishing (the learning curve the page draws)."""
        return [
            ChartPoint(
                image_id=item.image_id,
                name=item.name,
                clicks=item.clicks,
                model_version=item.model_version,
                finished=item.finished,
            )
            for item in self.store.finished_images()
        ]

    # ================================================================== the shared model

    def _checkpoint_meta(self, version: int, note: str) -> CheckpointMeta:
        latest = self.store.latest_model_version()
        return self.base_meta.model_copy(
            update={
                "version": version,
                "parent_sha256": latest.sha256 if latest is not None else None,
                "created": utc_now(),
                "notes": note,
            }
        )

    def _save_version(
        self, kind: str, image_id: str | None = None, parent: int | None = None, note: str = ""
    ) -> ModelVersionRecord:
        """Save the current weights as ``models/v<N>.pt`` (atomically) and record them."""
        with self._lock, self.state.lock:
            version = self.state.version
            existing = self.store.get_model_version(version)
            if existing is not None:
                return existing
            strategy = self.state.strategy.name
            note = note or f"adapted online by clickadapt serve with strategy {strategy!r}"
            relative = f"{MODELS_FOLDER}/v{version}.pt"
            latest = self.store.latest_model_version()
            sha = save_checkpoint(self.store.folder / relative, self.state.model, self._checkpoint_meta(version, note))
            return self.store.add_model_version(
                ModelVersionRecord(
                    version=version,
                    path=relative,
                    sha256=sha,
                    kind=kind,
                    parent_version=parent if parent is not None else (latest.version if latest is not None else None),
                    image_id=image_id,
                    strategy=strategy,
                    created=utc_now(),
                    note=note,
                )
            )

    def _autosave(self) -> None:
        """Save the weights after a change when ``autosave_every_click`` is on (restart resumes from them)."""
        if not self.settings.autosave_every_click or self.state.version == self._autosaved_version:
            return
        version = self.state.version
        path = self.store.folder / MODELS_FOLDER / AUTOSAVE_NAME
        save_checkpoint(path, self.state.model, self._checkpoint_meta(version, "autosave between saved versions"))
        self.store.set_meta("autosave_version", str(version))
        self._autosaved_version = version

    def model_info(self) -> ModelInfo:
        """Current version, adaptation settings and the saved versions."""
        versions = self.store.model_versions()
        return ModelInfo(
            task=self.task.name,
            class_names=list(self.task.class_names),
            version=self.state.version,
            saved_version=versions[-1].version if versions else self.state.version,
            strategy=self.strategy_name,
            adaptation=self.adaptation,
            strategies=[name for name in STRATEGY_NAMES if name != "frozen"],
            versions=[
                ModelVersionInfo(
                    version=item.version,
                    kind=item.kind,
                    parent_version=item.parent_version,
                    image_id=item.image_id,
                    strategy=item.strategy,
                    created=item.created,
                    sha256=item.sha256,
                    note=item.note,
                )
                for item in versions
            ],
            safety_events=[
                SafetyEventOut(kind=event.kind, image_id=event.image_id, reason=event.reason, version=event.version)
                for event in self.safety.events[-SAFETY_EVENTS_SHOWN:]
            ],
            source_copy_events=[
                SafetyEventOut(kind=event.kind, image_id=event.image_id, reason=event.reason, version=event.version)
                for event in self._source_copy_safety_events()
            ],
            source_sentinel=self.safety.sentinel_source_score is not None,
            source_rehearsal=self.safety.rehearsing,
            source_domains=list(self.settings.source_domains),
        )

    def set_model_settings(
        self, strategy: str | None = None, adaptation: bool | None = None, client_id: str | None = None
    ) -> ModelInfo:
        """Switch the adaptation strategy and/or turn adaptation on or off (weights and version unchanged).

        Raises:
            BadRequest: Unknown strategy.
        """
        with self._lock:
            if strategy is not None and (strategy not in STRATEGIES or strategy == "frozen"):
                known = [name for name in STRATEGY_NAMES if name != "frozen"]
                raise BadRequest(f"unknown adaptation strategy {strategy!r}; known: {known} (or adaptation off)")
            new_strategy = self.strategy_name if strategy is None else strategy
            new_adaptation = self.adaptation if adaptation is None else adaptation
            changes: dict[str, object] = {}
            if new_strategy != self.strategy_name:
                changes["strategy"] = [self.strategy_name, new_strategy]
            if new_adaptation != self.adaptation:
                changes["adaptation"] = [self.adaptation, new_adaptation]
            if changes:
                try:
                    self.state.set_strategy(self._strategy(new_strategy, new_adaptation))
                except ValueError as error:
                    self._strategies.pop(new_strategy, None)
                    raise BadRequest(f"cannot use strategy {new_strategy!r} with this model: {error}") from error
                self.strategy_name, self.adaptation = new_strategy, new_adaptation
                for live in self._live.values():  # open source-domain images follow the on/off switch
                    if self._on_source_model(live.session):
                        live.session.adapt = new_adaptation
                self.store.set_meta("strategy", new_strategy)
                self.store.set_meta("adaptation", "1" if new_adaptation else "0")
                self.store.add_event("model_settings", changes, client_id)
            return self.model_info()

    def save_version(self, client_id: str | None = None) -> ModelVersionInfo:
        """Save the current weights as a model version now (no-op if this version is saved already)."""
        with self._lock:
            record = self._save_version("manual")
            return next(item for item in self.model_info().versions if item.version == record.version)

    def rollback(self, version: int, client_id: str | None = None) -> ModelInfo:
        """Load a saved version into the shared model; recorded as a new version (history is kept).

        The optimizer state of the strategies is reset (their moments belong to the later weights).

        Raises:
            NotFound: Unknown version.
            Conflict: Its checkpoint file is corrupt.
        """
        with self._lock:
            record = self.store.get_model_version(version)
            if record is None:
                known = [item.version for item in self.store.model_versions()]
                raise NotFound(f"unknown model version {version}; saved versions: {known}")
            try:
                loaded = load_checkpoint(self.store.folder / record.path, self.settings.device)
            except CheckpointError as error:
                raise Conflict(f"cannot roll back to version {version}: {error}") from error
            with self.state.lock:
                self._strategies.clear()
                self.state.set_strategy(self._strategy())
                self.state.load_weights(loaded.model.state_dict())
                self._save_version("rollback", parent=version, note=f"rollback to version {version}")
            self._autosave()
            self.store.add_event("rollback", {"to_version": version, "new_version": self.state.version}, client_id)
            return self.model_info()

    def close(self) -> None:
        """Close the datastore."""
        self.store.close()
