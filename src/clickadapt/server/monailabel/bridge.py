"""What the MONAI Label endpoints do, on the server's own datastore, model and service lock.

- **One model.** Every volume is segmented by a :class:`~clickadapt.volumes.VolumeSession` whose predictor
  drives the registry's shared :class:`~clickadapt.adaptation.model_state.ModelState`: the same weights,
  strategy, safety layer and versions as the web page. A user click runs the strategy's per-click update
  (Mid-Interaction for ``oaims``); saving a ``final`` label runs the after-image update (Post-Interaction)
  on the open slice with the saved label's plane of it.
- **Clicks.** MONAI Label clients send the whole point list on every request; a new click is a point of the
  posted list that the volume's session has not applied yet (in the list's order, foreground first). The
  session's clicks are compared with the posted list (for the 2D model: the clicks of the posted ``slice``
  only); a click that disappeared from it (the user deleted the point) is taken out as if it had never been
  made (:meth:`~clickadapt.volumes.VolumeSession.remove_clicks`):

  - a click of the open slice made since it was last entered: the slice's clicks are undone back to (and
    including) it, each undo restoring the weights when the predictor's snapshots still allow (otherwise the
    answer says that the weights keep that update), then the later clicks still in the list are applied again
    (with their per-click update only when theirs was taken back, so nothing is learnt twice);
  - a click of a slice that is no longer open (accepted since): that slice's record loses it and its plane is
    recomputed from its remaining clicks with a frozen forward (no update); its update and the slice's
    after-image update stay in the weights, which the answer says (``removed[].reason``). Clicks on other
    slices do not depend on it and stay.

  The answer's ``undone_clicks``, ``removed`` (voxel, label, ``weights_restored``, ``reason`` per removed
  click) and ``reapplied_clicks`` report it; the datastore's clicks are marked removed and the re-applied
  ones stored again, so that its clicks in force are always the session's.
- **Restart.** A volume's live session is rebuilt whenever it is not in memory (server restart, eviction of
  an older volume). Its slices' unfinished datastore sessions (``ml-<id>-a<axis>-s<k>``) hold the clicks made
  so far: they are restored into the new :class:`~clickadapt.volumes.VolumeSession`, in the order they were
  made, **without** any weight update (the autosaved weights already hold their updates), each clicked slice's
  plane recomputed by a frozen forward. Re-posted points then match and only truly new points are applied and
  stored (``restored_clicks`` in that answer says how many came back). A posted list that differs from the
  stored one is reconciled like any other request: stored clicks missing from it are removed (see above), and
  undoing a restored click cannot take back its weight update (no snapshot survives a restart: the answer says
  so, as the web page's sessions do after a restart); posted points not stored are new clicks. Propagated
  slices are not stored: a 3D request re-propagates from the latest clicked slice whenever the clicks changed.
  Re-uploading an image resets its unfinished clicked slices (their clicks belong to the replaced file).
- **Datastore.** Each slice clicked on becomes an image of the datastore (its prepared pixels and geometry),
  with a labelling session, its clicks (model grid), the ``original`` mask of its first click and, when the
  label is saved, its ``final`` mask; so the page lists them and the learning curve counts them. The volume
  files themselves (image, ``original`` = the first answer, ``final`` = the saved label) are kept by
  :class:`~clickadapt.server.monailabel.files.VolumeFiles`.
- **Geometry.** Voxel indices are the file's own ``[i, j, k]``; labels are written with the input's shape,
  voxel order and affine by :func:`~clickadapt.volumes.write_label` (nothing is resampled).

Every public method runs under the service lock (see :mod:`clickadapt.server.service`).
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clickadapt import __version__
from clickadapt.data.prepare import mask_to_model
from clickadapt.predictor import Predictor
from clickadapt.server.datastore import ClickRecord, ImageData
from clickadapt.server.images import encode_png
from clickadapt.server.monailabel.files import (
    WEB_TAG,
    VolumeFile,
    VolumeFiles,
    check_writable_tag,
    volume_suffix,
)
from clickadapt.server.service import AnnotationService, BadRequest, NotFound
from clickadapt.server.service.sessions import store_last_click
from clickadapt.volumes import PropagationConfig, VolumeClick, VolumeSession, read_volume, write_label
from clickadapt.volumes.session import ClickRemoval

MODEL_2D = "clickadapt_2d"
"""The model of one slice: clicks of slice ``k`` (``slice`` in the parameters), the answer fills slice ``k``."""
MODEL_3D = "clickadapt_3d"
"""The model of a volume: clicks on any slices, each clicked slice then propagated to its neighbours."""
SLICE_AXIS = 2
"""Slices are taken across the file's last axis (MONAI Label's ``k``)."""
MAX_POINTS = 10_000
"""Most points a request may carry."""
STRATEGIES = {"first": "the first image without a final label", "random": "a random image without a final label"}
TRAIN_TASK_ID = "clickadapt-online"


@dataclass
class SliceSession:
    """The datastore side of one clicked slice.

    Attributes:
        image_id: Its image in the datastore.
        session_id: Its labelling session there.
        clicks: Clicks stored for it.
    """

    image_id: str
    session_id: int
    clicks: int = 0


@dataclass
class LiveVolume:
    """A volume being labelled.

    Attributes:
        key: ``image:<id>`` or ``session:<id>``.
        path: Its file.
        session: The volume session (its predictor drives the shared model).
        slices: Datastore sessions of the clicked slices by ``(axis, index)``.
        client_id: The client that labels it.
        click_ids: Datastore id of each of the session's clicks (parallel to ``session.clicks``).
        restored: Clicks restored from the datastore when it was rebuilt, not reported yet.
        restore_note: Why some stored clicks could not be restored (empty when all were).
    """

    key: str
    path: Path
    session: VolumeSession
    slices: dict[tuple[int, int], SliceSession] = field(default_factory=dict)
    client_id: str = "monailabel"
    click_ids: list[int] = field(default_factory=list)
    restored: int = 0
    restore_note: str = ""


def _points(params: dict[str, Any], name: str, shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The voxel list ``params[name]`` checked against the volume's shape.

    Raises:
        BadRequest: Not a list of ``[i, j, k]`` integers inside the volume.
    """
    raw = params.get(name) or []
    if not isinstance(raw, list) or len(raw) > MAX_POINTS:
        raise BadRequest(f"'{name}' must be a list of at most {MAX_POINTS} voxels [i, j, k]")
    points = []
    for item in raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 3
            or not all(isinstance(value, int | float) and float(value).is_integer() for value in item)
        ):
            raise BadRequest(f"'{name}' holds {str(item)[:60]}; each point is a voxel [i, j, k] of integers")
        voxel = (int(item[0]), int(item[1]), int(item[2]))
        if not all(0 <= value < length for value, length in zip(voxel, shape, strict=True)):
            raise BadRequest(f"point {list(voxel)} of '{name}' is outside the volume of shape {list(shape)}")
        points.append(voxel)
    return points


class MonaiLabelBridge:
    """The MONAI Label protocol's operations on an :class:`AnnotationService` (see the module docstring).

    Args:
        service: The server's task layer (datastore, model registry, service lock).
        propagation: Slice propagation of the 3D model.
    """

    def __init__(self, service: AnnotationService, propagation: PropagationConfig | None = None) -> None:
        self.service = service
        self.models = service.models
        self.store = service.store
        self.lock = service.lock
        self.task = service.models.task
        self.propagation = propagation or PropagationConfig()
        self.files = VolumeFiles(
            service.store.folder,
            service.catalogue.data_root,
            service.settings.max_volume_voxels,
            not_scans=frozenset(service.catalogue.label_files),
            reference_of=service.catalogue.volume_reference_file,
        )
        self.max_live = service.settings.max_live_sessions
        self._live: OrderedDict[str, LiveVolume] = OrderedDict()
        self._train_started = time.time()

    # ================================================================== info
    @property
    def label_names(self) -> dict[str, int]:
        """Class name → index of the foreground classes."""
        return {name: index for index, name in enumerate(self.task.class_names) if index > 0}

    def info(self) -> dict[str, Any]:
        """``GET /info/``: the models (2D and 3D click models), their labels, strategies and trainers."""
        volumes_work = self.task.image_channels == 1
        note = "" if volumes_work else " (this server's model takes colour photographs: use the web page)"
        models = {
            MODEL_2D: {
                "type": "deepgrow",
                "dimension": 2,
                "labels": self.label_names,
                "description": "clickadapt 2D network on the clicked slice; adapts from every click" + note,
            },
            MODEL_3D: {
                "type": "deepgrow",
                "dimension": 3,
                "labels": self.label_names,
                "description": "clickadapt clicks on any slice, each clicked slice propagated to its neighbours" + note,
            },
        }
        images = self.files.images()
        completed = sum(1 for image_id in images if self.files.label(image_id, "final") is not None)
        return {
            "name": "clickadapt",
            "description": "Interactive segmentation that keeps learning from your clicks (OAIMS)",
            "version": __version__,
            "labels": list(self.label_names),
            "models": models,
            "trainers": {
                "clickadapt": {"description": "online adaptation: runs with every click and every saved label"}
            },
            "strategies": {name: {"type": name, "description": text} for name, text in STRATEGIES.items()},
            "scoring": {},
            "train_stats": {"clickadapt": self.train_status()},
            "datastore": {"total": len(images), "completed": completed},
        }

    # ================================================================== datastore
    def datastore(self, output_all: bool) -> dict[str, Any]:
        """``GET /datastore/``: counts, or with ``output=all`` every image and its labels (MONAI's format)."""
        images = self.files.images()
        objects: dict[str, dict[str, Any]] = {}
        completed = 0
        labelled_on_the_page = self._sources_with_labelled_slices()
        for image_id, image in images.items():
            labels = {
                tag: {"ext": volume_suffix(path.name), "info": {"ts": int(path.stat().st_mtime)}}
                for tag, path in self.files.labels(image).items()
            }
            if image_id.startswith("data-") and image_id in labelled_on_the_page:  # data-folder volumes only
                labels[WEB_TAG] = {"ext": ".nii.gz", "info": {"ts": int(time.time())}}
            objects[image_id] = {
                "image": {"ext": image.suffix, "info": {"name": image.name, "ts": int(image.path.stat().st_mtime)}},
                "labels": labels,
            }
            completed += int("final" in labels)
        if output_all:
            return {
                "name": "clickadapt",
                "description": "clickadapt datastore",
                "images_dir": "",
                "labels_dir": "labels",
                "objects": objects,
            }
        return {"total": len(objects), "completed": completed, "label_tags": {"final": completed}}

    def add_image(self, image_id: str | None, received: Path, filename: str) -> dict[str, Any]:
        """``PUT /datastore/?image=``: keep an uploaded volume (the id defaults to the file name's stem).

        Raises:
            BadRequest: Not a readable volume, or an invalid id.
            PayloadTooLarge: More voxels than allowed.
        """
        with self.lock:
            self.files.check_volume(received)
            self._read(received)  # refuse what cannot be read before keeping it
            stem = Path(filename.replace("\\", "/")).name
            default = stem[: -len(received.suffix)] if stem.lower().endswith(".nrrd") else stem.split(".nii")[0]
            image_id = image_id or default
            image = self.files.add_image(image_id, received)
            self._drop(f"image:{image.id}")
            for slice_image, _axis, _index in self._stored_slices(f"image:{image.id}"):
                stored = self.store.latest_session(slice_image)
                if stored is not None and stored.status == "active":
                    self.store.remove_all_clicks(stored.id)  # those clicks were on the replaced file
            return {"image": image.id}

    def image_file(self, image_id: str) -> VolumeFile:
        """``GET /datastore/image``: the image's file.

        Raises:
            NotFound: Unknown image.
        """
        return self.files.image(image_id)

    def label_file(self, image_id: str, tag: str) -> Path | bytes:
        """``GET /datastore/label``: the label file of an image and tag (the ``web`` label: a gzipped NIfTI made
        when asked for, never written to disk).

        Raises:
            NotFound: No such label.
        """
        self.files.image(image_id)
        if tag == WEB_TAG:
            return self._web_label(image_id)
        found = self.files.label(image_id, tag)
        if found is None:
            raise NotFound(f"image {image_id!r} has no {tag!r} label")
        return found

    def _sources_with_labelled_slices(self) -> set[str]:
        """Ids of the volumes of which the web page has a slice with clicks or a finished one (a data-folder
        volume's web source id is its MONAI Label image id)."""
        return {
            record.source_id
            for record in self.store.list_images()
            if record.source_id is not None and record.slice_index is not None and record.status != "new"
        }

    def _web_label(self, image_id: str) -> bytes:
        """The web page's labelled slices of a data-folder volume in one NIfTI aligned with it (gzipped): its ``web``
        label.

        Raises:
            NotFound: Not a data-folder volume, or no slice of it labelled on the page.
        """
        missing = f"image {image_id!r} has no {WEB_TAG!r} label: no slice of it was labelled in the web page"
        if not image_id.startswith("data-") or self.store.get_source(image_id) is None:
            raise NotFound(missing)
        try:
            payload, _media_type, _filename = self.service.sessions.export_volume(image_id)
        except NotFound as error:
            raise NotFound(missing) from error
        return payload

    def save_label(self, image_id: str, tag: str, received: Path, client_id: str) -> dict[str, Any]:
        """``PUT /datastore/label``: keep a label; a ``final`` one finishes the image's clicked slices and runs
        the after-image update with it.

        Raises:
            NotFound: Unknown image.
            BadRequest: A read-only tag (``reference``, ``web``), not a label of the image's shape, or with classes
                the task does not have.
        """
        check_writable_tag(tag)
        with self.lock:
            image = self.files.image(image_id)
            self.files.check_volume(received)
            label = np.asarray(self._read(received).data)
            shape = self._read(image.path).shape
            if label.shape != shape:
                raise BadRequest(f"the label has shape {list(label.shape)}, the image {list(shape)}")
            if label.dtype.kind == "f" and np.all(np.isfinite(label)) and np.all(label == np.round(label)):
                label = label.astype(np.int64)
            classes = self.task.num_classes
            if label.dtype.kind not in "iub" or (label.size and not 0 <= label.min() <= label.max() < classes):
                raise BadRequest(f"the label must hold class indices 0..{classes - 1}")
            result: dict[str, Any] = {"image": image.id, "label": image.id, "tag": tag}
            version_before = self.models.state.version
            live = self._live.get(f"image:{image.id}")
            if tag == "final" and live is None and self._has_stored_clicks(f"image:{image.id}"):
                live = self._live_volume(image.id, None, client_id)  # restores its clicks (after a restart)
            finished = 0
            if tag == "final" and live is not None and live.session.clicks:
                finished = self._finish(live, label.astype(np.int64), client_id)
            self.files.put_label(image.id, tag, received)
            result.update(
                model_version=self.models.state.version,
                updated=self.models.state.version != version_before,
                finished_slices=finished,
            )
            return result

    def next_sample(self, strategy: str) -> dict[str, Any]:
        """``POST /activelearning/{strategy}``: the next image without a ``final`` label (``{}`` if none).

        Raises:
            NotFound: Unknown strategy.
        """
        if strategy not in STRATEGIES:
            raise NotFound(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        open_images = [
            image for image_id, image in self.files.images().items() if self.files.label(image_id, "final") is None
        ]
        if not open_images:
            return {}
        image = open_images[0] if strategy == "first" else random.choice(open_images)
        return {"id": image.id, "path": str(image.path), "name": image.name}

    # ================================================================== sessions (volumes loaded locally)
    def create_session(self, received: Path, filename: str) -> dict[str, Any]:
        """``PUT /session/``: keep a volume the client loaded locally; infer on it with ``session_id``.

        Raises:
            BadRequest: Not a readable volume.
        """
        with self.lock:
            self.files.check_volume(received)
            self._read(received)
            session_id = uuid.uuid4().hex
            self.files.add_session(session_id, received, filename)
            for old in self.files.sessions()[: -self.max_live]:
                self.remove_session(old)
            return {"session_id": session_id, "session_info": self.session_info(session_id)}

    def session_info(self, session_id: str) -> dict[str, Any]:
        """``GET /session/{id}``: what is known of a session (MONAI Label's ``SessionInfo``).

        Raises:
            NotFound: Unknown session.
        """
        path = self.files.session_volume(session_id)
        created = int(path.stat().st_mtime)
        return {
            "name": session_id,
            "path": str(path.parent),
            "image": str(path),
            "meta": {},
            "create_ts": created,
            "last_access_ts": int(time.time()),
            "expiry": 0,
        }

    def remove_session(self, session_id: str) -> dict[str, Any]:
        """``DELETE /session/{id}``: forget a session and its volume.

        Raises:
            NotFound: Unknown session.
        """
        with self.lock:
            info = self.session_info(session_id)
            self._drop(f"session:{session_id}")
            self.files.remove_session(session_id)
            return info

    # ================================================================== inference
    def infer(
        self, model: str, image_id: str | None, session_id: str | None, params: dict[str, Any], client_id: str
    ) -> tuple[bytes, str, dict[str, Any]]:
        """``POST /infer/{model}``: apply the new clicks of the posted point lists and answer the label.

        Args:
            model: :data:`MODEL_2D` or :data:`MODEL_3D`.
            image_id: A datastore image (unless ``session_id`` is given).
            session_id: A session volume (``PUT /session/``).
            params: ``foreground`` / ``background`` voxel lists (whole list so far), ``label`` (name or index;
                default the first foreground class), and for the 2D model ``slice``.
            client_id: The client.

        Returns:
            The label file (the input's shape, voxel order and affine), its name, and the answer's parameters.

        Raises:
            NotFound: Unknown model, image or session.
            BadRequest: Invalid points, or a colour model (volumes are grey).
        """
        if model not in (MODEL_2D, MODEL_3D):
            raise NotFound(f"unknown model {model!r}; models: {MODEL_2D}, {MODEL_3D}")
        with self.lock:
            live = self._live_volume(image_id, session_id, client_id)
            session = live.session
            shape = session.volume.shape
            class_index = self._class_index(params.get("label"))
            posted = [(voxel, class_index) for voxel in _points(params, "foreground", shape)]
            posted += [(voxel, 0) for voxel in _points(params, "background", shape)]
            slice_index = params.get("slice")
            if model == MODEL_2D:
                if slice_index is None:
                    if not posted:
                        raise BadRequest("the 2D model needs 'slice' (or a point to take it from)")
                    slice_index = posted[-1][0][SLICE_AXIS]
                if not isinstance(slice_index, int) or not 0 <= slice_index < shape[SLICE_AXIS]:
                    raise BadRequest(f"'slice' must be an index 0..{shape[SLICE_AXIS] - 1} of the last axis")
                posted = [point for point in posted if point[0][SLICE_AXIS] == slice_index]
            started = time.perf_counter()
            version_before = self.models.state.version
            restored, live.restored = live.restored, 0
            removal = self._remove_missing(live, posted, slice_index if model == MODEL_2D else None)
            applied = {(click.voxel, click.label) for click in session.clicks}
            new = [point for point in posted if point not in applied]
            for voxel, label in new:
                self._click(live, voxel, label)
            propagated: list[int] = []
            if model == MODEL_3D and session.clicks and (new or restored or removal.dropped):
                report = session.propagate(SLICE_AXIS, session.clicks[-1].voxel[SLICE_AXIS])
                propagated = sorted(report.written)
            label_volume = np.asarray(session.label)
            if model == MODEL_2D:
                assert isinstance(slice_index, int)
                answer = np.zeros_like(label_volume)
                answer[:, :, slice_index] = label_volume[:, :, slice_index]
            else:
                answer = label_volume
            payload, suffix = self._label_file(answer, session)
            if live.key.startswith("image:") and session.clicks and not self.files.label(live.key[6:], "original"):
                self.files.write_label_bytes(live.key[6:], "original", payload, suffix)
            self.models.autosave()
            answer_params = {
                "label_names": self.label_names,
                "model_version": self.models.state.version,
                "adapted": self.models.state.version != version_before,
                "new_clicks": len(new),
                "undone_clicks": len(removal.removed),
                "removed": [
                    {
                        "voxel": list(undo.click.voxel),
                        "label": undo.click.label,
                        "weights_restored": undo.restored_weights,
                        "reason": undo.reason,
                    }
                    for undo in removal.removed
                ],
                "reapplied_clicks": len(removal.reapplied),
                "restored_clicks": restored,
                "clicks": len(session.clicks),
                "propagated_slices": propagated,
                "latencies": {"total": round(time.perf_counter() - started, 4)},
            }
            if live.restore_note:  # reported once, on the first answer after the rebuild
                answer_params["restore_note"], live.restore_note = live.restore_note, ""
            return payload, f"label{suffix}", answer_params

    # ================================================================== training (the online model)
    def train_status(self) -> dict[str, Any]:
        """``GET /train/``: the online model's state as a finished training task (nothing runs offline)."""
        state = self.models.state
        return {
            "id": TRAIN_TASK_ID,
            "name": "train",
            "status": "DONE",
            "start_ts": int(self._train_started),
            "end_ts": int(time.time()),
            "result": {
                "model_version": state.version,
                "strategy": self.models.strategy_name,
                "adaptation": self.models.adaptation,
                "finished_images": len(self.store.finished_images()),
                "note": "the model adapts online with every click and every saved label; there is no offline run",
            },
            "details": [],
        }

    def train(self, model: str | None) -> dict[str, Any]:
        """``POST /train/{model}``: save the online model's current weights as a version and report its state.

        Raises:
            NotFound: An unknown model or trainer name.
        """
        if model not in (None, "", "clickadapt", MODEL_2D, MODEL_3D):
            raise NotFound(f"unknown trainer {model!r}; this server trains online (trainer 'clickadapt')")
        with self.lock:
            self.models.record_version("manual", note="saved on a MONAI Label train request")
            return self.train_status()

    # ================================================================== helpers
    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return read_volume(path)
        except (ValueError, FileNotFoundError) as error:
            raise BadRequest(str(error).replace(str(path), path.name)) from error

    def _class_index(self, label: object) -> int:
        if label is None or label == "":
            return 1
        if isinstance(label, str) and not label.isdigit():
            if label not in self.label_names:
                raise BadRequest(f"unknown label {label!r}; labels: {', '.join(self.label_names)}")
            return self.label_names[label]
        try:
            index = int(str(label))
        except ValueError as error:
            raise BadRequest(f"unknown label {label!r}") from error
        if not 1 <= index < self.task.num_classes:
            raise BadRequest(f"unknown label {label!r}; labels: {self.label_names}")
        return index

    def _drop(self, key: str) -> None:
        self._live.pop(key, None)

    def _live_volume(self, image_id: str | None, session_id: str | None, client_id: str) -> LiveVolume:
        """The open volume of an image or session, opened (read, set on a new volume session) on first use."""
        if session_id:
            key, path = f"session:{session_id}", self.files.session_volume(session_id)
        elif image_id:
            image = self.files.image(image_id)
            key, path = f"image:{image.id}", image.path
        else:
            raise BadRequest("give ?image=<id> or ?session_id=<id>")
        live = self._live.get(key)
        if live is not None:
            self._live.move_to_end(key)
            live.client_id = client_id
            return live
        if self.task.image_channels != 1:
            raise BadRequest(
                f"this server's model ({self.task.name}) takes colour photographs, not volumes; "
                "label them in the web page"
            )
        meta = self.models.base_meta
        meta = meta.model_copy(
            update={"preprocessing": meta.preprocessing.model_copy(update={"size": self.models.image_size})}
        )
        predictor = Predictor(self.models.state, meta, self.models.safety)
        session = VolumeSession(predictor, self.propagation)
        try:
            session.set_volume(self._read(path), volume_id=key)
        except ValueError as error:
            raise BadRequest(str(error)) from error
        live = LiveVolume(key, path, session, client_id=client_id)
        self._restore(live)
        self._live[key] = live
        while len(self._live) > self.max_live:
            self._live.popitem(last=False)
        return live

    def _slice_session(self, live: LiveVolume, axis: int, index: int) -> SliceSession:
        """The datastore image and session of a clicked slice (registered on its first click)."""
        found = live.slices.get((axis, index))
        if found is not None:
            return found
        prefix = "ml-" if live.key.startswith("image:") else "mls-"
        image_id = f"{prefix}{live.key.split(':', 1)[1]}-a{axis}-s{index}"
        prepared = live.session.prepared_slice(axis, index)
        data = ImageData(prepared.pixels, encode_png(prepared.display), prepared.geometry.model_dump(mode="json"))
        name = f"{live.path.name} [axis {axis}, slice {index}]"
        self.store.add_image(image_id, name, "upload", self.task.name, data=data)
        stored = self.store.latest_session(image_id)
        if stored is None or stored.status != "active":
            stored = self.store.start_session(
                image_id, live.client_id, self.models.state.strategy.name, self.models.state.version
            )
        found = SliceSession(image_id, stored.id, len(self.store.active_clicks(stored.id)))
        live.slices[(axis, index)] = found
        return found

    def _click(self, live: LiveVolume, voxel: tuple[int, int, int], label: int) -> None:
        """One user click: the volume session segments (and adapts), the datastore records it."""
        try:
            live.session.add_click(voxel, label, axis=SLICE_AXIS)
        except ValueError as error:
            raise BadRequest(str(error)) from error
        live.click_ids.append(self._store_click(live, live.session.clicks[-1]))

    def _store_click(self, live: LiveVolume, click: VolumeClick) -> int:
        """Store the session's latest click (``click``) in its slice's datastore session; returns its id."""
        axis, index = click.axis, click.voxel[click.axis]
        stored = self._slice_session(live, axis, index)
        on_slice = sum(1 for other in live.session.clicks if (other.axis, other.voxel[other.axis]) == (axis, index))
        record = store_last_click(
            self.store,
            stored.session_id,
            live.session.predictor.session,
            self.models.state.version,
            first=on_slice == 1,
        )
        stored.clicks += 1
        return record.id

    def _remove_missing(
        self, live: LiveVolume, posted: Sequence[tuple[tuple[int, int, int], int]], slice_index: int | None
    ) -> ClickRemoval:
        """Take out the session's clicks missing from the posted list (only those of slice ``slice_index`` when
        given: a 2D request posts that slice's points), as if never made; the datastore follows."""
        session = live.session
        wanted = set(posted)
        positions = [
            position
            for position, click in enumerate(session.clicks)
            if (slice_index is None or click.voxel[SLICE_AXIS] == slice_index)
            and (click.voxel, click.label) not in wanted
        ]
        if not positions:
            return ClickRemoval((), (), (), 0)
        old_ids = list(live.click_ids)
        readded: list[int] = []
        try:
            removal = session.remove_clicks(positions, lambda click: readded.append(self._store_click(live, click)))
        except ValueError as error:
            raise BadRequest(str(error)) from error
        dropped = set(removal.dropped)
        by_session = {stored.session_id: stored for stored in live.slices.values()}
        for position in sorted(dropped):
            record = self.store.remove_click(old_ids[position])
            if record is not None and record.session_id in by_session:
                by_session[record.session_id].clicks -= 1
        live.click_ids = [click_id for position, click_id in enumerate(old_ids) if position not in dropped]
        live.click_ids += readded
        return removal

    def _stored_slices(self, key: str) -> list[tuple[str, int, int]]:
        """``(image id, axis, index)`` of the datastore images of a volume's clicked slices."""
        kind, name = key.split(":", 1)
        prefix = f"{'ml-' if kind == 'image' else 'mls-'}{name}-a"
        pattern = re.compile(rf"{re.escape(prefix)}(\d+)-s(\d+)")
        found = []
        for image_id in self.store.image_ids(prefix):
            match = pattern.fullmatch(image_id)
            if match is not None:
                found.append((image_id, int(match.group(1)), int(match.group(2))))
        return found

    def _has_stored_clicks(self, key: str) -> bool:
        """Whether a volume has clicked slices with unfinished sessions holding clicks in the datastore."""
        for image_id, _axis, _index in self._stored_slices(key):
            stored = self.store.latest_session(image_id)
            if stored is not None and stored.status == "active" and self.store.active_clicks(stored.id):
                return True
        return False

    def _restore(self, live: LiveVolume) -> None:
        """Put a rebuilt volume's stored, unfinished clicks back into its session without any weight update
        (see the module docstring's *Restart*), in the order they were made."""
        session = live.session
        shape = session.volume.shape
        gathered: list[tuple[ClickRecord, int, int, SliceSession, int]] = []
        skipped: list[str] = []
        for image_id, axis, index in self._stored_slices(live.key):
            stored = self.store.latest_session(image_id)
            if stored is None or stored.status != "active":
                continue
            clicks = self.store.active_clicks(stored.id)
            if not clicks:
                continue
            if axis != SLICE_AXIS or not 0 <= index < shape[axis]:
                skipped.append(f"{image_id}: not a slice of this volume")
                continue
            slice_session = SliceSession(image_id, stored.id, len(clicks))
            gathered += [(click, axis, index, slice_session, stored.model_version_start) for click in clicks]
        gathered.sort(key=lambda item: item[0].id)
        restored: list[VolumeClick] = []
        priors: list[bool] = []
        ids: list[int] = []
        previous_version: int | None = None
        for click, axis, index, slice_session, start_version in gathered:
            try:
                voxel = session.model_point_to_voxel(axis, index, click.row, click.col)
            except ValueError as error:
                skipped.append(f"{slice_session.image_id} click {click.id}: {error}")
                self.store.remove_click(click.id)  # the datastore keeps only what the session holds
                slice_session.clicks -= 1
                continue
            before = start_version if previous_version is None else previous_version
            restored.append(VolumeClick(voxel, click.label, axis))
            priors.append(click.update_s > 0 and click.model_version != before)  # as the web page's replay
            ids.append(click.id)
            previous_version = click.model_version
            live.slices[(axis, index)] = slice_session
        if restored:
            try:
                session.restore_clicks(restored, priors)
            except ValueError as error:  # e.g. the model's size changed: the clicks no longer map
                for click_id in ids:
                    self.store.remove_click(click_id)
                for slice_session in live.slices.values():
                    slice_session.clicks = 0
                skipped.append(str(error))
                restored, ids = [], []
        live.click_ids = ids
        live.restored = len(restored)
        if skipped:
            live.restore_note = "stored clicks not restored (marked removed): " + "; ".join(skipped)[:500]

    def _finish(self, live: LiveVolume, label: np.ndarray, client_id: str) -> int:
        """Finish a volume with its saved label: after-image update, ``final`` masks of the clicked slices."""
        session = live.session
        try:
            session.finish(label)
        except ValueError as error:
            raise BadRequest(str(error)) from error
        version = self.models.state.version
        finished = 0
        last_image = None
        for (axis, index), stored in live.slices.items():
            plane = session.orientation.slice_view(label, axis, index)
            geometry = session.prepared_slice(axis, index).geometry
            record = self.store.get_session(stored.session_id)
            if record is None or record.status != "active":
                continue
            self.store.finish_session(stored.session_id, mask_to_model(plane.astype(np.int64), geometry), version)
            finished += 1
            last_image = stored.image_id
        if self.store.get_model_version(version) is None:
            self.models.record_version("image", image_id=last_image)
        self.models.autosave()
        self._drop(live.key)
        self.store.add_event("monailabel-final", {"volume": live.key, "slices": finished}, client_id)
        return finished

    @staticmethod
    def _label_file(label: np.ndarray, session: VolumeSession) -> tuple[bytes, str]:
        """The label as a file with the volume's geometry (NIfTI or NRRD like the input)."""
        suffix = ".nrrd" if session.volume.format == "nrrd" else ".nii.gz"
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = write_label(Path(folder) / f"label{suffix}", label, session.volume)
            return path.read_bytes(), suffix


def parse_params(raw: str | None) -> dict[str, Any]:
    """The ``params`` form field as a dict (``{}`` when absent).

    Raises:
        BadRequest: Not a JSON object.
    """
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise BadRequest(f"'params' is not valid JSON: {error.msg}") from error
    if not isinstance(value, dict):
        raise BadRequest("'params' must be a JSON object")
    return value
