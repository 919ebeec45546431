"""What the session manager answers: session views for the page and the API, masks and exported files.

The page draws ``SessionView.mask_overlay`` over its picture (``…/picture``), stretched to ``display.png``'s
extent. The overlay comes at the source image's own resolution (up to
:data:`~clickadapt.server.images.PAGE_OVERLAY_MAX_SIDE` pixels a side) from the library's resampling
(:func:`~clickadapt.data.prepare.logits_to_source` of the live logits, before the argmax;
:func:`~clickadapt.data.prepare.class_map_to_source` for a stored or brushed mask), so its edges are smooth over a
large photograph instead of the model grid's staircase. For a centre padded or cropped image (brain slices) the
display picture's pixels *are* the source's pixels, so the overlay is the mask on that grid.

Not thread-safe by itself: the session manager calls it under the service lock.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from clickadapt import __version__
from clickadapt.adaptation.strategies.base import pseudo_label
from clickadapt.data.prepare import Geometry, class_map_to_source, logits_to_source, mask_to_model, mask_to_source
from clickadapt.server.datastore import ClickRecord, CorrectionRecord, Datastore, ImageRecord
from clickadapt.server.images import (
    REFERENCE_COLOURS,
    encode_png,
    overlay_png,
    page_geometry,
    paint_stroke,
    source_mask_to_nifti,
    volume_masks_to_nifti,
    volume_masks_to_stored,
)
from clickadapt.server.schemas import ClickOut, SessionView
from clickadapt.server.service.catalogue import ImageCatalogue
from clickadapt.server.service.crops import cut_from_picture, embed_in_picture
from clickadapt.server.service.errors import BadRequest, NotFound, slug
from clickadapt.server.service.live import LiveImage, LiveImages, replay_stored_clicks
from clickadapt.server.service.registry import ModelRegistry
from clickadapt.volumes.dicom_seg import segmentation_of_series

MaskChoice = Literal["current", "original", "final"]
VolumeExportFormat = Literal["nifti", "seg"]
"""A volume's labelled slices as one NIfTI, or (a data-folder DICOM series) as a DICOM SEG."""
"""Which mask: the live one, the model's first-click mask, or the user's finished label."""
OutOfMemoryKey = tuple[str, int, tuple[int, ...], tuple[int, ...]]
"""Image id, session id, ids of its clicks and of its strokes in force."""
OUT_OF_MEMORY_MASKS = 256
"""Current masks of in-progress images not in memory that are kept (model grid; 16 MB for 256 px brain slices)."""


def overlay_data_url(mask: np.ndarray | None) -> str | None:
    """A mask as the page's RGBA overlay PNG, as a ``data:`` URL (``None`` without a mask)."""
    if mask is None:
        return None
    return "data:image/png;base64," + base64.b64encode(overlay_png(mask)).decode("ascii")


def painted(prediction: np.ndarray | None, strokes: Sequence[CorrectionRecord]) -> np.ndarray | None:
    """A prediction (model grid) with brush and eraser strokes painted over it in order (``None`` without one)."""
    mask = prediction
    if mask is None:
        return None
    for stroke in strokes:
        mask = paint_stroke(mask, stroke.points, stroke.radius, stroke.label)
    return mask


class SessionViews:
    """Builds session views, masks and files from the live sessions, the store and the registry.

    Args:
        store: The datastore.
        catalogue: The images (records, pixels, geometry).
        models: The registry (model versions, the source-domain router).
        live: The sessions in memory.
    """

    def __init__(self, store: Datastore, catalogue: ImageCatalogue, models: ModelRegistry, live: LiveImages) -> None:
        self.store = store
        self.catalogue = catalogue
        self.models = models
        self.live = live
        self.task = models.task
        self._out_of_memory: OrderedDict[OutOfMemoryKey, tuple[np.ndarray, int]] = OrderedDict()
        """Current masks of in-progress images not in memory (see :meth:`_current_out_of_memory`), oldest first."""

    # ================================================================== masks

    @staticmethod
    def edited_mask(live: LiveImage) -> np.ndarray | None:
        """The latest prediction with the brush and eraser strokes painted over it (model grid)."""
        return painted(live.session.prediction, live.corrections)

    def _in_force(
        self, image_id: str, session_id: int
    ) -> tuple[OutOfMemoryKey, list[ClickRecord], list[CorrectionRecord]]:
        """An in-progress image's clicks and strokes in force, and the key of the mask they make."""
        clicks, strokes = self.store.active_clicks(session_id), self.store.active_corrections(session_id)
        key = (image_id, session_id, tuple(click.id for click in clicks), tuple(stroke.id for stroke in strokes))
        return key, clicks, strokes

    def _keep_out_of_memory(self, key: OutOfMemoryKey, mask: np.ndarray, version: int) -> None:
        self._out_of_memory[key] = (mask, version)
        self._out_of_memory.move_to_end(key)
        while len(self._out_of_memory) > OUT_OF_MEMORY_MASKS:
            self._out_of_memory.popitem(last=False)

    def leaves_memory(self, live: LiveImage) -> None:
        """Keep the current mask of an unfinished image whose session leaves memory (least recently used), as its
        user last saw it: what its volume's Dice and export count until it is opened again."""
        mask = self.edited_mask(live)
        key, clicks, _strokes = self._in_force(live.image_id, live.session_id)
        if mask is not None and clicks and not live.session.finished:
            self._keep_out_of_memory(key, mask, self.models.mask_version(live.session) or 0)

    def _current_out_of_memory(self, image_id: str, session_id: int) -> tuple[np.ndarray, int] | None:
        """The current mask of an in-progress image whose session is not in memory, and its model version: as it
        left memory, or (after a restart) its stored clicks replayed with adaptation off on the model it would open
        on and its strokes painted over, which is what opening it shows, without opening it (no claim, nothing
        stored). ``None`` when it has no click."""
        key, clicks, strokes = self._in_force(image_id, session_id)
        if not clicks:
            return None
        found = self._out_of_memory.get(key)
        if found is not None:
            self._out_of_memory.move_to_end(key)
            return found
        record = self.catalogue.require_image(image_id)
        session = self.models.new_session(image_id, record.name)
        session.adapt = False  # nor the strategy's start of an image: the shared weights serve a live image
        try:
            session.set_image(self.catalogue.image_data(image_id).pixels, image_id)
            replay_stored_clicks(session, clicks)
            mask = painted(session.prediction, strokes)
            version = self.models.mask_version(session) or 0
        finally:
            self.models.release_copy(image_id)  # a source-domain image's copy of the base model is not kept
        assert mask is not None
        self._keep_out_of_memory(key, mask, version)
        return mask, version

    def _resampled(self, live: LiveImage | None, mask: np.ndarray, geometry: Geometry) -> np.ndarray:
        """``mask`` (model grid) at ``geometry``'s source shape with smooth edges: the live logits resampled
        before the argmax when ``mask`` is the open session's untouched prediction, else its one-hot."""
        logits = live.session.logits if live is not None else None
        if logits is not None and live is not None and live.session.prediction is mask:
            # pseudo_label: the same indices as argmax(dim=0), without PyTorch's slow CPU argmax over a leading axis
            # (260 -> 43 ms for the 1538 x 2048 overlay of a large fundus photograph)
            resampled = logits_to_source(logits[0], geometry)
            return pseudo_label(resampled[None])[0].cpu().numpy().astype(np.uint8)
        return class_map_to_source(mask, geometry, self.task.num_classes)

    def reference_overlay(self, image_id: str) -> bytes:
        """The image's reference mask (:meth:`ImageCatalogue.reference_label`; a crop: its square of the picture's)
        as an overlay PNG in :data:`~clickadapt.server.images.REFERENCE_COLOURS`, in the frame of the page's mask
        overlay (:func:`~clickadapt.server.images.page_geometry`), for the page to draw its outline. Shown to the
        user only: the model never sees it.

        Raises:
            NotFound: Unknown image, or no reference mask.
            BadRequest: The reference mask is unreadable or of another size than the picture.
        """
        reference = self.catalogue.reference_label(image_id)
        if reference is None:
            raise NotFound(f"image {image_id!r} has no reference mask")
        relative, label = reference
        geometry, crop = self.catalogue.placement(image_id)
        if crop is not None and label.shape == tuple(crop.picture_shape):
            label = cut_from_picture(label, crop)
        if label.shape != tuple(geometry.source_shape):
            raise BadRequest(
                f"reference mask {relative} is {label.shape[0]}×{label.shape[1]} pixels, the picture "
                f"{geometry.source_shape[0]}×{geometry.source_shape[1]}"
            )
        if geometry.kind == "resize":  # the source's pixels onto the page's (at most 2048 a side), nearest
            framed = mask_to_source(label, page_geometry(geometry))
        else:
            framed = mask_to_model(label, geometry)
        return overlay_png(framed, REFERENCE_COLOURS)

    def page_overlay(self, image_id: str, live: LiveImage | None, mask: np.ndarray | None) -> str | None:
        """The overlay the page draws over ``display.png`` (see :func:`page_geometry`), as a ``data:`` URL."""
        if mask is None:
            return None
        geometry = page_geometry(self.catalogue.geometry(image_id))
        if geometry.kind != "resize":
            return overlay_data_url(mask)
        return overlay_data_url(self._resampled(live, mask, geometry))

    def mask(self, image_id: str, tag: MaskChoice = "current") -> tuple[np.ndarray, int]:
        """A mask of the image on the model grid and the model version that produced it.

        Raises:
            NotFound: Unknown image, or no such mask yet.
        """
        self.catalogue.require_image(image_id)
        live = self.live.get(image_id)
        if tag == "current" and live is not None and live.session.prediction is not None:
            edited = self.edited_mask(live)
            assert edited is not None
            return edited, self.models.mask_version(live.session) or 0
        if tag == "current":
            stored = self.store.latest_session(image_id)
            if live is None and stored is not None and stored.status != "done":
                out_of_memory = self._current_out_of_memory(image_id, stored.id)
                if out_of_memory is not None:
                    return out_of_memory
            tag = "final" if stored is not None and stored.status == "done" else "original"
            if tag == "original":
                raise NotFound(f"image {image_id!r} has no mask yet; open it and click")
        found = self.store.get_mask(image_id, tag)
        if found is None:
            raise NotFound(f"image {image_id!r} has no {tag} mask")
        return found.mask, found.model_version

    def mask_at_source(self, image_id: str, tag: MaskChoice = "current") -> np.ndarray:
        """The mask at the source's size with smooth edges (``uint8 (H, W)``).

        Raises:
            NotFound: Unknown image, or no such mask yet.
        """
        mask, _version = self.mask(image_id, tag)
        return self._placed_at_source(image_id, mask, tag)

    def _placed_at_source(self, image_id: str, mask: np.ndarray, tag: MaskChoice) -> np.ndarray:
        """:meth:`mask_at_source` of a mask :meth:`mask` already gave."""
        live = self.live.get(image_id) if tag == "current" else None
        geometry, crop = self.catalogue.placement(image_id)
        resampled = self._resampled(live, mask, geometry)
        return resampled if crop is None else embed_in_picture(resampled, crop)

    def export(
        self, image_id: str, tag: MaskChoice, file_format: Literal["png", "nifti"] | str
    ) -> tuple[bytes, str, str]:
        """The mask as a file: PNG at the source's size, or NIfTI aligned with the source volume.

        Returns:
            File bytes, media type, file name.

        Raises:
            NotFound: Unknown image or no mask.
        """
        stem = slug(self.catalogue.require_image(image_id).name.rsplit(".", 1)[0])
        if file_format == "png":
            return encode_png(self.mask_at_source(image_id, tag)), "image/png", f"{stem}_mask.png"
        mask, _version = self.mask(image_id, tag)
        geometry, crop = self.catalogue.placement(image_id)
        picture = mask_to_source(mask, geometry)
        if crop is not None:
            picture = embed_in_picture(picture, crop)
        return source_mask_to_nifti(picture, geometry), "application/gzip", f"{stem}_mask.nii.gz"

    def source_slices(self, source_id: str, tag: MaskChoice = "current") -> dict[int, tuple[str, np.ndarray]]:
        """Slice index → (image id, :meth:`mask` on the model grid) of every slice of a volume that has a ``tag`` mask
        now, in slice order."""
        found: dict[int, tuple[str, np.ndarray]] = {}
        for record in self.store.list_images():
            if record.source_id != source_id or record.slice_index is None:
                continue
            try:
                mask, _version = self.mask(record.id, tag)
            except NotFound:
                continue  # added to the list, not labelled yet
            found[record.slice_index] = (record.id, mask)
        return dict(sorted(found.items()))

    def source_masks_at_source(self, source_id: str) -> dict[int, np.ndarray]:
        """Slice index → :meth:`mask_at_source` (current) of every slice of a volume that has a mask now."""
        return {
            index: self._placed_at_source(image_id, mask, "current")
            for index, (image_id, mask) in self.source_slices(source_id).items()
        }

    def export_volume(
        self, source_id: str, tag: MaskChoice = "current", format: VolumeExportFormat = "nifti"
    ) -> tuple[bytes, str, str]:
        """Every labelled slice of a NIfTI volume in one NIfTI with the volume's stored shape and affine (the other
        slices 0): what :meth:`export` gives slice by slice, together. ``format="seg"``: for a DICOM series of the
        data folder, the same label as a DICOM SEG referring to the series' own images
        (:func:`clickadapt.volumes.dicom_seg.segmentation_of_series`).

        Returns:
            File bytes, media type, file name.

        Raises:
            NotFound: Unknown source, or no slice with such a mask.
            BadRequest: A 2D image, or a volume without an affine (not NIfTI); a SEG of what is not a data-folder
                DICOM series.
        """
        source = self.catalogue.get_source(source_id)
        series = self.catalogue.dicom_series_of(source_id) if format == "seg" else None
        if source.kind != "volume":
            raise BadRequest(f"{source.name} is a 2D image; export its mask from the image")
        slices = self.source_slices(source_id, tag)
        if not slices:
            raise NotFound(f"no slice of {source.name} has a {tag} mask yet; label a slice first")
        masks: dict[int, np.ndarray] = {}
        geometry: Geometry | None = None
        for index, (image_id, mask) in slices.items():  # slices are never cropped (only photographs are)
            geometry, _crop = self.catalogue.placement(image_id)
            masks[index] = mask_to_source(mask, geometry)
        assert geometry is not None
        stem = slug(Path(source.name).name.split(".nii")[0].rsplit(".", 1)[0])
        try:
            if series is not None:  # the series' NIfTI is read_dicom_series's: its stored order is the SEG's
                label = volume_masks_to_stored(masks, geometry)
                seg = segmentation_of_series(series, label, self.task.class_names, software_version=__version__)
                return seg, "application/dicom", f"{stem}_seg.dcm"
            return volume_masks_to_nifti(masks, geometry), "application/gzip", f"{stem}_mask.nii.gz"
        except ValueError as error:
            raise BadRequest(f"{source.name}: {error}") from error

    # ================================================================== views

    def click_out(self, click: ClickRecord) -> ClickOut:
        """The API view of a stored click."""
        return ClickOut(
            row=click.row,
            col=click.col,
            label=click.label,
            class_name=self.task.class_names[click.label],
            model_version=click.model_version,
            forward_s=round(click.forward_s, 4),
            update_s=round(click.update_s, 4),
        )

    def view(self, live: LiveImage) -> SessionView:
        """The state of an image whose session is in memory (its mask with strokes, at the page's resolution)."""
        record = self.catalogue.require_image(live.image_id)
        session = live.session
        if session.finished:
            return self.done_view(record, message=live.message)
        clicks = [self.click_out(click) for click in self.store.active_clicks(live.session_id)]
        timings = session.timings
        return SessionView(
            image=self.catalogue.image_info(record),
            session_id=live.session_id,
            state=record.status,
            clicks=clicks,
            mask_overlay=self.page_overlay(live.image_id, live, self.edited_mask(live)),
            mask_model_version=self.models.mask_version(session),
            corrections=len(live.corrections),
            model_version=self.models.state.version,
            source_domain=self.models.on_source_model(session),
            last_click_s=round(timings[-1].total_s, 4) if timings else None,
            message=live.message,
        )

    def done_view(self, record: ImageRecord, message: str = "") -> SessionView:
        """The state of a finished image (its final label)."""
        stored = self.store.latest_session(record.id)
        final = self.store.get_mask(record.id, "final")
        clicks = self.store.active_clicks(stored.id) if stored is not None else []
        return SessionView(
            image=self.catalogue.image_info(record),
            session_id=stored.id if stored is not None else None,
            state="done",
            clicks=[self.click_out(click) for click in clicks],
            mask_overlay=self.page_overlay(record.id, None, final.mask if final is not None else None),
            mask_model_version=clicks[-1].model_version if clicks else None,
            model_version=self.models.state.version,
            source_domain=self.models.is_source_domain(record.name),
            message=message or "finished",
        )

    def stored_view(self, image_id: str) -> SessionView:
        """The image's state without opening it: the live view, the finished view, or its stored clicks.

        Raises:
            NotFound: Unknown image.
        """
        record = self.catalogue.require_image(image_id)
        live = self.live.get(image_id)
        if live is not None:
            return self.view(live)
        stored = self.store.latest_session(image_id)
        if stored is not None and stored.status == "done":
            return self.done_view(record)
        clicks = self.store.active_clicks(stored.id) if stored is not None else []
        return SessionView(
            image=self.catalogue.image_info(record),
            session_id=stored.id if stored is not None else None,
            state=record.status,
            clicks=[self.click_out(click) for click in clicks],
            model_version=self.models.state.version,
            source_domain=self.models.is_source_domain(record.name),
            message="open the image to see its mask",
        )
