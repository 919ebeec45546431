"""The session manager: labelling sessions of the images, one per image, driven by the clients.

- **Open, claim, release, take over.** Opening an image makes it the client's current one (see
  :mod:`clickadapt.server.service.live`). A finished image opens read-only unless ``relabel`` is asked for.
- **Clicks, undo, reset, strokes, finish.** Each drives the image's
  :class:`~clickadapt.adaptation.session.InteractiveSession` on the model the registry's domain router gives
  it; the service never predicts or adapts by itself. ``session.finish()`` reaches the safety layer and a
  source copy's reset (listeners of the session's model state): there is no finish path of its own here.
- **Persistence.** Every click, undo, reset, stroke and finish is written to the datastore before the answer
  leaves; a finish that changed the shared weights saves a new model version.
- **Restart.** Re-opening an in-progress image replays its stored clicks with adaptation switched off (the
  restored weights already contain their updates). Undo after a restart removes the click but cannot take
  back its weight update (there is no snapshot any more). A source-domain image is replayed on the base
  weights (its copy's updates are not saved).

Every public method runs under the service lock (see :mod:`clickadapt.server.service`). The answers
(:class:`~clickadapt.server.schemas.SessionView`) and the masks are built by
:class:`~clickadapt.server.service.views.SessionViews`.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from clickadapt.adaptation.session import InteractiveSession
from clickadapt.clicks.click import Click
from clickadapt.data.prepare import mask_to_model
from clickadapt.evaluation.metrics import region_dice
from clickadapt.server.datastore import ClickRecord, CorrectionRecord, Datastore
from clickadapt.server.schemas import ChartPoint, ReferenceScore, SessionView, VolumeReferenceScore
from clickadapt.server.service.catalogue import ImageCatalogue
from clickadapt.server.service.crops import cut_from_picture
from clickadapt.server.service.errors import BadRequest, Conflict, NotFound
from clickadapt.server.service.live import LiveImage, LiveImages, replay_stored_clicks
from clickadapt.server.service.registry import ModelRegistry
from clickadapt.server.service.views import MaskChoice, SessionViews, VolumeExportFormat
from clickadapt.server.settings import ServerSettings


def store_last_click(
    store: Datastore, session_id: int, session: InteractiveSession, model_version: int, *, first: bool
) -> ClickRecord:
    """Record the session's latest click with its timing; on the stored session's ``first`` click, also the
    model's first mask (the ``original`` label). Returns the stored click (with its row id)."""
    click, timing = session.clicks[-1], session.timings[-1]
    return store.add_click(
        ClickRecord(
            id=0,
            session_id=session_id,
            row=click.row,
            col=click.col,
            label=click.label,
            created="",
            forward_s=timing.forward_s,
            update_s=timing.update_s,
            model_version=model_version,
        ),
        original_mask=session.prediction if first else None,
    )


class SessionManager:
    """Open, click, undo, reset, paint, finish; masks and export of the images' labelling sessions.

    Args:
        settings: Server settings (claim timeout, sessions kept in memory).
        store: The datastore.
        catalogue: The images and their pixels.
        models: The shared model, its versions and the domain router.
        lock: The service lock shared by every part.
    """

    def __init__(
        self,
        settings: ServerSettings,
        store: Datastore,
        catalogue: ImageCatalogue,
        models: ModelRegistry,
        lock: threading.RLock,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalogue = catalogue
        self.models = models
        self.task = models.task
        self.lock = lock
        self.live = LiveImages(settings.claim_timeout_s)
        """The sessions in memory and the clients holding them."""
        self.views = SessionViews(store, catalogue, models, self.live)
        """Builds the answers and the masks."""
        models.add_adaptation_listener(self._follow_adaptation)

    def _follow_adaptation(self, adaptation: bool) -> None:
        """Open source-domain images follow the adaptation on/off switch (their copies learn only while on)."""
        for live in self.live.values():
            if self.models.on_source_model(live.session):
                live.session.adapt = adaptation

    # ================================================================== the live session of an image

    def _claim(self, live: LiveImage, client_id: str, take_over: bool = False) -> None:
        record = self.store.get_image(live.image_id)
        self.live.claim(live, client_id, record.name if record is not None else "this image", take_over)

    def _live_image(self, image_id: str, client_id: str, relabel: bool = False, take_over: bool = False) -> LiveImage:
        """The in-memory session of an image for ``client_id``: existing, replayed from the store, or new."""
        record = self.catalogue.require_image(image_id)
        live = self.live.get(image_id)
        if live is not None:
            self._claim(live, client_id, take_over)
            if not (relabel and live.session.finished):
                return live
            self.live.drop(image_id)
        stored = self.store.latest_session(image_id)
        if stored is not None and stored.status == "done" and not relabel:
            raise Conflict(
                f"image {image_id!r} is finished; open it with relabel=true to label it again "
                "(the finished label is kept)"
            )
        pixels = self.catalogue.image_data(image_id).pixels
        session = self.models.new_session(image_id, record.name)
        session.set_image(pixels, image_id)
        replayed_updates: list[bool] = []
        if stored is None or stored.status == "done":
            strategy, version = self.models.session_start(session)
            stored = self.store.start_session(image_id, client_id, strategy, version)
            if relabel and record.status == "done":
                self.store.add_event("relabel", {"image_id": image_id, "session_id": stored.id}, client_id)
        else:
            clicks = self.store.active_clicks(stored.id)
            versions = [stored.model_version_start, *(click.model_version for click in clicks)]
            replayed_updates = [
                click.update_s > 0 and click.model_version != versions[index] for index, click in enumerate(clicks)
            ]
            replay_stored_clicks(session, clicks)
        live = LiveImage(image_id, stored.id, session, client_id, time.monotonic())
        if session.clicks:
            live.replayed_updates = replayed_updates
            live.corrections = self.store.active_corrections(stored.id)
        self.live.add(live)
        self._claim(live, client_id)
        for dropped in self.live.evict_beyond(self.settings.max_live_sessions, keep=image_id):
            self.views.leaves_memory(dropped)
            self.models.release_copy(dropped.image_id)
        return live

    def _live_with_clicks(self, image_id: str, client_id: str, action: str) -> LiveImage:
        """The live session of an image that has clicks to act on; refuses before anything is stored.

        Raises:
            NotFound: Unknown image.
            Conflict: The image is finished or has no click.
        """
        self.catalogue.require_image(image_id)
        if self.live.get(image_id) is None:
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

    # ================================================================== opening and holding images

    def open_image(self, image_id: str, client_id: str, relabel: bool = False, take_over: bool = False) -> SessionView:
        """Make ``image_id`` the client's current image and return its state (clicks replayed after a restart).

        A finished image opens read-only unless ``relabel`` is true (then a new session starts and the
        earlier final mask stays in the datastore).

        Args:
            image_id: The image.
            client_id: The client (browser tab; ``"api"`` for plain API callers).
            relabel: Label a finished image again.
            take_over: Take the image from another client that holds it.

        Raises:
            NotFound: Unknown image.
            Conflict: The image is being labelled by another client (unless ``take_over``).
        """
        with self.lock:
            record = self.catalogue.require_image(image_id)
            stored = self.store.latest_session(image_id)
            if stored is not None and stored.status == "done" and not relabel:
                live = self.live.get(image_id)
                if live is not None:
                    self._claim(live, client_id, take_over)
                else:
                    self.live.touch_client(client_id, image_id)
                return self.views.done_view(record)
            live = self._live_image(image_id, client_id, relabel, take_over)
            if take_over:
                live.message = "taken over from the other tab; its clicks are here"
            view = self.views.view(live)
            live.message = ""
            return view

    def release(self, image_id: str, client_id: str) -> None:
        """The client gives the image up (its tab closed): another tab may open it at once. No-op otherwise."""
        with self.lock:
            self.live.release(image_id, client_id)

    def session_view(self, image_id: str, client_id: str) -> SessionView:
        """The image's state as this client would see it, without opening it.

        Raises:
            NotFound: Unknown image.
        """
        with self.lock:
            return self.views.stored_view(image_id)

    # ================================================================== clicks, strokes, undo, reset

    def add_click(self, image_id: str, client_id: str, row: int, col: int, label: int | str) -> SessionView:
        """Add a click to the client's session of an image (opening it if needed) and return the new mask.

        Args:
            image_id: The image.
            client_id: The client.
            row: Row of the click on the model grid (pixels of ``display.png``).
            col: Column of the click.
            label: Class index or name; 0 / ``background`` for a background click.

        Raises:
            NotFound: Unknown image.
            BadRequest: Click outside the image or unknown class (nothing is stored).
            Conflict: Image finished, or open in another client.
        """
        with self.lock:
            pixels = self.catalogue.image_data(image_id).pixels
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
            store_last_click(
                self.store,
                live.session_id,
                session,
                self.models.mask_version(session) or 0,  # set: the click produced a mask
                first=len(session.clicks) == 1,
            )
            live.message = ""
            self.models.autosave()
            return self.views.view(live)

    def add_correction(
        self, image_id: str, client_id: str, points: list[tuple[int, int]], radius: float, label: int | str
    ) -> SessionView:
        """Paint a brush (class) or eraser (background) stroke over the current mask: a final touch-up.

        Strokes are stored as corrections, stay on top of later predictions, are undone by undo (the latest
        action first) and removed by reset; the finish update learns from the edited mask.

        Args:
            image_id: The image.
            client_id: The client.
            points: ``(row, col)`` centres of the stroke on the model grid.
            radius: Brush radius in model-grid pixels.
            label: Class painted (0 / ``background``: erase).

        Raises:
            NotFound: Unknown image.
            BadRequest: A point outside the image or an unknown class (nothing is stored).
            Conflict: No click yet (no mask to touch up), finished, or open in another client.
        """
        with self.lock:
            self.catalogue.require_image(image_id)
            index = self._class_index(label)
            pixels = self.catalogue.image_data(image_id).pixels
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
            return self.views.view(live)

    def undo(self, image_id: str, client_id: str) -> SessionView:
        """Undo the latest action: a brush stroke, else the last click (and its weight update, when nothing else
        updated the model since).

        Raises:
            NotFound: Unknown image.
            Conflict: No click to undo, image finished, or open in another client.
        """
        with self.lock:
            live = self._live_with_clicks(image_id, client_id, "undo a click of")
            if live.corrections and live.corrections[-1].after_clicks >= len(live.session.clicks):
                live.corrections.pop()  # the latest action was a stroke: undo that
                self.store.remove_corrections(live.session_id, "undo", last_only=True)
                live.message = "brush stroke undone"
                return self.views.view(live)
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
            self.models.autosave()
            view = self.views.view(live)
            view.weights_restored = outcome.restored_weights if outcome is not None else None
            return view

    def reset(self, image_id: str, client_id: str) -> SessionView:
        """Remove every click and stroke of the image (weights untouched).

        Raises:
            NotFound: Unknown image.
            Conflict: Image finished, or open in another client.
        """
        with self.lock:
            live = self._live_with_clicks(image_id, client_id, "reset")
            live.session.reset()
            self.store.remove_all_clicks(live.session_id)
            self.store.remove_corrections(live.session_id, "reset", last_only=False)
            live.corrections.clear()
            live.message = "all clicks removed; the model's weights are unchanged"
            return self.views.view(live)

    # ================================================================== finishing

    def finish(self, image_id: str, client_id: str, final_mask: np.ndarray | None = None) -> SessionView:
        """Accept the image's label and run the after-image update.

        The label is ``final_mask`` when given, else the current mask with the brush strokes painted over it.
        Stores the ``final`` mask and saves the adapted weights as a new model version when they changed.

        Args:
            image_id: The image.
            client_id: The client.
            final_mask: The label in the *source image's* geometry (``(H, W)`` class indices, e.g. a label file
                a viewer sends back); mapped onto the model grid with the image's geometry.

        Raises:
            NotFound: Unknown image.
            BadRequest: ``final_mask`` of the wrong shape or with unknown classes.
            Conflict: Already finished (the stored label is never overwritten), no click yet, or open in
                another client.
        """
        with self.lock:
            label = self._final_mask_on_grid(image_id, final_mask) if final_mask is not None else None
            live = self._live_with_clicks(image_id, client_id, "finish")
            version_before = self.models.state.version
            if label is None and live.corrections:
                label = self.views.edited_mask(live)  # the touched-up mask is the label
            # The session's model hears the finish: the safety layer, and for a source image its reset.
            final = live.session.finish(label)
            shared_version = self.models.state.version
            self.store.finish_session(live.session_id, final, shared_version)
            if self.models.on_source_model(live.session):
                live.message = (
                    "finished; a source-domain image: its clicks adapted its own copy of the base model, now gone; "
                    f"the shared model stays at version {shared_version}"
                )
            else:
                if self.store.get_model_version(shared_version) is None:
                    self.models.record_version("image", image_id=image_id)
                self.models.autosave()
                live.message = (
                    f"finished; model updated to version {shared_version}"
                    if shared_version != version_before
                    else "finished; the model did not change"
                )
            view = self.views.view(live)
            self.live.drop(image_id)
            return view

    def _final_mask_on_grid(self, image_id: str, final_mask: np.ndarray) -> np.ndarray:
        """A label in the source's geometry brought onto the model grid.

        Raises:
            BadRequest: Wrong shape, or a class the task does not have.
        """
        labels = np.asarray(final_mask)
        if labels.dtype.kind not in "iub" or (
            labels.size and not 0 <= labels.min() <= labels.max() < self.task.num_classes
        ):
            raise BadRequest(f"the label must hold class indices 0..{self.task.num_classes - 1}")
        try:
            geometry, crop = self.catalogue.placement(image_id)
            if crop is not None:  # a crop's label comes in the whole picture's frame
                labels = cut_from_picture(labels, crop)
            return mask_to_model(labels.astype(np.int64), geometry)
        except ValueError as error:
            raise BadRequest(str(error)) from error

    # ================================================================== masks, labels and export

    def mask(self, image_id: str, tag: MaskChoice = "current") -> tuple[np.ndarray, int]:
        """A mask of the image on the model grid and the model version that produced it.

        ``current``: the live prediction with its strokes (or the final mask of a finished image);
        ``original``: the model's first-click mask; ``final``: the user's finished mask.

        Raises:
            NotFound: Unknown image, or no such mask yet.
        """
        with self.lock:
            return self.views.mask(image_id, tag)

    def label_at_source(self, image_id: str, tag: MaskChoice = "current") -> np.ndarray:
        """A mask at the source image's size (``uint8 (H, W)`` class indices) with smooth edges: the live
        logits resampled before the argmax, or a stored mask's one-hot resampled (see ``data.prepare``).

        Raises:
            NotFound: Unknown image, or no such mask yet.
        """
        with self.lock:
            return self.views.mask_at_source(image_id, tag)

    def reference_overlay(self, image_id: str) -> bytes:
        """The image's reference mask as an overlay PNG in the frame of the page's mask overlay (see
        :meth:`~clickadapt.server.service.views.SessionViews.reference_overlay`).

        Raises:
            NotFound: Unknown image, or no reference mask.
            BadRequest: The reference mask is unreadable or of another size than the picture.
        """
        with self.lock:
            return self.views.reference_overlay(image_id)

    def reference_score(self, image_id: str) -> ReferenceScore:
        """Dice of the current mask (at the picture's size) against the image's reference mask.

        Raises:
            NotFound: Unknown image, no reference mask, or no mask yet.
            BadRequest: The reference mask is unreadable or of another size than the picture.
        """
        with self.lock:
            reference = self.catalogue.reference_label(image_id)
            if reference is None:
                raise NotFound(
                    f"image {image_id!r} has no reference mask (a file X_mask.ext beside the picture X.ext in the "
                    "data folder; for a volume's slice, X_mask.nii.gz or the folder's only label volume)"
                )
            relative, label = reference
            mask = self.views.mask_at_source(image_id, "current")
        if mask.shape != label.shape:
            raise BadRequest(
                f"reference mask {relative} is {label.shape[0]}×{label.shape[1]} pixels, the picture "
                f"{mask.shape[0]}×{mask.shape[1]}"
            )
        return ReferenceScore(reference=relative, dice=region_dice(mask, label, self.task))

    def volume_reference_score(self, source_id: str) -> VolumeReferenceScore:
        """Dice of a data-folder volume's labelled slices against its reference mask, as one 3D overlap: over the
        labelled slices together, and over the whole volume with every slice without a mask as background (what
        is still to label shows there).

        Raises:
            NotFound: Unknown source, or no reference mask.
            BadRequest: A 2D image, a reference that cannot be read or does not share the scan's grid, or a slice
                mask of another size than the reference's slices.
        """
        with self.lock:
            relative, reference = self.catalogue.reference_volume(source_id)
            masks = self.views.source_masks_at_source(source_id)
        predicted = np.zeros_like(reference)
        for index, mask in masks.items():
            if mask.shape != reference.shape[1:]:
                raise BadRequest(
                    f"the mask of slice {index} is {mask.shape[0]}×{mask.shape[1]} pixels, the slices of reference "
                    f"{relative} {reference.shape[1]}×{reference.shape[2]}"
                )
            predicted[index] = mask
        labelled = sorted(masks)
        return VolumeReferenceScore(
            reference=relative,
            slices=int(reference.shape[0]),
            labelled_slices=labelled,
            marked_slices=[int(index) for index in np.flatnonzero(reference.reshape(len(reference), -1).any(axis=1))],
            dice_labelled=region_dice(predicted[labelled], reference[labelled], self.task) if labelled else None,
            dice_volume=region_dice(predicted, reference, self.task),
        )

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
        with self.lock:
            return self.views.export(image_id, tag, file_format)

    def export_volume(
        self, source_id: str, tag: MaskChoice = "current", format: VolumeExportFormat = "nifti"
    ) -> tuple[bytes, str, str]:
        """Every labelled slice of a NIfTI volume in one NIfTI aligned with it (its shape and affine; slices without
        a mask are 0).

        Returns:
            File bytes, media type, file name.

        Raises:
            NotFound: Unknown source, or no slice with such a mask.
            BadRequest: A 2D image, or a volume that is not NIfTI; a SEG of what is not a data-folder DICOM series.
        """
        with self.lock:
            return self.views.export_volume(source_id, tag, format)

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
