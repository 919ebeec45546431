"""A predictor anyone can call from Python: one import, pixels in, masks out in the image's own geometry.

::

    import clickadapt

    predictor = clickadapt.load_predictor("brain", adapt="oaims", safety=True)  # or a checkpoint path
    predictor.set_image(pixels_or_path)               # any size; grey, RGB, or a NIfTI slice (path + index)
    mask = predictor.add_click(120, 96, "lesion")     # (row, col) of the image; mask of the image's shape
    predictor.undo()
    final = predictor.finish()                        # the after-image update (through the safety layer)
    predictor.save("adapted.pt")

The predictor owns what a caller should not have to know: the preprocessing the checkpoint asks for (size,
normalisation), the click maps (σ from the checkpoint), the mapping of clicks onto the model's grid and of
its outputs back onto the image. Masks and probabilities come back at the image's own size, the logits
resampled *before* the argmax so that edges are smooth (:func:`clickadapt.data.prepare.logits_to_source`).

It is a thin face over the layer the server and the benchmarks drive: an
:class:`~clickadapt.adaptation.session.InteractiveSession` on a shared
:class:`~clickadapt.adaptation.model_state.ModelState`, with the safety layer attached to that state, so
a finish through the predictor, the session or the server all reach the same listeners.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clickadapt.adaptation.model_state import ModelState
from clickadapt.adaptation.safety import SafetyConfig, SafetyMonitor, attach_safety
from clickadapt.adaptation.session import InteractiveSession
from clickadapt.adaptation.strategies import make_strategy
from clickadapt.clicks.click import Click
from clickadapt.data.files import read_image_2d
from clickadapt.data.prepare import (
    Geometry,
    PreparedImage,
    logits_to_source,
    mask_to_model,
    prepare_image,
    source_to_model_point,
)
from clickadapt.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from clickadapt.paths import resolve_model_spec
from clickadapt.tasks import TaskSpec
from clickadapt.volume_input import VolumeSlice, is_volume_input, prepare_volume_slice, read_nifti_slice

ImageInput = np.ndarray | str | Path
"""Pixels ``(H, W)`` grey or ``(H, W, 3)`` RGB, or the path of a PNG, JPEG, TIFF or NIfTI file."""


class Predictor:
    """Segment images by clicks with a model that adapts as it goes; see the module docstring.

    Make one with :func:`load_predictor`, or from parts (a model state of your own, e.g. with another
    network) with this constructor.

    Args:
        state: The (shared) model state: network, strategy, version.
        meta: The checkpoint metadata of the model (its preprocessing: image size, click σ).
        safety: The safety layer attached to ``state``, if any (kept for :attr:`safety_events`).
        undo_depth: How many consecutive undos can restore the weights bit for bit.
    """

    def __init__(
        self, state: ModelState, meta: CheckpointMeta, safety: SafetyMonitor | None = None, undo_depth: int = 3
    ) -> None:
        if meta.task != state.task.name:
            raise ValueError(f"checkpoint metadata is for task {meta.task!r}, the model for {state.task.name!r}")
        self.state = state
        self.meta = meta
        self.safety = safety
        self.image_size = meta.preprocessing.image_size(state.task.name)
        self.session = InteractiveSession(state, click_sigma=meta.preprocessing.click_sigma, undo_depth=undo_depth)
        self._geometry: Geometry | None = None

    # ------------------------------------------------------------------ read-only views
    @property
    def task(self) -> TaskSpec:
        """The model's task (class names, image channels)."""
        return self.state.task

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names by label index (0 = background)."""
        return self.state.task.class_names

    @property
    def model_version(self) -> int:
        """Version of the weights (+1 per update)."""
        return self.state.version

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the open image, ``None`` before :meth:`set_image`."""
        return None if self._geometry is None else self._geometry.source_shape

    @property
    def clicks(self) -> list[tuple[int, int, int]]:
        """The clicks on the open image as ``(row, col, label)`` in the image's own coordinates."""
        return list(self._clicks)

    @property
    def safety_events(self) -> list[Any]:
        """What the safety layer did so far (rejected updates, rollbacks…); empty without safety."""
        return list(self.safety.events) if self.safety is not None else []

    # ------------------------------------------------------------------ interaction
    def set_image(self, image: ImageInput, slice_index: int | None = None, image_id: str = "") -> None:
        """Open an image (any unfinished one is abandoned).

        Args:
            image: Pixels ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB), any numeric type and any size of at least
                8×8, or the path of a PNG, JPEG, TIFF or NIfTI file, or of a folder holding one DICOM series
                (one file per slice, read as a volume: :mod:`clickadapt.volumes.dicom`). A grey model greys an
                RGB picture; a colour model repeats a grey one over three channels.
            slice_index: For a volume (NIfTI or DICOM series): the axial slice (default the middle one). A grey
                model sees it normalised with the whole volume's intensity statistics, as the data readers prepared its
                training slices (:mod:`clickadapt.volume_input`); pixels and 2D pictures with their own.
            image_id: A name for logs and safety events (default: the file name).

        Raises:
            FileNotFoundError: A path that does not exist.
            ValueError: An image of another shape, too small, non-finite, or undecodable.
        """
        volume_slice: VolumeSlice | None = None
        if isinstance(image, str | Path):
            path = Path(image)
            if is_volume_input(path):
                volume_slice = read_nifti_slice(path, slice_index, self.meta.preprocessing.clip_percentiles)
                pixels = volume_slice.picture
            else:
                pixels = read_image_2d(path, slice_index)
            image_id = image_id or (path.name if slice_index is None else f"{path.name}[{slice_index}]")
        else:
            if slice_index is not None:
                raise ValueError(
                    "slice_index is for volume paths (NIfTI, DICOM series); pass the slice itself as pixels"
                )
            pixels = np.asarray(image)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
            raise ValueError(f"image must be (H, W) grey or (H, W, 3) RGB, got shape {pixels.shape}")
        if pixels.shape[0] < 8 or pixels.shape[1] < 8:
            raise ValueError(f"image is {pixels.shape[0]}×{pixels.shape[1]} pixels; at least 8×8 is needed")
        if not np.issubdtype(pixels.dtype, np.number) and pixels.dtype != np.bool_:
            raise ValueError(f"image must hold numbers, got dtype {pixels.dtype}")
        if not np.isfinite(np.asarray(pixels, dtype=np.float64)).all():
            raise ValueError("image contains NaN or infinite values")
        if volume_slice is not None and self.task.image_channels == 1:
            # A volume's slice is normalised with the whole volume's statistics, as the data readers, the server
            # and the volume sessions do (clickadapt.volume_input); a picture with its own.
            prepared = prepare_volume_slice(pixels, volume_slice.intensities, self.image_size)
            prepared.geometry.slice_index = volume_slice.index
        else:
            prepared = prepare_image(pixels, self.task, self.image_size)
        self.set_prepared(prepared, image_id=image_id)

    def set_prepared(self, prepared: PreparedImage, image_id: str = "") -> None:
        """Open an image preprocessed by the caller (any unfinished one is abandoned).

        For inputs whose preprocessing needs more than the picture itself, e.g. a volume's slice normalised
        with the whole volume's intensity statistics as the data readers do (:mod:`clickadapt.volumes`).
        Clicks and masks then use ``prepared.geometry``'s source coordinates, as after :meth:`set_image`.

        Args:
            prepared: Model input ``(C, size, size)`` and the geometry that maps it back onto its source.
            image_id: A name for logs and safety events.

        Raises:
            ValueError: Input of another size or channel count than the model's, or a geometry of another
                size.
        """
        if prepared.geometry.size != self.image_size or tuple(prepared.pixels.shape[-2:]) != (
            self.image_size,
            self.image_size,
        ):
            raise ValueError(
                f"prepared input is {tuple(prepared.pixels.shape)} for size {prepared.geometry.size}; the model "
                f"takes {self.image_size}×{self.image_size}"
            )
        self.session.set_image(prepared.pixels, image_id=image_id)
        self._geometry = prepared.geometry
        self._clicks: list[tuple[int, int, int]] = []

    def add_click(self, row: int, col: int, label: int | str = 1) -> np.ndarray:
        """Add a click and return the new mask.

        Args:
            row: Row of the clicked pixel in the image (0-based).
            col: Its column.
            label: The class the pixel belongs to: an index or a class name (e.g. ``"lesion"``, ``"cup"``).

        Returns:
            The mask ``(H, W)`` int64 of class indices, at the image's size.

        Raises:
            ValueError: Without an image, after :meth:`finish`, for a pixel outside the image (or outside the
                part of it the model sees) or an unknown class.
        """
        geometry = self._require_geometry()
        index = self._class_index(label)
        model_row, model_col = source_to_model_point(int(row), int(col), geometry)
        self.session.add_click(Click(model_row, model_col, index))
        self._clicks.append((int(row), int(col), index))
        return self._mask()

    def undo(self) -> np.ndarray | None:
        """Remove the last click (and its weight update, when nothing changed the model since).

        Returns:
            The mask for the remaining clicks, or ``None`` when no click is left.

        Raises:
            ValueError: Without an image, after :meth:`finish`, or with no click to undo.
        """
        self._require_geometry()
        self.session.undo()
        self._clicks.pop()
        return self._mask() if self._clicks else None

    def reset(self) -> None:
        """Drop every click of the open image (the weights stay)."""
        self._require_geometry()
        self.session.reset()
        self._clicks = []

    def finish(self, final_mask: np.ndarray | None = None) -> np.ndarray:
        """Accept the image's mask and run the after-image update (through the safety layer, when on).

        Args:
            final_mask: The mask you accept, ``(H, W)`` class indices at the image's size, when it is not the
                latest prediction (edited elsewhere); ``None`` = the latest prediction.

        Returns:
            The final mask ``(H, W)`` int64 at the image's size.

        Raises:
            ValueError: Without an image or a click, when finished already, or for a mask of another shape or
                with unknown classes.
        """
        geometry = self._require_geometry()
        if final_mask is None:
            self.session.finish()
            return self._mask()
        accepted = np.asarray(final_mask)
        self.session.finish(mask_to_model(accepted, geometry))  # validated there (classes, shape)
        return accepted.astype(np.int64, copy=True)

    def probabilities(self) -> np.ndarray:
        """Class probabilities ``(K, H, W)`` float32 of the latest prediction at the image's size.

        Raises:
            ValueError: Without an image or before the first click.
        """
        logits = self._source_logits()
        return torch.softmax(logits, dim=0).cpu().numpy().astype(np.float32)

    def save(self, path: str | Path) -> str:
        """Write the current (adapted) weights as a clickadapt checkpoint; returns the weights' SHA-256.

        The file keeps the source model's metadata (architecture, preprocessing) with the new version, so
        ``load_predictor(path)`` continues from it.
        """
        meta = self.meta.model_copy(
            update={
                "version": self.state.version,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "notes": f"adapted by clickadapt.Predictor with strategy {self.state.strategy.name!r}",
            }
        )
        with self.state.lock:
            return save_checkpoint(path, self.state.model, meta)

    # ------------------------------------------------------------------ helpers
    def _require_geometry(self) -> Geometry:
        if self._geometry is None:
            raise ValueError("no image is open; call set_image(pixels_or_path) first")
        return self._geometry

    def _class_index(self, label: int | str) -> int:
        if isinstance(label, str):
            return self.task.class_index(label)
        index = int(label)
        if not 0 <= index < self.task.num_classes:
            raise ValueError(
                f"class {index} is not a class of task {self.task.name!r}; known: "
                f"{dict(enumerate(self.task.class_names))}"
            )
        return index

    def _source_logits(self) -> torch.Tensor:
        geometry = self._require_geometry()
        logits = self.session.logits
        if logits is None:
            raise ValueError("no prediction yet; add a click first")
        return logits_to_source(logits[0], geometry)

    def _mask(self) -> np.ndarray:
        mask: np.ndarray = self._source_logits().argmax(dim=0).cpu().numpy().astype(np.int64)
        return mask


def load_predictor(
    model: str | Path = "brain",
    adapt: str = "oaims",
    safety: bool | SafetyConfig = True,
    device: str = "cpu",
    *,
    undo_depth: int = 3,
    strategy_overrides: dict[str, Any] | None = None,
) -> Predictor:
    """Load a model and make a :class:`Predictor` of it.

    Args:
        model: ``"brain"`` or ``"fundus"`` (the shipped model), or a checkpoint path
            (see :func:`~clickadapt.paths.resolve_model_spec`).
        adapt: Adaptation strategy: ``"frozen"`` (no learning), ``"oaims"`` (the paper's method), or any
            other name of ``clickadapt.adaptation.strategies``.
        safety: Attach the safety layer (update guard, snapshots, drift monitor with rollback); ``True`` = its
            defaults, a :class:`~clickadapt.adaptation.safety.SafetyConfig` = those settings.
        device: Torch device.
        undo_depth: How many consecutive undos can restore the weights bit for bit.
        strategy_overrides: Settings of the strategy (e.g. ``{"lr": 1e-4}``).

    Returns:
        A ready predictor.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        ValueError: An unknown strategy or setting.
        clickadapt.models.checkpoint.CheckpointError: A corrupt checkpoint.
    """
    loaded = load_checkpoint(resolve_model_spec(model), device)
    strategy = make_strategy(adapt, loaded.task, **(strategy_overrides or {}))
    state = ModelState(loaded.model, loaded.task, strategy, device, version=loaded.meta.version)
    monitor = None
    if safety is not False:
        monitor = attach_safety(
            state,
            safety if isinstance(safety, SafetyConfig) else None,
            click_sigma=loaded.meta.preprocessing.click_sigma,
        )
    return Predictor(state, loaded.meta, monitor, undo_depth=undo_depth)
