"""The SQLite datastore: statuses, clicks with undo history, original/final masks, model versions, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clickadapt.server.datastore import (
    ClickRecord,
    Datastore,
    DatastoreError,
    ImageData,
    ModelVersionRecord,
    SourceRecord,
    decode_label_png,
    encode_label_png,
)


def make_click(session_id: int, row: int, version: int = 0) -> ClickRecord:
    return ClickRecord(0, session_id, row, 2, 1, "", forward_s=0.01, update_s=0.0, model_version=version)


def image_data(value: float = 1.0) -> ImageData:
    return ImageData(
        np.full((1, 8, 8), value, np.float32), b"png", {"kind": "pad-crop", "source_shape": [8, 8], "size": 8}
    )


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    store = Datastore(tmp_path)
    assert store.path == tmp_path / "clickadapt.sqlite"
    connection = sqlite3.connect(store.path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.commit()
    connection.close()
    store.close()
    with pytest.raises(DatastoreError, match="schema version 99"):
        Datastore(tmp_path)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clickadapt.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatastoreError, match="not a usable SQLite database"):
        Datastore(tmp_path)


def test_status_follows_sessions_and_clicks(tmp_path: Path) -> None:
    store = Datastore(tmp_path)
    store.add_image("a", "a.png", "demo", "brain", data=image_data())
    store.add_image("b", "b.png", "demo", "brain", data=image_data(2.0))
    assert [(i.id, i.position, i.status) for i in store.list_images()] == [("a", 0, "new"), ("b", 1, "new")]
    session = store.start_session("a", "tab-1", "oaims", model_version=3)
    assert store.get_image("a").status == "new"  # opened but not clicked
    with pytest.raises(ValueError, match="already has an active session"):
        store.start_session("a", "tab-2", "oaims", model_version=3)
    store.add_click(make_click(session.id, 1), original_mask=np.eye(8, dtype=np.int64))
    store.add_click(make_click(session.id, 2, version=4))
    image = store.get_image("a")
    assert (image.status, image.clicks) == ("in_progress", 2)
    undone = store.remove_last_click(session.id)
    assert undone is not None and undone.row == 2
    assert [c.row for c in store.active_clicks(session.id)] == [1]
    assert [(c.row, c.removed) for c in store.all_clicks(session.id)] == [(1, None), (2, "undo")]  # history kept
    assert store.remove_all_clicks(session.id) == 1
    assert store.remove_last_click(session.id) is None
    assert store.get_image("a").status == "new"
    store.add_click(make_click(session.id, 5, version=4), original_mask=np.ones((8, 8), np.int64))
    final = np.zeros((8, 8), np.int64)
    final[2:4, 2:4] = 1
    done = store.finish_session(session.id, final, model_version=6)
    assert (done.status, done.model_version_end) == ("done", 6)
    assert (store.get_image("a").status, store.get_image("a").clicks) == ("done", 1)
    np.testing.assert_array_equal(store.get_mask("a", "final").mask, final)
    np.testing.assert_array_equal(store.get_mask("a", "original").mask, np.ones((8, 8)))
    with pytest.raises(ValueError, match="not active; its final mask is kept"):
        store.finish_session(session.id, np.ones((8, 8), np.int64), model_version=7)
    np.testing.assert_array_equal(store.get_mask("a", "final").mask, final)
    assert [(p.image_id, p.clicks, p.model_version) for p in store.finished_images()] == [("a", 1, 6)]


def test_everything_survives_reopening(tmp_path: Path) -> None:
    store = Datastore(tmp_path)
    store.add_source(SourceRecord("s1", "vol.nii.gz", "upload", "uploads/x.nii.gz", "volume", 12))
    store.add_image("s1-s3", "vol [slice 3]", "upload", "brain", "s1", 3, image_data(5.0))
    session = store.start_session("s1-s3", "tab", "post", 0)
    store.add_click(make_click(session.id, 4))
    store.add_model_version(ModelVersionRecord(0, "models/v0.pt", "abc", "initial", None, None, "post", ""))
    store.add_event("rollback", {"to_version": 0})
    store.set_meta("strategy", "post")
    store.close()

    reopened = Datastore(tmp_path)
    assert reopened.get_source("s1") == SourceRecord("s1", "vol.nii.gz", "upload", "uploads/x.nii.gz", "volume", 12)
    assert reopened.find_image("s1", 3).id == "s1-s3"
    assert reopened.find_image("s1", 4) is None
    data = reopened.get_image_data("s1-s3")
    np.testing.assert_array_equal(data.pixels, np.full((1, 8, 8), 5.0, np.float32))
    assert data.geometry["kind"] == "pad-crop"
    assert [c.row for c in reopened.active_clicks(reopened.latest_session("s1-s3").id)] == [4]
    assert reopened.latest_model_version().version == 0
    assert reopened.events("rollback")[0]["details"] == {"to_version": 0}
    assert reopened.get_meta("strategy") == "post"
    with pytest.raises(ValueError, match="model version 0 is already recorded"):
        reopened.add_model_version(ModelVersionRecord(0, "models/v0.pt", "abc", "initial", None, None, "post", ""))


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = Datastore(tmp_path)
    store.add_image("a", "a.png", "demo", "brain")
    with pytest.raises(RuntimeError), store.transaction() as connection:
        connection.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        raise RuntimeError("boom")
    assert store.get_meta("x") is None


def test_label_png_round_trip() -> None:
    mask = np.random.default_rng(0).integers(0, 3, (17, 9))
    np.testing.assert_array_equal(decode_label_png(encode_label_png(mask)), mask)
