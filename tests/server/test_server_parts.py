"""The service's three parts share one lock: model updates, rollbacks and uploads wait for a click in progress."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from server_helpers import synthetic_fundus_png

from clickadapt.server.service import AnnotationService


def test_the_three_parts_share_the_service_lock(client: TestClient) -> None:
    service: AnnotationService = client.app.state.service
    assert service.catalogue.lock is service.models.lock is service.sessions.lock is service.lock


def test_every_part_waits_while_the_service_lock_is_held(client: TestClient) -> None:
    service: AnnotationService = client.app.state.service
    image_id = service.catalogue.list_images()[0].id
    calls = {
        "click": lambda: service.sessions.add_click(image_id, "tab", 24, 24, 1),
        "rollback": lambda: service.models.rollback(0),
        "settings": lambda: service.models.set_model_settings(adaptation=False),
        "upload": lambda: service.catalogue.upload(synthetic_fundus_png(48, 48), "eye.png"),
    }
    for name, call in calls.items():
        done = threading.Event()
        with service.lock:  # as a click in progress holds it
            thread = threading.Thread(target=lambda call=call, done=done: (call(), done.set()))
            thread.start()
            assert not done.wait(0.3), f"{name} ran while the service lock was held"
        thread.join(60)
        assert done.is_set(), f"{name} did not run once the lock was free"
