"""The datastore: one SQLite file (WAL mode) holding images, sessions, clicks, masks and model versions.

Like MONAI Label's datastore, an image's model output and the user's label are stored side by side:
the model's first-click mask under the tag ``original`` and the user's finished mask under ``final``.
Nothing is deleted: an undone click is marked removed, a relabelled image gets a new session and keeps
the old final mask, a rollback is a new model version. Model weights live in checkpoint files under
``<store>/models`` (written atomically); the database records their path and checksum.

Image status: ``done`` when its latest session is finished, ``in_progress`` when its active session has
at least one click, else ``new``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1
DATABASE_NAME = "clickadapt.sqlite"

ImageStatus = Literal["new", "in_progress", "done"]
MaskTag = Literal["original", "final"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('data', 'upload')),
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'volume')),
    num_slices INTEGER,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('demo', 'data', 'upload')),
    task TEXT NOT NULL,
    source_id TEXT REFERENCES sources(id),
    slice_index INTEGER,
    position INTEGER NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (source_id, slice_index)
);
CREATE TABLE IF NOT EXISTS image_data (
    image_id TEXT PRIMARY KEY REFERENCES images(id),
    pixels BLOB NOT NULL,
    display_png BLOB NOT NULL,
    geometry TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id TEXT NOT NULL REFERENCES images(id),
    client_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'done')),
    started TEXT NOT NULL,
    finished TEXT,
    model_version_start INTEGER NOT NULL,
    model_version_end INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_image ON sessions (image_id, id);
CREATE TABLE IF NOT EXISTS clicks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    row INTEGER NOT NULL,
    col INTEGER NOT NULL,
    label INTEGER NOT NULL,
    created TEXT NOT NULL,
    forward_s REAL NOT NULL,
    update_s REAL NOT NULL,
    model_version INTEGER NOT NULL,
    removed TEXT CHECK (removed IN ('undo', 'reset')),
    removed_at TEXT
);
CREATE INDEX IF NOT EXISTS clicks_session ON clicks (session_id, id);
CREATE TABLE IF NOT EXISTS masks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id TEXT NOT NULL REFERENCES images(id),
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    tag TEXT NOT NULL CHECK (tag IN ('original', 'final')),
    png BLOB NOT NULL,
    model_version INTEGER NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (session_id, tag)
);
CREATE TABLE IF NOT EXISTS model_versions (
    version INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('initial', 'image', 'manual', 'rollback')),
    parent_version INTEGER,
    image_id TEXT,
    strategy TEXT NOT NULL,
    created TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    label INTEGER NOT NULL,
    radius REAL NOT NULL,
    points TEXT NOT NULL,
    after_clicks INTEGER NOT NULL,
    created TEXT NOT NULL,
    removed TEXT CHECK (removed IN ('undo', 'reset')),
    removed_at TEXT
);
CREATE INDEX IF NOT EXISTS corrections_session ON corrections (session_id, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    client_id TEXT,
    details TEXT NOT NULL
);
"""


class DatastoreError(RuntimeError):
    """The datastore file is unusable (another schema version, not a clickadapt store)."""


def utc_now() -> str:
    """Current UTC time in ISO-8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def array_to_npy(array: np.ndarray) -> bytes:
    """Serialise an array in ``.npy`` format (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_to_array(payload: bytes) -> np.ndarray:
    """Inverse of :func:`array_to_npy`."""
    array: np.ndarray = np.load(io.BytesIO(payload), allow_pickle=False)
    return array


@dataclass
class SourceRecord:
    """A file images come from: one in the data folder or an upload kept under ``<store>/uploads``.

    Attributes:
        id: Stable identifier.
        name: Display name (file name).
        origin: ``"data"`` or ``"upload"``.
        path: Relative to the data folder (``data``; a DICOM series: ``folder/#SeriesInstanceUID``) or to the
            store (``upload``).
        kind: ``"image"`` (2D) or ``"volume"`` (NIfTI / multi-frame DICOM / a folder's DICOM series; one image
            per chosen slice).
        num_slices: Slices of a volume, ``None`` for 2D files.
    """

    id: str
    name: str
    origin: str
    path: str
    kind: str
    num_slices: int | None


@dataclass
class ImageRecord:
    """One 2D image to label, with its status.

    Attributes:
        id: Stable identifier.
        name: Display name.
        origin: ``"demo"``, ``"data"`` or ``"upload"``.
        task: Task name.
        source_id: Source file, ``None`` for demo images.
        slice_index: Slice of a volume source, ``None`` for 2D images.
        position: Order in the list.
        status: ``new``, ``in_progress`` or ``done``.
        clicks: Clicks of the finished session (done) or of the active session.
        materialised: Whether the preprocessed pixels are stored (decoded lazily for data-folder files).
        height: Preprocessed height, when materialised.
        width: Preprocessed width, when materialised.
    """

    id: str
    name: str
    origin: str
    task: str
    source_id: str | None
    slice_index: int | None
    position: int
    status: ImageStatus = "new"
    clicks: int = 0
    materialised: bool = False
    height: int | None = None
    width: int | None = None


@dataclass
class ImageData:
    """The stored pixels of an image.

    Attributes:
        pixels: Preprocessed ``float32 (C, H, W)`` — what the model sees.
        display_png: 8-bit PNG shown on the page (same geometry as ``pixels``).
        geometry: How ``pixels`` maps back onto the source (see ``clickadapt.server.images.Geometry``).
    """

    pixels: np.ndarray
    display_png: bytes
    geometry: dict[str, Any]


@dataclass
class CorrectionRecord:
    """A brush (class label) or eraser (label 0) stroke on a session's mask: a final touch-up.

    Attributes:
        id: Row id (0 before it is stored).
        session_id: The session.
        label: Class painted (0 = eraser: background).
        radius: Brush radius in pixels of the preprocessed image.
        points: ``(row, col)`` points of the stroke, in order.
        after_clicks: Clicks in force when it was made.
        created: ISO time.
    """

    id: int
    session_id: int
    label: int
    radius: float
    points: list[tuple[int, int]]
    after_clicks: int
    created: str = ""


@dataclass
class SessionRecord:
    """One labelling pass over an image.

    Attributes:
        id: Row id.
        image_id: The image.
        client_id: Browser session (or API client) that started it.
        strategy: Adaptation strategy in force when it started.
        status: ``active`` or ``done``.
        started: ISO time.
        finished: ISO time, when done.
        model_version_start: Model version when it started.
        model_version_end: Model version after its finish update.
    """

    id: int
    image_id: str
    client_id: str
    strategy: str
    status: str
    started: str
    finished: str | None
    model_version_start: int
    model_version_end: int | None


@dataclass
class ClickRecord:
    """One stored click.

    Attributes:
        id: Row id.
        session_id: Its session.
        row: Row in preprocessed image coordinates.
        col: Column.
        label: Class index.
        created: ISO time.
        forward_s: Seconds of the forward passes of this click.
        update_s: Seconds of the weight update of this click.
        model_version: Model version that produced the mask shown after this click.
        removed: ``None`` while in force, ``"undo"`` or ``"reset"`` once removed.
    """

    id: int
    session_id: int
    row: int
    col: int
    label: int
    created: str
    forward_s: float
    update_s: float
    model_version: int
    removed: str | None = None


@dataclass
class ModelVersionRecord:
    """A saved model version.

    Attributes:
        version: Model version number (strictly increasing; a rollback gets a new number).
        path: Checkpoint path relative to the store.
        sha256: Weights checksum.
        kind: ``initial``, ``image`` (after a finished image), ``manual`` (saved on demand) or ``rollback``.
        parent_version: Version it came from (for a rollback: the version restored).
        image_id: Finished image that produced it (kind ``image``).
        strategy: Strategy in force.
        created: ISO time.
        note: Free text.
    """

    version: int
    path: str
    sha256: str
    kind: str
    parent_version: int | None
    image_id: str | None
    strategy: str
    created: str
    note: str = ""


@dataclass
class FinishedImage:
    """One point of the learning chart: an image finished, the clicks it needed, the model version after.

    Attributes:
        image_id: The image.
        name: Its name.
        clicks: Clicks of the finished session.
        finished: ISO time.
        model_version: Model version after the finish update.
    """

    image_id: str
    name: str
    clicks: int
    finished: str
    model_version: int


@dataclass
class StoredMask:
    """A stored mask with its provenance.

    Attributes:
        mask: ``int64 (H, W)`` class indices.
        model_version: Model version that produced it.
        session_id: Session it belongs to.
        created: ISO time.
    """

    mask: np.ndarray
    model_version: int
    session_id: int
    created: str


def encode_label_png(mask: np.ndarray) -> bytes:
    """Encode a class-index mask as an 8-bit grey PNG (lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_label_png(payload: bytes) -> np.ndarray:
    """Inverse of :func:`encode_label_png`: an ``int64 (H, W)`` class-index mask."""
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image, dtype=np.int64)


class Datastore:
    """SQLite datastore of one ``--store`` folder (thread-safe: one connection behind a lock).

    Args:
        folder: The store folder; created if missing. The database is ``<folder>/clickadapt.sqlite``.

    Raises:
        DatastoreError: If the database has another schema version.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DATABASE_NAME
        self._lock = threading.RLock()
        try:
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise DatastoreError(f"datastore {self.path} is not a usable SQLite database: {error}") from error
        stored = self.get_meta("schema_version")
        if stored is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(stored) != SCHEMA_VERSION:
            raise DatastoreError(f"datastore {self.path} has schema version {stored}, expected {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: everything inside commits together or not at all."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._connection.execute(sql, parameters).fetchall())

    def get_meta(self, key: str) -> str | None:
        """A value of the key-value ``meta`` table, or ``None``."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the key-value ``meta`` table."""
        with self.transaction() as connection:
            connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add_event(self, kind: str, details: dict[str, Any], client_id: str | None = None) -> None:
        """Append to the event log (strategy changes, rollbacks, relabels…)."""
        with self.transaction() as connection:
            connection.execute(
                "INSERT INTO events (created, kind, client_id, details) VALUES (?, ?, ?, ?)",
                (utc_now(), kind, client_id, json.dumps(details, sort_keys=True)),
            )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The event log, oldest first (optionally one kind)."""
        sql = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        rows = self._query(sql, (kind,) if kind else ())
        return [
            {
                "id": row["id"],
                "created": row["created"],
                "kind": row["kind"],
                "client_id": row["client_id"],
                "details": json.loads(row["details"]),
            }
            for row in rows
        ]

    # ------------------------------------------------------------------ sources and images

    def add_source(self, source: SourceRecord) -> SourceRecord:
        """Insert a source; if one with this id exists, return the stored one unchanged."""
        with self.transaction() as connection:
            connection.execute(
                "INSERT OR IGNORE INTO sources (id, name, origin, path, kind, num_slices, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source.id, source.name, source.origin, source.path, source.kind, source.num_slices, utc_now()),
            )
        stored = self.get_source(source.id)
        assert stored is not None
        return stored

    def get_source(self, source_id: str) -> SourceRecord | None:
        """A source by id, or ``None``."""
        rows = self._query("SELECT * FROM sources WHERE id = ?", (source_id,))
        if not rows:
            return None
        row = rows[0]
        return SourceRecord(row["id"], row["name"], row["origin"], row["path"], row["kind"], row["num_slices"])

    def add_image(
        self,
        image_id: str,
        name: str,
        origin: str,
        task: str,
        source_id: str | None = None,
        slice_index: int | None = None,
        data: ImageData | None = None,
    ) -> ImageRecord:
        """Insert an image at the end of the list (with its pixels if given); existing ids are left unchanged."""
        with self.transaction() as connection:
            exists = connection.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
            if not exists:
                position = connection.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM images").fetchone()[0]
                connection.execute(
                    "INSERT INTO images (id, name, origin, task, source_id, slice_index, position, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (image_id, name, origin, task, source_id, slice_index, position, utc_now()),
                )
                if data is not None:
                    self._insert_image_data(connection, image_id, data)
        record = self.get_image(image_id)
        assert record is not None
        return record

    def list_data_folder_first(self, image_ids: Sequence[str]) -> None:
        """Put ``image_ids`` at the top of the list in this order; the other images follow in their own order.

        Used at start-up to list a data folder in the scan's (natural) order, also in a store whose images were
        added in another order or to which files were added after uploads. Unknown ids are ignored.
        """
        with self.transaction() as connection:
            current = [str(row[0]) for row in connection.execute("SELECT id FROM images ORDER BY position, id")]
            known = set(current)
            first = [image_id for image_id in dict.fromkeys(image_ids) if image_id in known]
            chosen = set(first)
            wanted = first + [image_id for image_id in current if image_id not in chosen]
            if wanted != current:
                connection.executemany(
                    "UPDATE images SET position = ? WHERE id = ?",
                    [(place, image_id) for place, image_id in enumerate(wanted)],
                )

    def image_ids(self, prefix: str) -> list[str]:
        """The ids of the images whose id starts with ``prefix`` (taken literally), in list order."""
        rows = self._query("SELECT id FROM images WHERE substr(id, 1, ?) = ? ORDER BY position", (len(prefix), prefix))
        return [str(row["id"]) for row in rows]

    def find_image(self, source_id: str, slice_index: int | None) -> ImageRecord | None:
        """The image made from a source (and slice), if registered."""
        rows = self._query(
            "SELECT id FROM images WHERE source_id = ? AND slice_index IS ?",
            (source_id, slice_index),
        )
        return self.get_image(rows[0]["id"]) if rows else None

    @staticmethod
    def _insert_image_data(connection: sqlite3.Connection, image_id: str, data: ImageData) -> None:
        height, width = int(data.pixels.shape[-2]), int(data.pixels.shape[-1])
        connection.execute(
            "INSERT OR IGNORE INTO image_data (image_id, pixels, display_png, geometry, height, width)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                image_id,
                array_to_npy(np.asarray(data.pixels, dtype=np.float32)),
                data.display_png,
                json.dumps(data.geometry),
                height,
                width,
            ),
        )

    def set_image_data(self, image_id: str, data: ImageData) -> None:
        """Store the decoded pixels of a lazily registered image (first writer wins)."""
        with self.transaction() as connection:
            self._insert_image_data(connection, image_id, data)

    def get_image_data(self, image_id: str) -> ImageData | None:
        """The stored pixels of an image, or ``None`` when not materialised yet."""
        rows = self._query("SELECT pixels, display_png, geometry FROM image_data WHERE image_id = ?", (image_id,))
        if not rows:
            return None
        row = rows[0]
        return ImageData(npy_to_array(row["pixels"]), bytes(row["display_png"]), json.loads(row["geometry"]))

    _IMAGE_SELECT = """
        SELECT i.*, d.height AS height, d.width AS width, d.image_id IS NOT NULL AS materialised,
               s.status AS session_status,
               (SELECT COUNT(*) FROM clicks c WHERE c.session_id = s.id AND c.removed IS NULL) AS session_clicks
        FROM images i
        LEFT JOIN image_data d ON d.image_id = i.id
        LEFT JOIN sessions s ON s.id = (SELECT MAX(id) FROM sessions WHERE image_id = i.id)
    """

    @staticmethod
    def _image_from_row(row: sqlite3.Row) -> ImageRecord:
        status: ImageStatus = "new"
        if row["session_status"] == "done":
            status = "done"
        elif row["session_status"] == "active" and row["session_clicks"]:
            status = "in_progress"
        return ImageRecord(
            id=row["id"],
            name=row["name"],
            origin=row["origin"],
            task=row["task"],
            source_id=row["source_id"],
            slice_index=row["slice_index"],
            position=row["position"],
            status=status,
            clicks=int(row["session_clicks"] or 0),
            materialised=bool(row["materialised"]),
            height=row["height"],
            width=row["width"],
        )

    def get_image(self, image_id: str) -> ImageRecord | None:
        """An image with its status, or ``None``."""
        rows = self._query(self._IMAGE_SELECT + " WHERE i.id = ?", (image_id,))
        return self._image_from_row(rows[0]) if rows else None

    def list_images(self) -> list[ImageRecord]:
        """All images in list order, with status and click counts."""
        return [self._image_from_row(row) for row in self._query(self._IMAGE_SELECT + " ORDER BY i.position")]

    # ------------------------------------------------------------------ sessions and clicks

    @staticmethod
    def _session_from_row(row: sqlite3.Row) -> SessionRecord:
        return SessionRecord(
            id=row["id"],
            image_id=row["image_id"],
            client_id=row["client_id"],
            strategy=row["strategy"],
            status=row["status"],
            started=row["started"],
            finished=row["finished"],
            model_version_start=row["model_version_start"],
            model_version_end=row["model_version_end"],
        )

    def latest_session(self, image_id: str) -> SessionRecord | None:
        """The most recent session of an image (active or done), or ``None``."""
        rows = self._query("SELECT * FROM sessions WHERE image_id = ? ORDER BY id DESC LIMIT 1", (image_id,))
        return self._session_from_row(rows[0]) if rows else None

    def get_session(self, session_id: int) -> SessionRecord | None:
        """A session by id."""
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return self._session_from_row(rows[0]) if rows else None

    def start_session(self, image_id: str, client_id: str, strategy: str, model_version: int) -> SessionRecord:
        """Start a new active session of an image.

        Raises:
            ValueError: If the image already has an active session.
        """
        with self.transaction() as connection:
            active = connection.execute(
                "SELECT id FROM sessions WHERE image_id = ? AND status = 'active'", (image_id,)
            ).fetchone()
            if active:
                raise ValueError(f"image {image_id!r} already has an active session ({active['id']})")
            cursor = connection.execute(
                "INSERT INTO sessions (image_id, client_id, strategy, status, started, model_version_start)"
                " VALUES (?, ?, ?, 'active', ?, ?)",
                (image_id, client_id, strategy, utc_now(), model_version),
            )
            session_id = int(cursor.lastrowid or 0)
        session = self.get_session(session_id)
        assert session is not None
        return session

    def add_click(self, click: ClickRecord, original_mask: np.ndarray | None = None) -> ClickRecord:
        """Store a click (and, for the first click of a session, the model's ``original`` mask).

        Returns:
            The click with its row id.
        """
        created = utc_now()
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO clicks (session_id, row, col, label, created, forward_s, update_s, model_version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    click.session_id,
                    click.row,
                    click.col,
                    click.label,
                    created,
                    click.forward_s,
                    click.update_s,
                    click.model_version,
                ),
            )
            if original_mask is not None:
                image_id = connection.execute(
                    "SELECT image_id FROM sessions WHERE id = ?", (click.session_id,)
                ).fetchone()["image_id"]
                connection.execute(
                    "INSERT OR REPLACE INTO masks (image_id, session_id, tag, png, model_version, created)"
                    " VALUES (?, ?, 'original', ?, ?, ?)",
                    (image_id, click.session_id, encode_label_png(original_mask), click.model_version, created),
                )
        return ClickRecord(
            id=int(cursor.lastrowid or 0),
            session_id=click.session_id,
            row=click.row,
            col=click.col,
            label=click.label,
            created=created,
            forward_s=click.forward_s,
            update_s=click.update_s,
            model_version=click.model_version,
        )

    def active_clicks(self, session_id: int) -> list[ClickRecord]:
        """The clicks in force of a session, in order."""
        rows = self._query("SELECT * FROM clicks WHERE session_id = ? AND removed IS NULL ORDER BY id", (session_id,))
        return [self._click_from_row(row) for row in rows]

    def all_clicks(self, session_id: int) -> list[ClickRecord]:
        """Every click of a session, removed ones included, in order."""
        rows = self._query("SELECT * FROM clicks WHERE session_id = ? ORDER BY id", (session_id,))
        return [self._click_from_row(row) for row in rows]

    @staticmethod
    def _click_from_row(row: sqlite3.Row) -> ClickRecord:
        return ClickRecord(
            id=row["id"],
            session_id=row["session_id"],
            row=row["row"],
            col=row["col"],
            label=row["label"],
            created=row["created"],
            forward_s=row["forward_s"],
            update_s=row["update_s"],
            model_version=row["model_version"],
            removed=row["removed"],
        )

    def remove_last_click(self, session_id: int) -> ClickRecord | None:
        """Mark the last click in force as undone; returns it, or ``None`` when there is none."""
        return self._undo_click(
            "SELECT * FROM clicks WHERE session_id = ? AND removed IS NULL ORDER BY id DESC LIMIT 1", (session_id,)
        )

    def remove_click(self, click_id: int) -> ClickRecord | None:
        """Mark one click in force as undone (any click of its session, not only the last); returns it, or
        ``None`` when no click in force has that id."""
        return self._undo_click("SELECT * FROM clicks WHERE id = ? AND removed IS NULL", (int(click_id),))

    def _undo_click(self, query: str, parameters: tuple[int, ...]) -> ClickRecord | None:
        """Mark the click ``query`` selects (one row of ``clicks``) as undone; returns it, or ``None``."""
        with self.transaction() as connection:
            row = connection.execute(query, parameters).fetchone()
            if row is None:
                return None
            connection.execute(
                "UPDATE clicks SET removed = 'undo', removed_at = ? WHERE id = ?", (utc_now(), row["id"])
            )
        return self._click_from_row(row)

    def remove_all_clicks(self, session_id: int) -> int:
        """Mark every click in force of a session as reset; returns how many."""
        with self.transaction() as connection:
            cursor = connection.execute(
                "UPDATE clicks SET removed = 'reset', removed_at = ? WHERE session_id = ? AND removed IS NULL",
                (utc_now(), session_id),
            )
            return int(cursor.rowcount)

    def add_correction(self, correction: CorrectionRecord) -> CorrectionRecord:
        """Store a brush or eraser stroke of a session; returns it with its row id and time."""
        created = utc_now()
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO corrections (session_id, label, radius, points, after_clicks, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    correction.session_id,
                    correction.label,
                    correction.radius,
                    json.dumps([list(point) for point in correction.points]),
                    correction.after_clicks,
                    created,
                ),
            )
        return dataclasses.replace(correction, id=int(cursor.lastrowid or 0), created=created)

    def active_corrections(self, session_id: int) -> list[CorrectionRecord]:
        """The strokes in force of a session, oldest first."""
        rows = self._connection.execute(
            "SELECT * FROM corrections WHERE session_id = ? AND removed IS NULL ORDER BY id", (session_id,)
        ).fetchall()
        return [
            CorrectionRecord(
                id=row["id"],
                session_id=row["session_id"],
                label=row["label"],
                radius=row["radius"],
                points=[(int(point[0]), int(point[1])) for point in json.loads(row["points"])],
                after_clicks=row["after_clicks"],
                created=row["created"],
            )
            for row in rows
        ]

    def remove_corrections(self, session_id: int, reason: str, last_only: bool) -> int:
        """Mark the last stroke in force (``last_only``) or all of them as removed (``undo`` / ``reset``)."""
        with self.transaction() as connection:
            where = "session_id = ? AND removed IS NULL"
            if last_only:
                where += " AND id = (SELECT MAX(id) FROM corrections WHERE session_id = ? AND removed IS NULL)"
            parameters: tuple[object, ...] = (reason, utc_now(), session_id) + ((session_id,) if last_only else ())
            cursor = connection.execute(f"UPDATE corrections SET removed = ?, removed_at = ? WHERE {where}", parameters)
            return int(cursor.rowcount)

    def finish_session(self, session_id: int, final_mask: np.ndarray, model_version: int) -> SessionRecord:
        """Mark a session done and store the user's ``final`` mask.

        Raises:
            ValueError: If the session is not active (a finished label is never overwritten).
        """
        finished = utc_now()
        with self.transaction() as connection:
            row = connection.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None or row["status"] != "active":
                raise ValueError(f"session {session_id} is not active; its final mask is kept as it is")
            connection.execute(
                "UPDATE sessions SET status = 'done', finished = ?, model_version_end = ? WHERE id = ?",
                (finished, model_version, session_id),
            )
            connection.execute(
                "INSERT INTO masks (image_id, session_id, tag, png, model_version, created)"
                " VALUES (?, ?, 'final', ?, ?, ?)",
                (row["image_id"], session_id, encode_label_png(final_mask), model_version, finished),
            )
        session = self.get_session(session_id)
        assert session is not None
        return session

    def get_mask(self, image_id: str, tag: MaskTag, session_id: int | None = None) -> StoredMask | None:
        """The latest mask of a tag for an image (or of one session), or ``None``."""
        sql = "SELECT * FROM masks WHERE image_id = ? AND tag = ?"
        parameters: tuple[Any, ...] = (image_id, tag)
        if session_id is not None:
            sql += " AND session_id = ?"
            parameters += (session_id,)
        rows = self._query(sql + " ORDER BY id DESC LIMIT 1", parameters)
        if not rows:
            return None
        row = rows[0]
        return StoredMask(decode_label_png(bytes(row["png"])), row["model_version"], row["session_id"], row["created"])

    def count_masks(self, image_id: str, tag: MaskTag) -> int:
        """How many masks of a tag an image has (every relabel keeps the earlier ones)."""
        return int(
            self._query("SELECT COUNT(*) AS n FROM masks WHERE image_id = ? AND tag = ?", (image_id, tag))[0]["n"]
        )

    def finished_images(self) -> list[FinishedImage]:
        """Every finished session in order of finishing: the learning chart's data."""
        rows = self._query(
            """
            SELECT s.image_id, i.name, s.finished, s.model_version_end,
                   (SELECT COUNT(*) FROM clicks c WHERE c.session_id = s.id AND c.removed IS NULL) AS clicks
            FROM sessions s JOIN images i ON i.id = s.image_id
            WHERE s.status = 'done' ORDER BY s.finished, s.id
            """
        )
        return [
            FinishedImage(row["image_id"], row["name"], int(row["clicks"]), row["finished"], row["model_version_end"])
            for row in rows
        ]

    # ------------------------------------------------------------------ model versions

    def add_model_version(self, record: ModelVersionRecord) -> ModelVersionRecord:
        """Record a saved model version.

        Raises:
            ValueError: If the version number is already recorded.
        """
        try:
            with self.transaction() as connection:
                connection.execute(
                    "INSERT INTO model_versions"
                    " (version, path, sha256, kind, parent_version, image_id, strategy, created, note)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.version,
                        record.path,
                        record.sha256,
                        record.kind,
                        record.parent_version,
                        record.image_id,
                        record.strategy,
                        record.created or utc_now(),
                        record.note,
                    ),
                )
        except sqlite3.IntegrityError as error:
            raise ValueError(f"model version {record.version} is already recorded") from error
        stored = self.get_model_version(record.version)
        assert stored is not None
        return stored

    @staticmethod
    def _version_from_row(row: sqlite3.Row) -> ModelVersionRecord:
        return ModelVersionRecord(
            version=row["version"],
            path=row["path"],
            sha256=row["sha256"],
            kind=row["kind"],
            parent_version=row["parent_version"],
            image_id=row["image_id"],
            strategy=row["strategy"],
            created=row["created"],
            note=row["note"],
        )

    def get_model_version(self, version: int) -> ModelVersionRecord | None:
        """A recorded model version, or ``None``."""
        rows = self._query("SELECT * FROM model_versions WHERE version = ?", (version,))
        return self._version_from_row(rows[0]) if rows else None

    def model_versions(self) -> list[ModelVersionRecord]:
        """Every recorded model version, oldest first."""
        return [self._version_from_row(row) for row in self._query("SELECT * FROM model_versions ORDER BY version")]

    def latest_model_version(self) -> ModelVersionRecord | None:
        """The most recent recorded model version (highest number), or ``None``."""
        rows = self._query("SELECT * FROM model_versions ORDER BY version DESC LIMIT 1")
        return self._version_from_row(rows[0]) if rows else None
