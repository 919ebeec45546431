"""The mask the page draws comes at the source image's resolution with smooth edges (issue 14).

For a resized image (a fundus photograph) the overlay is the library's ``logits_to_source`` of the live
logits (argmax after resampling), so it has the photograph's shape and differs from nearest-neighbour
upsampling of the model-grid mask only along the mask's boundaries; for a centre padded brain slice the
display picture's pixels are the source's, and the overlay is the mask on that grid.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage
from server_helpers import IMAGE_SIZE, AppFactory, synthetic_fundus_png, write_tiny_fundus_checkpoint

from clickadapt.data.prepare import Geometry, class_map_to_source, logits_to_source, mask_to_source
from clickadapt.server.datastore import decode_label_png
from clickadapt.server.images import CLASS_COLOURS
from clickadapt.server.service import BadRequest

SOURCE_SHAPE = (150, 210)


def overlay_classes(data_url: str) -> np.ndarray:
    """The class map of the page's overlay (``data:`` URL of an RGBA PNG: class colours, transparent background)."""
    payload = base64.b64decode(data_url.split(",", 1)[1])
    rgba = np.asarray(Image.open(io.BytesIO(payload)).convert("RGBA"))
    classes = np.zeros(rgba.shape[:2], np.uint8)
    for index, colour in enumerate(CLASS_COLOURS[1:], start=1):
        classes[(rgba[..., 3] > 0) & np.all(rgba[..., :3] == colour, axis=-1)] = index
    return classes


def boundary_band(grid_mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Source pixels covered by a model-grid cell next to a cell of another class (nearest-neighbour upsampled)."""
    edge = np.zeros(grid_mask.shape, bool)
    for value in np.unique(grid_mask):
        inside = grid_mask == value
        edge |= ndimage.binary_dilation(inside, np.ones((3, 3), bool)) & ~inside
        edge |= inside & ~ndimage.binary_erosion(inside, np.ones((3, 3), bool), border_value=1)
    return mask_to_source(edge.astype(np.uint8), geometry).astype(bool)


@pytest.fixture
def fundus(make_client: AppFactory, tmp_path: Path) -> tuple[TestClient, str]:
    """A server with the tiny fundus model and one uploaded 150 × 210 RGB photograph (its image id)."""
    client = make_client(samples=[], model=str(write_tiny_fundus_checkpoint(tmp_path / "fundus.pt")))
    upload = client.post("/api/uploads?filename=eye.png", content=synthetic_fundus_png(*SOURCE_SHAPE))
    assert upload.status_code == 201, upload.text
    return client, upload.json()["image"]["id"]


def first_click_with_boundaries(client: TestClient, image_id: str) -> dict[str, object]:
    """The view of a first click after the random model's head is shifted so that its classes split the image
    (a random model predicts one class everywhere, and a mask without edges would prove nothing)."""
    click = {"row": 22, "col": 29, "label": 1}
    service = client.app.state.service
    client.post(f"/api/images/{image_id}/clicks", json=click)
    logits = service.sessions.live.get(image_id).session.logits[0]
    with torch.no_grad():
        service.models.state.model.head.bias -= logits.flatten(1).median(dim=1).values
    client.post(f"/api/images/{image_id}/undo")
    view: dict[str, object] = client.post(f"/api/images/{image_id}/clicks", json=click).json()
    return view


def test_the_page_overlay_is_the_resampled_logits_at_the_photographs_size(fundus: tuple[TestClient, str]) -> None:
    client, image_id = fundus
    service = client.app.state.service
    view = first_click_with_boundaries(client, image_id)
    overlay = overlay_classes(str(view["mask_overlay"]))
    assert overlay.shape == SOURCE_SHAPE  # the photograph's, not the 48 × 48 model grid's
    geometry = service.catalogue.geometry(image_id)
    logits = service.sessions.live.get(image_id).session.logits
    expected = logits_to_source(logits[0], geometry).argmax(dim=0).numpy()
    np.testing.assert_array_equal(overlay, expected)  # argmax after resampling, by the library function
    grid = decode_label_png(client.get(f"/api/images/{image_id}/mask.png").content)
    assert grid.shape == (IMAGE_SIZE, IMAGE_SIZE)  # mask.png keeps the geometry of display.png
    blocky = mask_to_source(grid, geometry)
    differs = overlay != blocky
    assert len(np.unique(grid)) > 1 and differs.any()  # edges, and smoother than the staircase…
    assert not differs[~boundary_band(grid, geometry)].any()  # …the same mask everywhere but at its edges


def test_a_brushed_mask_has_smooth_edges_that_differ_only_at_the_boundary(fundus: tuple[TestClient, str]) -> None:
    client, image_id = fundus
    client.post(f"/api/images/{image_id}/clicks", json={"row": 22, "col": 29, "label": 1})
    stroke = {"points": [[24, 24]], "radius": 10, "label": 2}  # a disc of class 2: a round boundary
    view = client.post(f"/api/images/{image_id}/corrections", json=stroke).json()
    overlay = overlay_classes(view["mask_overlay"])
    grid = decode_label_png(client.get(f"/api/images/{image_id}/mask.png").content)
    geometry = client.app.state.service.catalogue.geometry(image_id)
    blocky = mask_to_source(grid, geometry)
    differs = overlay != blocky
    assert overlay.shape == SOURCE_SHAPE and differs.any()  # smoother than the staircase…
    assert not differs[~boundary_band(grid, geometry)].any()  # …and only along the boundary
    assert (overlay == 2).sum() == pytest.approx((blocky == 2).sum(), rel=0.1)  # the same disc
    finished = client.post(f"/api/images/{image_id}/finish").json()
    final = overlay_classes(finished["mask_overlay"])  # a finished image: its stored label, resampled
    np.testing.assert_array_equal(final, class_map_to_source(grid, geometry, 3))


def test_a_padded_brain_slice_gets_the_overlay_on_its_own_pixel_grid(client: TestClient) -> None:
    image_id = client.get("/api/images").json()[0]["id"]
    view = client.post(f"/api/images/{image_id}/clicks", json={"row": 24, "col": 24, "label": 1}).json()
    grid = decode_label_png(client.get(f"/api/images/{image_id}/mask.png").content)
    np.testing.assert_array_equal(overlay_classes(view["mask_overlay"]), grid)


def test_finish_with_a_label_in_the_source_geometry_and_read_it_back(fundus: tuple[TestClient, str]) -> None:
    client, image_id = fundus
    sessions = client.app.state.service.sessions
    sessions.open_image(image_id, "viewer")
    sessions.add_click(image_id, "viewer", 22, 29, "rim")
    with pytest.raises(BadRequest, match="mask has shape"):
        sessions.finish(image_id, "viewer", np.zeros((10, 10), np.uint8))
    with pytest.raises(BadRequest, match="class indices"):
        sessions.finish(image_id, "viewer", np.full(SOURCE_SHAPE, 7, np.uint8))
    label = np.zeros(SOURCE_SHAPE, np.uint8)
    label[40:110, 60:150] = 1
    label[60:90, 90:120] = 2
    view = sessions.finish(image_id, "viewer", label)
    assert view.state == "done"
    stored = sessions.label_at_source(image_id, "final")
    assert stored.shape == SOURCE_SHAPE
    assert (stored == label).mean() > 0.97  # the label through the 48 × 48 grid and back, smooth edges
    assert set(np.unique(stored)) == {0, 1, 2}
