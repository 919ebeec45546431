"""Issue 16, the API behind the page's new tools: brush and eraser corrections, releasing and taking over an
image, and the warning for uploads that do not fit the model's task."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from server_helpers import IMAGE_SIZE, AppFactory, store_snapshot

from clickadapt.data.preprocess import preprocess_fundus_image, resize_channels, rgb_to_unit_float
from clickadapt.server.images import paint_stroke, prepare_image
from clickadapt.tasks import FUNDUS

LESION_CLICK = {"row": IMAGE_SIZE // 2, "col": IMAGE_SIZE // 2, "label": 1}


def mask_of(client: TestClient, image_id: str, tag: str = "current") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/mask.png?tag={tag}").content)))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_paint_stroke_fills_a_thick_polyline() -> None:
    painted = paint_stroke(np.zeros((20, 20), np.int64), [(2, 2), (2, 17)], 1.5, 1)
    assert painted[2, 2:18].all() and painted[1, 5] and painted[3, 5] and not painted[5, 5]
    erased = paint_stroke(painted, [(2, 10)], 2.0, 0)
    assert not erased[2, 9:12].any() and erased[2, 3]


def test_brush_and_eraser_are_corrections_and_the_finish_learns_from_the_edited_mask(
    client: TestClient, tmp_path: Path
) -> None:
    image_id = client.get("/api/images").json()[0]["id"]
    url = f"/api/images/{image_id}/corrections"
    refused = client.post(url, json={"points": [[3, 3]], "radius": 2, "label": 1})
    assert refused.status_code == 409 and "no click" in refused.json()["detail"]
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    before = mask_of(client, image_id)
    store = tmp_path / "store"
    snapshot = store_snapshot(store)
    outside = client.post(url, json={"points": [[3, 3], [3, 99]], "radius": 2})
    assert outside.status_code == 400 and "outside the image" in outside.json()["detail"]
    assert store_snapshot(store) == snapshot
    # A far false positive a click could not remove: paint it away, and paint a stripe of lesion.
    view = client.post(url, json={"points": [[2, 2], [2, 40]], "radius": 1.5, "label": "lesion"}).json()
    assert view["corrections"] == 1 and len(view["clicks"]) == 1
    painted = mask_of(client, image_id)
    assert painted[2, 2:41].all()
    view = client.post(url, json={"points": [[2, 10], [2, 20]], "radius": 1.5, "label": 0}).json()
    assert view["corrections"] == 2
    edited = mask_of(client, image_id)
    assert not edited[2, 10:21].any() and edited[2, 30]
    # Undo takes back the latest action: the eraser stroke, not the click.
    undone = client.post(f"/api/images/{image_id}/undo").json()
    assert undone["corrections"] == 1 and len(undone["clicks"]) == 1 and undone["message"] == "brush stroke undone"
    np.testing.assert_array_equal(mask_of(client, image_id), painted)
    client.post(url, json={"points": [[2, 10], [2, 20]], "radius": 1.5, "label": 0})
    finished = client.post(f"/api/images/{image_id}/finish").json()
    assert finished["state"] == "done"
    np.testing.assert_array_equal(mask_of(client, image_id, "final"), edited)  # the label is the edited mask
    service = client.app.state.service
    rows = service.store._connection.execute("SELECT label, removed FROM corrections ORDER BY id").fetchall()
    assert [tuple(row) for row in rows] == [(1, None), (0, "undo"), (0, None)]
    assert not np.array_equal(before, edited)


def test_the_after_image_update_receives_the_edited_mask(client: TestClient) -> None:
    service = client.app.state.service
    seen: list[np.ndarray] = []
    # The shared model announces every finished image (after the after-image update) with the mask it learnt from.
    service.models.state.add_finish_listener(lambda finished: seen.append(finished.final_mask))
    image_id = client.get("/api/images").json()[1]["id"]
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    client.post(f"/api/images/{image_id}/corrections", json={"points": [[5, 5]], "radius": 3, "label": 1})
    client.post(f"/api/images/{image_id}/finish")
    assert len(seen) == 1 and seen[0][5, 5] == 1


def test_corrections_survive_a_restart_and_reset_removes_them(make_client: AppFactory) -> None:
    first = make_client()
    image_id = first.get("/api/images").json()[0]["id"]
    first.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK)
    first.post(f"/api/images/{image_id}/corrections", json={"points": [[1, 1], [1, 30]], "radius": 1, "label": 1})
    edited = mask_of(first, image_id)
    first.__exit__(None, None, None)
    again = make_client()
    view = again.post(f"/api/images/{image_id}/open").json()
    assert view["corrections"] == 1
    np.testing.assert_array_equal(mask_of(again, image_id), edited)
    reset = again.post(f"/api/images/{image_id}/reset").json()
    assert reset["corrections"] == 0 and reset["clicks"] == []


def test_a_released_image_opens_at_once_in_another_tab_and_one_can_take_over(client: TestClient) -> None:
    image_id = client.get("/api/images").json()[0]["id"]
    old, new = {"X-Client-Id": "tab-old"}, {"X-Client-Id": "tab-new"}
    client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK, headers=old)
    refused = client.post(f"/api/images/{image_id}/open", headers=new)
    detail = refused.json()["detail"]
    assert refused.status_code == 409 and "open in another browser session" in detail
    assert image_id not in detail and "take it over" in detail  # the image's name, no internal id
    # The closing tab's beacon (no headers possible: the client id is in the query).
    assert client.post(f"/api/images/{image_id}/release?client=tab-old").status_code == 204
    opened = client.post(f"/api/images/{image_id}/open", headers=new)
    assert opened.status_code == 200 and len(opened.json()["clicks"]) == 1
    # Taking over without a release.
    assert client.post(f"/api/images/{image_id}/open", headers=old).status_code == 409
    taken = client.post(f"/api/images/{image_id}/open", json={"take_over": True}, headers=old).json()
    assert "taken over" in taken["message"] and len(taken["clicks"]) == 1
    assert client.post(f"/api/images/{image_id}/clicks", json=LESION_CLICK, headers=new).status_code == 409


def test_uploads_that_do_not_fit_the_task_carry_a_warning(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = rng.integers(120, 255, (64, 64))
    colour[..., 1] = rng.integers(20, 90, (64, 64))
    answer = client.post("/api/uploads?filename=fundus.png", content=png(colour)).json()
    assert "colour photograph" in answer["warning"] and "grey brain" in answer["warning"]
    assert "--channel N" in answer["warning"]  # the way out for stacked MR sequences
    grey = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    assert client.post("/api/uploads?filename=mri.png", content=png(grey)).json()["warning"] is None
    grey_rgb = np.repeat(grey[..., None], 3, axis=-1)  # a grey picture saved as RGB is not colour
    assert client.post("/api/uploads?filename=mri-rgb.png", content=png(grey_rgb)).json()["warning"] is None
    labels = np.zeros((30, 30, 8), np.uint8)  # a segmentation uploaded as if it were a scan
    labels[10:20, 10:20, 2:6] = 1
    answer = client.post("/api/uploads?filename=seg.nii.gz", content=nifti(labels)).json()
    assert answer["warning"].startswith("seg.nii.gz looks like a label volume")
    scan = (labels * 150 + rng.normal(100, 10, labels.shape)).astype(np.float32)
    assert client.post("/api/uploads?filename=flair.nii.gz", content=nifti(scan)).json()["warning"] is None


def nifti(volume: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes())


def test_fundus_preparation_gives_the_readers_numbers() -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    prepared = prepare_image(photo, FUNDUS, 64)
    np.testing.assert_allclose(prepared.pixels, preprocess_fundus_image(photo, 64), atol=1e-5)
    expected = np.round(resize_channels(rgb_to_unit_float(photo), 64).clip(0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(prepared.display, expected)


def test_a_huge_brain_picture_is_normalised_like_the_reader_does() -> None:
    from clickadapt.data.preprocess import preprocess_brain_slice
    from clickadapt.server.images import guess_brain_mask, to_grey
    from clickadapt.tasks import BRAIN

    rng = np.random.default_rng(2)
    picture = rng.normal(100, 20, (2100, 2100)).clip(1, 255).astype(np.uint8)
    picture[:300] = 0  # a background band
    prepared = prepare_image(picture, BRAIN, 64)  # 4.4 M pixels: statistics from a subsample
    grey = to_grey(picture)
    exact = preprocess_brain_slice(grey, guess_brain_mask(grey), 64)
    np.testing.assert_allclose(prepared.pixels, exact, atol=0.02)
