"""The model registry: the shared adapting model, its saved versions, rollback and autosave, the safety layer
and the source-domain copies.

- **Versions.** After every finished image (and on demand) the weights are saved as a new model version
  ``<store>/models/v<N>.pt``; a rollback loads a saved version and records it as a new one (history is kept).
  With ``autosave_every_click`` the weights are also saved after every click that changed them
  (``models/autosave.pt``), so a restart resumes with Mid-Interaction updates; without it a restart resumes
  from the last saved version. The autosave is written by a background thread
  (:class:`~clickadapt.server.service.autosave.AutosaveWriter`) after the click's answer has left; closing
  the registry (server shutdown) waits for it.
- **Safety.** The safety layer (update guard, snapshots, drift monitor with rollback; the source sentinel and
  rehearsal when labelled source images are given) is attached to the shared model state at start-up.
- **Source domain.** One router, :class:`~clickadapt.adaptation.domains.DomainScopedModels`, serves every image:
  the shared model, or for an image whose name matches ``--source-domain`` an
  :class:`~clickadapt.adaptation.domains.EpisodicModel` — a guarded copy of the base model that learns from that
  image's clicks only and is reset when the image is finished or released. Copies never change the shared
  model; their masks are recorded with the base model's version.

Every public method that changes the model or the store takes the service lock given at construction (see
:mod:`clickadapt.server.service`), then the model state's own lock.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from clickadapt.adaptation.domains import DomainScopedModels, EpisodicModel
from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyEvent, SafetyMonitor, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import STRATEGIES, STRATEGY_NAMES, AdaptationStrategy, make_strategy
from clickadapt.data.registry import DatasetConfig, load_samples
from clickadapt.models.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.paths import resolve_model_spec
from clickadapt.server.datastore import Datastore, ModelVersionRecord, utc_now
from clickadapt.server.schemas import ModelInfo, ModelVersionInfo, SafetyEventOut
from clickadapt.server.service.autosave import AutosaveWriter
from clickadapt.server.service.errors import BadRequest, Conflict, NotFound
from clickadapt.server.settings import ServerSettings
from clickadapt.tasks import TaskSpec

logger = logging.getLogger(__name__)

SAFETY_EVENTS_SHOWN = 50
"""The safety layer's latest events returned with the model information."""
AUTOSAVE_NAME = "autosave.pt"
MODELS_FOLDER = "models"
SOURCE_DOMAIN = "source"
"""The router's domain of images matching ``--source-domain`` (each served by its own episodic copy)."""
SHARED_DOMAIN = "shared"
"""The router's domain of every other image (the shared, adapting model)."""

AdaptationListener = Callable[[bool], None]
"""Called with the new on/off value when adaptation is switched on or off."""


class ModelRegistry:
    """The shared model and everything about its weights: versions, rollback, autosave, safety, source copies.

    Args:
        settings: Server settings (model, device, strategy, adaptation, sentinel, rehearsal, source domains…).
        store: The datastore (model versions and settings are recorded there).
        lock: The service lock shared by every part (see :mod:`clickadapt.server.service`).

    Raises:
        FileNotFoundError: The model checkpoint, or a sentinel or rehearsal folder, does not exist.
        ValueError: Unknown strategy, or a store created with another base model.
        CheckpointError: A stored model version is corrupt.
    """

    def __init__(self, settings: ServerSettings, store: Datastore, lock: threading.RLock) -> None:
        self.settings = settings
        self.store = store
        self.lock = lock
        self._strategies: dict[str, AdaptationStrategy] = {}
        self._adaptation_listeners: list[AdaptationListener] = []
        base_path = resolve_model_spec(settings.model)
        base = load_checkpoint(base_path, settings.device)
        self.task: TaskSpec = base.task
        """The model's task (classes, channels)."""
        self.base_meta: CheckpointMeta = base.meta
        self.image_size: int = settings.image_size or base.meta.preprocessing.image_size(self.task.name)
        """Side of the model's input grid."""
        self.click_sigma: float = base.meta.preprocessing.click_sigma
        """Width of the click maps the model was trained with."""
        self.base_version: int = base.meta.version
        """Version of the base model: the version recorded for every mask of a source-domain copy."""
        stored_base = store.get_meta("base_model_sha256")
        if stored_base is not None and stored_base != base.sha256:
            raise ValueError(
                f"store {store.folder} was started with another base model "
                f"({store.get_meta('base_model_path')}, sha256 {stored_base[:12]}…); "
                f"{base_path} has sha256 {base.sha256[:12]}…. Use another --store for another model."
            )
        saved = store.model_versions()
        self._saved_versions: set[int] = {record.version for record in saved}
        """The saved versions' numbers, kept in memory (read once here, updated by :meth:`record_version`) so
        that scheduling an autosave after a click does not query the datastore."""
        self._latest_saved: ModelVersionRecord | None = saved[-1] if saved else None
        """The latest saved version (the parent recorded with the next checkpoint)."""
        fresh = stored_base is None or not saved
        if fresh:
            if stored_base is not None:
                # The first start recorded the base model, then stopped (a wrong --sentinel folder, a crash)
                # before saving the initial version: nothing was labelled with this store yet, so start afresh.
                logger.warning(
                    "store %s records its base model but no saved model version (its first start stopped before "
                    "saving the initial version); starting from the base model %s",
                    store.folder,
                    base_path,
                )
            store.set_meta("base_model_sha256", base.sha256)
            store.set_meta("base_model_path", str(base_path))
            store.set_meta("task", self.task.name)
            model, version = base.model, base.meta.version
        else:
            model, version = self._resume_weights(saved[-1])
        strategy_name = self._initial_setting("strategy", settings.strategy)
        adaptation = self._initial_setting("adaptation", "1" if settings.adaptation else "0") == "1"
        if strategy_name not in STRATEGIES:
            raise ValueError(f"unknown adaptation strategy {strategy_name!r}; known: {list(STRATEGY_NAMES)}")
        self.strategy_name: str = strategy_name
        """The adaptation strategy chosen (in force while :attr:`adaptation` is on)."""
        self.adaptation: bool = adaptation
        """Whether the model adapts at all (off: the ``frozen`` strategy)."""
        self.state = ModelState(model, self.task, self.strategy(), settings.device, version=version)
        """The shared adapting model."""
        # Safety layer on by default: update guard, bounded snapshots, drift monitor with rollback (issue 7);
        # the source sentinel and the source rehearsal when labelled source images are given.
        self.safety: SafetyMonitor = attach_safety(
            self.state,
            sentinel_images=self._labelled_source_images(settings.sentinel, "sentinel"),
            rehearsal_images=self._labelled_source_images(settings.rehearsal, "rehearsal"),
            click_sigma=self.click_sigma,
        )
        # One router for every image: the shared model above, or for a source-domain image a guarded copy of
        # the base model that learns from that image only (an EpisodicModel, reset when it is finished).
        self.domains = DomainScopedModels(
            base.model,
            self.task,
            self.strategy_name,
            source_domains={SOURCE_DOMAIN},
            safety=SafetyConfig(),
            device=settings.device,
            source_mode="episodic",
            source_version=self.base_version,
            click_sigma=self.click_sigma,
        )
        self.domains.adopt(SHARED_DOMAIN, self.state, self.safety)
        self._autosave = AutosaveWriter(
            self.state,
            store.folder / MODELS_FOLDER / AUTOSAVE_NAME,
            make_meta=lambda saved: self._checkpoint_meta(saved, "autosave between saved versions"),
            on_saved=lambda saved: store.set_meta("autosave_version", str(saved)),
            saved_version=version,
        )
        if fresh:
            self.record_version("initial", note=f"base model {base_path.name}")

    # ================================================================== start-up

    def _resume_weights(self, latest: ModelVersionRecord) -> tuple[nn.Module, int]:
        """The weights of the latest saved version, or of the autosave when it is newer.

        Raises:
            CheckpointError: The latest saved version's checkpoint is corrupt.
        """
        model = load_checkpoint(self.store.folder / latest.path, self.settings.device).model
        version = latest.version
        autosave = self.store.folder / MODELS_FOLDER / AUTOSAVE_NAME
        autosave_version = self._recorded_autosave_version()
        if autosave_version is not None and autosave_version > version and autosave.is_file():
            try:
                model = load_checkpoint(autosave, self.settings.device).model
                version = autosave_version
                logger.info("resumed the weights of version %d from %s", version, autosave)
            except CheckpointError as error:
                logger.warning("ignoring the autosave: %s; resuming from version %d", error, version)
        return model, version

    def _recorded_autosave_version(self) -> int | None:
        """The version of the autosave file recorded in the datastore (meta ``autosave_version``); ``None`` when
        none is recorded, or when the record is not a version number (logged: the autosave is then ignored,
        as a corrupt autosave file is)."""
        recorded = self.store.get_meta("autosave_version")
        if recorded is None:
            return None
        try:
            return int(recorded)
        except ValueError:
            logger.warning(
                "ignoring the autosave: store %s records autosave_version %r, not a version number",
                self.store.folder,
                recorded,
            )
            return None

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

    def strategy(self, strategy_name: str | None = None, adaptation: bool | None = None) -> AdaptationStrategy:
        """The strategy object for a setting (default: the one in force; ``frozen`` while adaptation is off).

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

    # ================================================================== the domain router

    def is_source_domain(self, image_name: str) -> bool:
        """Whether an image of this name matches a ``--source-domain`` pattern (served by a copy of the base model)."""
        return any(fnmatch.fnmatchcase(image_name, pattern) for pattern in self.settings.source_domains)

    def new_session(self, image_id: str, image_name: str) -> InteractiveSession:
        """A session on the model the domain router gives the image: the shared model, or for a source-domain
        image a copy of the base model that starts from the base weights (a copy it had is given back first)."""
        domain = SOURCE_DOMAIN if self.is_source_domain(image_name) else SHARED_DOMAIN
        self.domains.release(image_id)  # a source image opened anew starts from the base weights again
        session = InteractiveSession(self.domains.state(domain, image_id), click_sigma=self.click_sigma)
        if domain == SOURCE_DOMAIN:
            session.adapt = self.adaptation  # the copy learns only while adaptation is on
        return session

    def release_copy(self, image_id: str) -> None:
        """Give back the source-domain copy of an image that leaves memory unfinished (no-op without one)."""
        self.domains.release(image_id)

    def source_copy(self, image_id: str) -> EpisodicModel | None:
        """The copy of the base model that serves an open source-domain image, if any."""
        return self.domains.in_progress(image_id)

    def on_source_model(self, session: InteractiveSession) -> bool:
        """Whether the session runs on a source-domain copy rather than the shared model."""
        return session.state is not self.state

    def mask_version(self, session: InteractiveSession) -> int | None:
        """The model version recorded for the session's current mask (the base version on a source copy)."""
        if not session.versions:
            return None
        return self.base_version if self.on_source_model(session) else int(session.versions[-1])

    def session_start(self, session: InteractiveSession) -> tuple[str, int]:
        """The strategy name and model version a new datastore session of ``session`` is recorded with."""
        if self.on_source_model(session):
            return ("mid" if session.adapt else "frozen"), self.base_version
        return self.strategy().name, self.state.version

    def add_adaptation_listener(self, listener: AdaptationListener) -> None:
        """Call ``listener(adaptation)`` whenever adaptation is switched on or off (e.g. to let open source-domain
        sessions follow the switch)."""
        self._adaptation_listeners.append(listener)

    def _source_copy_safety_events(self) -> list[SafetyEvent]:
        """The guard events of the source-domain copies."""
        events = [event for monitor in self.domains.episodic_monitors() for event in monitor.events]
        return events[-SAFETY_EVENTS_SHOWN:]

    # ================================================================== versions

    def _checkpoint_meta(self, version: int, note: str) -> CheckpointMeta:
        latest = self._latest_saved  # no datastore query: also called by the autosave thread
        return self.base_meta.model_copy(
            update={
                "version": version,
                "parent_sha256": latest.sha256 if latest is not None else None,
                "created": utc_now(),
                "notes": note,
            }
        )

    def record_version(
        self, kind: str, image_id: str | None = None, parent: int | None = None, note: str = ""
    ) -> ModelVersionRecord:
        """Save the current weights as ``models/v<N>.pt`` (atomically) and record them; the existing record when
        this version is saved already.

        Args:
            kind: Why (``initial``, ``image``, ``manual``, ``rollback``).
            image_id: The finished image that produced the version, if any.
            parent: The version it derives from (default: the latest saved one).
            note: Stored with the checkpoint (default: names the strategy).
        """
        with self.lock, self.state.lock:
            version = self.state.version
            existing = self.store.get_model_version(version)
            if existing is not None:
                return existing
            strategy = self.state.strategy.name
            note = note or f"adapted online by clickadapt serve with strategy {strategy!r}"
            relative = f"{MODELS_FOLDER}/v{version}.pt"
            latest = self._latest_saved
            sha = save_checkpoint(self.store.folder / relative, self.state.model, self._checkpoint_meta(version, note))
            record = self.store.add_model_version(
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
            self._saved_versions.add(record.version)
            if self._latest_saved is None or record.version > self._latest_saved.version:
                self._latest_saved = record
            return record

    def autosave(self) -> None:
        """Have the weights saved after a change when ``autosave_every_click`` is on (restart resumes from them).

        Returns at once: the background writer saves the newest weights (see
        :mod:`~clickadapt.server.service.autosave`); :meth:`flush_autosave` waits for it. Nothing is asked when
        the current weights are a saved version already (after a finish or a rollback): a restart resumes from
        the newer of the latest saved version and the autosave. Called after every click that changed the
        weights, it queries nothing (the saved versions are kept in memory).
        """
        with self.lock:
            version = self.state.version
            if self.settings.autosave_every_click and version not in self._saved_versions:
                self._autosave.request(version)

    @property
    def autosaved_version(self) -> int | None:
        """The newest version whose weights are in the autosave file, or until the first autosave the version the
        server started from (both on disk); ``None`` when autosave is off. A restart resumes from it when it is
        newer than the latest saved version."""
        return self._autosave.saved_version if self.settings.autosave_every_click else None

    def flush_autosave(self, timeout: float | None = None) -> bool:
        """Wait until the requested autosave is on disk; ``False`` if ``timeout`` seconds ran out first.

        Never call it holding the model state's lock: the writer needs that lock to copy the weights.
        """
        return self._autosave.flush(timeout)

    def close(self) -> None:
        """Write the pending autosave and stop its thread (before the datastore closes)."""
        self._autosave.close()

    def model_info(self) -> ModelInfo:
        """Current version, adaptation settings, the saved versions and the safety layer's latest events.

        Reads without the service lock (as the page polls it while a click may be running)."""
        versions = self.store.model_versions()
        return ModelInfo(
            task=self.task.name,
            class_names=list(self.task.class_names),
            version=self.state.version,
            saved_version=versions[-1].version if versions else self.state.version,
            autosaved_version=self.autosaved_version,
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
        with self.lock:
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
                    self.state.set_strategy(self.strategy(new_strategy, new_adaptation))
                except ValueError as error:
                    self._strategies.pop(new_strategy, None)
                    raise BadRequest(f"cannot use strategy {new_strategy!r} with this model: {error}") from error
                self.strategy_name, self.adaptation = new_strategy, new_adaptation
                for listener in self._adaptation_listeners:
                    listener(new_adaptation)
                self.store.set_meta("strategy", new_strategy)
                self.store.set_meta("adaptation", "1" if new_adaptation else "0")
                self.store.add_event("model_settings", changes, client_id)
            return self.model_info()

    def save_version(self, client_id: str | None = None) -> ModelVersionInfo:
        """Save the current weights as a model version now (no-op if this version is saved already)."""
        with self.lock:
            record = self.record_version("manual")
            return next(item for item in self.model_info().versions if item.version == record.version)

    def rollback(self, version: int, client_id: str | None = None) -> ModelInfo:
        """Load a saved version into the shared model; recorded as a new version (history is kept).

        The optimizer state of the strategies is reset (their moments belong to the later weights).

        Raises:
            NotFound: Unknown version.
            Conflict: Its checkpoint file is corrupt.
        """
        with self.lock:
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
                self.state.set_strategy(self.strategy())
                self.state.load_weights(loaded.model.state_dict())
                self.record_version("rollback", parent=version, note=f"rollback to version {version}")
            self.autosave()
            self.store.add_event("rollback", {"to_version": version, "new_version": self.state.version}, client_id)
            return self.model_info()
