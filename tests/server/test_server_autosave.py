"""The autosave is written in the background after a click's answer: it never delays the answer, it always
ends up holding the newest weights, and shutting down waits for it (a saved version is never lost)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from server_helpers import AppFactory, synthetic_samples

from clickadapt.adaptation.model_state import ModelState
from clickadapt.models.checkpoint import load_checkpoint
from clickadapt.server.datastore import Datastore
from clickadapt.server.service import AnnotationService
from clickadapt.server.service import autosave as autosave_module
from clickadapt.server.service.autosave import AutosaveWriter
from clickadapt.server.service.registry import AUTOSAVE_NAME, MODELS_FOLDER
from clickadapt.server.settings import ServerSettings

CLICKS = [(24, 24, 1), (30, 20, 1), (5, 5, 0), (40, 40, 0)]


class GatedSave:
    """Stands in for ``save_checkpoint`` in the writer: blocks until released, counts the files written."""

    def __init__(self, fail_first: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.writes = 0
        self.fail_first = fail_first
        self._real = autosave_module.save_checkpoint

    def __call__(self, path: Path, model: torch.nn.Module, meta: Any) -> str:
        self.started.set()
        assert self.release.wait(30), "the test never released the autosave"
        if self.fail_first:
            self.fail_first = False
            raise OSError(28, "No space left on device")
        self.writes += 1
        return self._real(path, model, meta)


@pytest.fixture
def gated_save(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedSave]:
    gate = GatedSave()
    monkeypatch.setattr(autosave_module, "save_checkpoint", gate)
    yield gate
    gate.release.set()  # never leave a writer thread waiting


def make_service(tiny_checkpoint: Path, store: Path, **settings: Any) -> AnnotationService:
    return AnnotationService(
        ServerSettings(model=str(tiny_checkpoint), store=store, strategy="oaims", **settings), synthetic_samples(2)
    )


def click_all(service: AnnotationService, clicks: list[tuple[int, int, int]] = CLICKS) -> str:
    image_id = service.catalogue.list_images()[0].id
    for row, col, label in clicks:
        service.sessions.add_click(image_id, "tab", row, col, label)
    return image_id


def live_weights(service: AnnotationService) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in service.models.state.model.state_dict().items()}


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name


def test_the_click_answer_does_not_wait_for_the_autosave(
    tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave
) -> None:
    service = make_service(tiny_checkpoint, tmp_path / "store")
    try:
        start_version = service.models.state.version
        click_all(service, CLICKS[:2])  # the write is blocked, yet the clicks are answered and stored
        assert service.models.state.version > start_version
        assert gated_save.started.wait(30)
        assert service.models.autosaved_version == start_version
        assert service.models.model_info().autosaved_version == start_version
        assert not service.models.flush_autosave(timeout=0.05)
        gated_save.release.set()
        assert service.models.flush_autosave(timeout=30)
        assert service.models.autosaved_version == service.models.state.version
    finally:
        gated_save.release.set()
        service.close()


def test_shutting_down_writes_the_pending_autosave_and_a_restart_resumes_from_it(
    tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave
) -> None:
    store = tmp_path / "store"
    service = make_service(tiny_checkpoint, store)
    click_all(service)
    version, weights = service.models.state.version, live_weights(service)
    assert gated_save.started.wait(30)
    closing = threading.Thread(target=service.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive(), "close() must wait for the autosave being written"
    gated_save.release.set()
    closing.join(30)
    assert not closing.is_alive()

    saved = load_checkpoint(store / MODELS_FOLDER / AUTOSAVE_NAME)
    assert saved.meta.version == version
    assert_same_weights(saved.model, weights)
    restarted = make_service(tiny_checkpoint, store)
    try:
        assert restarted.models.state.version == version
        assert restarted.store.get_meta("autosave_version") == str(version)
        assert_same_weights(restarted.models.state.model, weights)
    finally:
        restarted.close()


def test_clicks_made_during_a_write_are_merged_into_one_write_of_the_newest_weights(
    tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave
) -> None:
    store = tmp_path / "store"
    service = make_service(tiny_checkpoint, store)
    try:
        start_version = service.models.state.version
        image_id = click_all(service, CLICKS[:2])  # the first update: its write starts and is held
        assert gated_save.started.wait(30)
        for row, col, label in CLICKS[2:]:  # more updates while it is held
            service.sessions.add_click(image_id, "tab", row, col, label)
        gated_save.release.set()
        assert service.models.flush_autosave(timeout=30)
        version, weights = service.models.state.version, live_weights(service)
        assert service.models.autosaved_version == version
        assert gated_save.writes == 2 and version - start_version >= 3  # the held one, then the newest
        assert_same_weights(load_checkpoint(store / MODELS_FOLDER / AUTOSAVE_NAME).model, weights)
    finally:
        service.close()


def test_a_failed_autosave_keeps_the_previous_file_and_the_next_click_saves_again(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = GatedSave(fail_first=True)
    gate.release.set()
    monkeypatch.setattr(autosave_module, "save_checkpoint", gate)
    service = make_service(tiny_checkpoint, tmp_path / "store")
    try:
        start_version = service.models.state.version
        with service.models.state.lock:  # the writer waits, then makes one attempt with the newest weights
            image_id = click_all(service, CLICKS[:2])
        assert service.models.flush_autosave(timeout=30)
        assert service.models._autosave.failures == 1
        assert service.models.autosaved_version == start_version
        assert not (tmp_path / "store" / MODELS_FOLDER / AUTOSAVE_NAME).exists()
        service.sessions.add_click(image_id, "tab", 40, 40, 0)
        assert service.models.flush_autosave(timeout=30)
        assert service.models.autosaved_version == service.models.state.version
    finally:
        service.close()


def test_without_autosave_nothing_is_written(tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave) -> None:
    store = tmp_path / "store"
    service = make_service(tiny_checkpoint, store, autosave_every_click=False)
    try:
        click_all(service)
        assert service.models.model_info().autosaved_version is None
    finally:
        service.close()
    assert not gated_save.started.is_set()
    assert not (store / MODELS_FOLDER / AUTOSAVE_NAME).exists()


def test_the_writer_copies_the_weights_under_the_model_lock(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """While another thread holds the model state's lock (an update in progress), nothing is copied."""
    service = make_service(tiny_checkpoint, tmp_path / "store")
    try:
        with service.models.state.lock:  # re-entrant: the clicks of this thread go through
            click_all(service, CLICKS[:2])
            assert not service.models.flush_autosave(timeout=0.2)
            assert service.models.autosaved_version < service.models.state.version
        assert service.models.flush_autosave(timeout=30)
        assert service.models.autosaved_version == service.models.state.version
    finally:
        service.close()


def writer_on_tiny_model(tiny_checkpoint: Path, tmp_path: Path, **timing: float) -> AutosaveWriter:
    loaded = load_checkpoint(tiny_checkpoint)
    state = ModelState(loaded.model, loaded.task)
    return AutosaveWriter(
        state, tmp_path / "autosave.pt", lambda _version: loaded.meta, lambda _version: None, 0, **timing
    )


def test_the_writer_waits_for_a_quiet_moment_between_clicks(
    tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave
) -> None:
    writer = writer_on_tiny_model(tiny_checkpoint, tmp_path, quiet_s=0.5, max_delay_s=60.0)
    gated_save.release.set()
    try:
        for version in range(1, 7):  # clicks in quick succession: no write meanwhile
            writer.state.version = version  # as a click's update does
            writer.request(version)
            time.sleep(0.05)
        assert not gated_save.started.is_set()
        assert gated_save.started.wait(30)  # once they stop
        assert writer.flush(30) and writer.saved_version == 6 and gated_save.writes == 1
    finally:
        writer.close()


def test_the_writer_does_not_wait_for_a_quiet_moment_for_ever(
    tiny_checkpoint: Path, tmp_path: Path, gated_save: GatedSave
) -> None:
    writer = writer_on_tiny_model(tiny_checkpoint, tmp_path, quiet_s=60.0, max_delay_s=0.3)
    gated_save.release.set()
    try:
        start = time.monotonic()
        version = 0
        while not gated_save.started.is_set() and time.monotonic() - start < 30:
            version += 1
            writer.state.version = version
            writer.request(version)
            time.sleep(0.02)
        assert gated_save.started.is_set() and time.monotonic() - start >= 0.3
    finally:
        writer.close()
    assert writer.saved_version == version  # closing wrote the newest one


def test_a_finish_that_saves_a_version_asks_for_no_autosave_and_a_restart_resumes_from_that_version(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    service = make_service(tiny_checkpoint, store)
    image_id = click_all(service)
    assert service.models.flush_autosave(timeout=30)
    autosaved = service.models.autosaved_version
    service.sessions.finish(image_id, "tab")
    version, weights = service.models.state.version, live_weights(service)
    assert service.store.get_model_version(version) is not None  # the finish saved v<version>.pt
    assert service.models._autosave.requested_version == autosaved  # so no second copy of the same weights
    service.close()
    restarted = make_service(tiny_checkpoint, store)
    try:
        assert restarted.models.state.version == version
        assert_same_weights(restarted.models.state.model, weights)
    finally:
        restarted.close()


def test_scheduling_an_autosave_after_a_click_queries_no_datastore(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The saved versions are kept in memory: a click that schedules an autosave runs no SQL statement."""
    service = make_service(tiny_checkpoint, tmp_path / "store")
    statements: list[str] = []
    try:
        models = service.models
        with models.state.lock:  # the writer waits: only the scheduling is observed
            models.store._connection.set_trace_callback(statements.append)
            for _ in range(3):
                models.state.version += 1  # as a click's update does
                models.autosave()
            models.store._connection.set_trace_callback(None)
            assert statements == []
            assert models._autosave.requested_version == models.state.version
        assert models.flush_autosave(timeout=30)
        assert models.autosaved_version == models.state.version
    finally:
        service.close()


def test_a_saved_version_is_known_without_the_datastore_so_it_is_not_autosaved_again(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    service = make_service(tiny_checkpoint, tmp_path / "store")
    try:
        image_id = click_all(service, CLICKS[:2])
        assert service.models.flush_autosave(timeout=30)
        service.models.save_version()
        requested = service.models._autosave.requested_version
        service.models.autosave()  # the current weights are saved version v<N>.pt: nothing to ask
        assert service.models._autosave.requested_version == requested
        service.sessions.add_click(image_id, "tab", 40, 40, 0)  # a new update is autosaved again
        assert service.models._autosave.requested_version == service.models.state.version > requested
    finally:
        service.close()
    restarted = make_service(tiny_checkpoint, tmp_path / "store")  # the versions saved are read back at start
    try:
        saved = [record.version for record in restarted.store.model_versions()]
        assert restarted.models._saved_versions == set(saved)
        assert restarted.models._latest_saved is not None and restarted.models._latest_saved.version == saved[-1]
    finally:
        restarted.close()


def test_a_malformed_autosave_record_is_ignored_with_a_warning(
    tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No placeholder version: a record that is not a version number is reported, not turned into one."""
    store = tmp_path / "store"
    service = make_service(tiny_checkpoint, store)
    click_all(service)
    service.close()
    assert (store / MODELS_FOLDER / AUTOSAVE_NAME).is_file()
    datastore = Datastore(store)
    datastore.set_meta("autosave_version", "")  # e.g. edited by hand
    latest = datastore.latest_model_version()
    datastore.close()
    assert latest is not None
    with caplog.at_level("WARNING", logger="clickadapt.server.service.registry"):
        restarted = make_service(tiny_checkpoint, store)
    try:
        assert restarted.models.state.version == latest.version  # the latest saved version, not the autosave
        assert "autosave_version ''" in caplog.text
    finally:
        restarted.close()


def test_a_store_whose_first_start_stopped_before_its_initial_version_starts_afresh(
    tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first start records the base model, then fails (here: a wrong --sentinel folder) before it saves the
    initial version; the next start neither trips over the missing version nor refuses the store."""
    store = tmp_path / "store"
    with pytest.raises(FileNotFoundError):
        make_service(tiny_checkpoint, store, sentinel=tmp_path / "no-such-folder")
    with caplog.at_level("WARNING", logger="clickadapt.server.service.registry"):
        service = make_service(tiny_checkpoint, store)
    try:
        base_version = load_checkpoint(tiny_checkpoint).meta.version
        assert service.models.state.version == base_version
        assert [(record.version, record.kind) for record in service.store.model_versions()] == [
            (base_version, "initial")
        ]
        assert "no saved model version" in caplog.text
        click_all(service, CLICKS[:2])  # and it works as any store
        assert service.models.flush_autosave(timeout=30)
        assert service.models.autosaved_version == service.models.state.version
    finally:
        service.close()


def test_the_api_returns_null_not_a_placeholder_when_autosave_is_off(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(autosave_every_click=False)
    assert client.get("/api/model").json()["autosaved_version"] is None
    field = client.get("/openapi.json").json()["components"]["schemas"]["ModelInfo"]["properties"]["autosaved_version"]
    assert {"type": "null"} in field["anyOf"] and "null when autosave is off" in field["description"]
    model = make_client(store=tmp_path / "other").get("/api/model").json()
    assert model["autosaved_version"] == model["version"] == model["saved_version"]  # nothing newer yet
