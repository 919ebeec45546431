"""The task layer of the server, in three parts that the HTTP routers call directly.

- :class:`~clickadapt.server.service.catalogue.ImageCatalogue` — the images: demo or data-folder files,
  uploads, volumes and their slices, prepared pixels and geometry, task-fit warnings.
- :class:`~clickadapt.server.service.registry.ModelRegistry` — the shared adapting model: versions, rollback,
  autosave, adaptation settings, the safety layer and the source-domain copies (one domain router).
- :class:`~clickadapt.server.service.sessions.SessionManager` — the labelling sessions: open, claim, release,
  take over, clicks, undo, reset, brush strokes, finish, masks and export.

:class:`AnnotationService` only builds the three on one datastore and one lock.

**Lock discipline.** One re-entrant *service lock* (``AnnotationService.lock``) is shared by the three parts.
Every public method that touches a session, the model's weights or the model settings, or that writes images
or sources to the store, holds it for its whole run; so clicks, undos, finishes, rollbacks and setting changes
of several clients never interleave, and each answer carries the model version that produced its mask. The
model state's own lock (:attr:`ModelState.lock`) is only ever taken *inside* the service lock (saving a
version, rolling back), never the other way round, so the two cannot deadlock. The autosave thread takes the
model state's lock alone (to copy the weights) and the datastore's own, never the service lock. Read-only
listings (images, sources, versions, the chart) read committed datastore rows without the service lock. A
part never calls another part's private methods; it goes through their public ones, which take the same
(re-entrant) lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from clickadapt.data.sample import Sample
from clickadapt.paths import resolve_model_spec
from clickadapt.server.datastore import Datastore
from clickadapt.server.service.catalogue import ImageCatalogue, check_data_root
from clickadapt.server.service.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    normalise_client_id,
)
from clickadapt.server.service.live import LiveImage
from clickadapt.server.service.registry import ModelRegistry
from clickadapt.server.service.sessions import SessionManager
from clickadapt.server.service.views import MaskChoice
from clickadapt.server.settings import ServerSettings

__all__ = [
    "AnnotationService",
    "BadRequest",
    "Conflict",
    "ImageCatalogue",
    "LiveImage",
    "MaskChoice",
    "ModelRegistry",
    "NotFound",
    "PayloadTooLarge",
    "ServiceError",
    "SessionManager",
    "UnsupportedMediaType",
    "normalise_client_id",
]


class AnnotationService:
    """The three parts of the server's task layer on one datastore and one service lock.

    Args:
        settings: Server settings (store, data folder, model, strategy…).
        samples: Pre-made samples to serve instead of the data folder or the demo images (tests, embedding).

    Attributes:
        settings: The settings.
        store: The datastore.
        lock: The service lock (see the module's lock discipline).
        models: The model registry.
        catalogue: The image catalogue.
        sessions: The session manager.

    Raises:
        FileNotFoundError: The model checkpoint or the data folder does not exist.
        ValueError: Unknown strategy, a store created with another base model, or a task mismatch.
        CheckpointError: A stored model version is corrupt.
    """

    def __init__(self, settings: ServerSettings, samples: Sequence[Sample] | None = None) -> None:
        self.settings = settings
        check_data_root(settings.data)  # fail before creating a store for a missing data folder…
        resolve_model_spec(settings.model)  # …or a missing model
        self.store = Datastore(settings.store)
        self.lock = threading.RLock()
        self.models = ModelRegistry(settings, self.store, self.lock)
        self.catalogue = ImageCatalogue(
            settings,
            self.store,
            self.models.task,
            self.models.image_size,
            self.lock,
            samples,
            self.models.base_meta.preprocessing.clip_percentiles,
        )
        self.sessions = SessionManager(settings, self.store, self.catalogue, self.models, self.lock)

    def close(self) -> None:
        """Write the pending autosave, then close the datastore."""
        self.models.close()
        self.store.close()
