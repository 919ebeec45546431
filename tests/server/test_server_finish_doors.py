"""The HTTP finish endpoint reaches the safety layer: of the shared model, and of a source image's copy."""

from __future__ import annotations

from server_helpers import IMAGE_SIZE, AppFactory

LESION_CLICK = {"row": IMAGE_SIZE // 2, "col": IMAGE_SIZE // 2, "label": 1}


def test_finishing_over_http_reaches_the_safety_layer(make_client: AppFactory) -> None:
    client = make_client(source_domains=["synthetic/T1/case0/*"])
    service = client.app.state.service
    images = {image["name"]: image["id"] for image in client.get("/api/images").json()}
    shared_id, source_id = images["synthetic/T1/case1/1"], images["synthetic/T1/case0/0"]
    for image_id in (shared_id, source_id):
        client.post(f"/api/images/{image_id}/open")
        client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    copy = service.models.source_copy(source_id)
    assert copy is not None and copy.monitor is not None
    assert client.post(f"/api/images/{shared_id}/finish").status_code == 200
    assert service.models.safety.images_seen == 1 and [s.image_id for s in service.models.safety.signals] == [shared_id]
    assert client.post(f"/api/images/{source_id}/finish").status_code == 200
    assert copy.monitor.images_seen == 1 and service.models.safety.images_seen == 1  # its own guard, not the shared one
    assert copy.images == 1 and service.models.source_copy(source_id) is None  # reset and given back
