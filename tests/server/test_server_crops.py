"""Cropping a photograph to its region of interest (the page's crop tool, ``POST /api/images/{id}/crop``)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_helpers import IMAGE_SIZE, AppFactory, synthetic_fundus_png, write_tiny_fundus_checkpoint

from clickadapt.data.prepare import mask_to_model, prepare_image
from clickadapt.server.images import REFERENCE_COLOURS
from clickadapt.server.service.crops import MIN_CROP_SIDE, ImageCrop, cut_from_picture, embed_in_picture, square_box
from clickadapt.tasks import FUNDUS

HEIGHT, WIDTH = 150, 210
"""The synthetic photograph's size (its optic disc is centred near row 68, column 126)."""


@pytest.fixture
def fundus(make_client: AppFactory, tmp_path: Path) -> TestClient:
    return make_client(samples=[], model=str(write_tiny_fundus_checkpoint(tmp_path / "fundus.pt")))


def upload_photograph(client: TestClient) -> tuple[str, np.ndarray]:
    payload = synthetic_fundus_png(HEIGHT, WIDTH)
    response = client.post("/api/uploads?filename=eye.png", content=payload)
    assert response.status_code == 201, response.text
    return response.json()["image"]["id"], np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def grid(rows: float, cols: float) -> tuple[int, int]:
    """A picture point in ``display.png`` pixels of the uncropped photograph (stretched onto the grid)."""
    return round(rows * IMAGE_SIZE / HEIGHT), round(cols * IMAGE_SIZE / WIDTH)


# ------------------------------------------------------------------ the geometry


def test_the_square_is_centred_on_the_box_as_long_as_its_longer_side() -> None:
    assert square_box(40, 100, 80, 160, (150, 210)) == (30, 100, 60)  # 40 × 60 box → 60 px, centred
    assert square_box(0, 0, 20, 20, (150, 210)) == (0, 0, 20)


def test_the_square_is_moved_inside_the_picture_and_at_most_its_shorter_side() -> None:
    assert square_box(130, 190, 150, 210, (150, 210)) == (130, 190, 20)
    assert square_box(140, 200, 170, 240, (150, 210)) == (110, 170, 40)  # reaches out: moved back inside
    assert square_box(-50, -50, 400, 400, (150, 210)) == (0, 60, 150)  # too large: the short side, moved inside


def test_an_empty_or_tiny_box_is_refused_naming_why() -> None:
    with pytest.raises(ValueError, match="empty"):
        square_box(10, 10, 10, 40, (150, 210))
    with pytest.raises(ValueError, match=f"at least {MIN_CROP_SIDE}"):
        square_box(10, 10, 15, 15, (150, 210))


def test_masks_go_between_the_crop_and_the_whole_picture() -> None:
    crop = ImageCrop(root="eye", top=30, left=100, size=60, picture_shape=(150, 210))
    mask = np.random.default_rng(0).integers(0, 3, (60, 60)).astype(np.uint8)
    frame = embed_in_picture(mask, crop)
    assert frame.shape == (150, 210) and frame.sum() == mask.sum()
    np.testing.assert_array_equal(frame[30:90, 100:160], mask)
    np.testing.assert_array_equal(cut_from_picture(frame, crop), mask)
    with pytest.raises(ValueError, match=r"give the label in that picture's frame \(150, 210\)"):
        cut_from_picture(mask, crop)
    with pytest.raises(ValueError, match="60×60"):
        embed_in_picture(frame, crop)


# ------------------------------------------------------------------ through the API


def test_a_crop_is_a_new_image_prepared_from_the_square_of_the_photograph(fundus: TestClient) -> None:
    image_id, picture = upload_photograph(fundus)
    assert fundus.get("/api/info").json()["crops"] is True
    top, left = grid(40, 100)
    bottom, right = grid(100, 150)  # 60 × 50 picture pixels around the optic disc
    response = fundus.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    )
    assert response.status_code == 201, response.text
    crop = response.json()
    assert crop["id"] != image_id and "[crop" in crop["name"] and crop["height"] == IMAGE_SIZE
    store = fundus.app.state.service.store  # type: ignore[attr-defined]
    stored = store.get_image_data(crop["id"])
    box = ImageCrop.model_validate(stored.geometry["crop"])
    assert box.root == image_id and box.picture_shape == (HEIGHT, WIDTH)
    assert 55 <= box.size <= 65 and abs(box.top + box.size / 2 - 70) <= 2 and abs(box.left + box.size / 2 - 125) <= 2
    expected = prepare_image(picture[box.top : box.top + box.size, box.left : box.left + box.size], FUNDUS, IMAGE_SIZE)
    np.testing.assert_allclose(stored.pixels, expected.pixels, atol=1e-6)
    # the same square again is the same image; the list holds it once
    again = fundus.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    )
    assert again.json()["id"] == crop["id"]
    assert [image["id"] for image in fundus.get("/api/images").json()].count(crop["id"]) == 1


def test_the_page_shows_a_photograph_as_itself_and_a_crop_as_its_square_of_it(
    fundus: TestClient, make_client: AppFactory, tmp_path: Path
) -> None:
    """display.png is the model's square grid (blurred, stretched); the page's picture is the photograph at its own
    resolution and aspect ratio, and a crop's is its square cut from the photograph."""
    fundus_model = str(write_tiny_fundus_checkpoint(tmp_path / "other-fundus.pt"))
    image_id, picture = upload_photograph(fundus)
    answer = fundus.get(f"/api/images/{image_id}/picture")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    shown = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.float64)
    assert shown.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(shown - picture).mean() < 3  # the photograph itself (JPEG quality 90), not the grid stretched
    grid_picture = Image.open(io.BytesIO(fundus.get(f"/api/images/{image_id}/display.png").content))
    assert grid_picture.size == (IMAGE_SIZE, IMAGE_SIZE)
    top, left = grid(40, 100)
    bottom, right = grid(100, 150)
    crop = fundus.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    ).json()
    box = ImageCrop.model_validate(fundus.app.state.service.store.get_image_data(crop["id"]).geometry["crop"])  # type: ignore[attr-defined]
    square = Image.open(io.BytesIO(fundus.get(f"/api/images/{crop['id']}/picture").content)).convert("RGB")
    assert square.size == (box.size, box.size)
    cut = picture[box.top : box.top + box.size, box.left : box.left + box.size]
    assert np.abs(np.asarray(square, dtype=np.float64) - cut).mean() < 3
    # a data-folder photograph replaced by another picture since it was prepared: the page shows the grid picture
    data = tmp_path / "data"
    data.mkdir()
    (data / "eye.png").write_bytes(synthetic_fundus_png(HEIGHT, WIDTH))
    served = make_client(data=data, use_samples=False, model=fundus_model, store=tmp_path / "replaced")
    eye = served.get("/api/images").json()[0]["id"]
    (data / "eye.png").write_bytes(synthetic_fundus_png(WIDTH, HEIGHT))
    replaced = served.get(f"/api/images/{eye}/picture")
    assert replaced.headers["content-type"] == "image/png"
    assert replaced.content == served.get(f"/api/images/{eye}/display.png").content
    # a grey slice's display pixels are its own: the page's picture is display.png
    client = make_client(store=tmp_path / "brain")  # three synthetic brain slices
    brain_id = client.get("/api/images").json()[0]["id"]
    brain = client.get(f"/api/images/{brain_id}/picture")
    assert brain.headers["content-type"] == "image/png"
    assert brain.content == client.get(f"/api/images/{brain_id}/display.png").content
    assert client.get("/api/images/nope/picture").status_code == 404


def test_a_crops_masks_are_exported_and_its_labels_taken_in_the_whole_pictures_frame(fundus: TestClient) -> None:
    image_id, _picture = upload_photograph(fundus)
    top, left = grid(30, 90)
    bottom, right = grid(110, 170)
    crop_id = fundus.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    ).json()["id"]
    service = fundus.app.state.service  # type: ignore[attr-defined]
    box = service.catalogue.crop_of(crop_id)
    assert box is not None
    client_id = fundus.get("/api/info").json()["client_id"]
    headers = {"X-Client-Id": client_id}
    assert fundus.post(f"/api/images/{crop_id}/open", headers=headers).status_code == 200
    click = {"row": IMAGE_SIZE // 2, "col": IMAGE_SIZE // 2, "label": 2}
    assert fundus.post(f"/api/images/{crop_id}/clicks", json=click, headers=headers).status_code == 200
    # the tiny random model may predict nothing: a brush stroke makes sure the mask is not empty
    stroke = {"points": [[IMAGE_SIZE // 2, IMAGE_SIZE // 2]], "radius": 6, "label": 2}
    assert fundus.post(f"/api/images/{crop_id}/corrections", json=stroke, headers=headers).status_code == 200
    exported = np.asarray(Image.open(io.BytesIO(fundus.get(f"/api/images/{crop_id}/export?format=png").content)))
    assert exported.shape == (HEIGHT, WIDTH)
    outside = np.ones((HEIGHT, WIDTH), bool)
    outside[box.top : box.top + box.size, box.left : box.left + box.size] = False
    assert not exported[outside].any() and exported[~outside].any()
    nifti = nib.Nifti1Image.from_bytes(
        gzip.decompress(fundus.get(f"/api/images/{crop_id}/export?format=nifti").content)
    )
    volume = np.rot90(np.asarray(nifti.dataobj)[:, :, 0])  # undo the export's upright convention
    assert volume.shape == (HEIGHT, WIDTH) and not volume[outside].any() and volume[~outside].any()
    # a label from a viewer comes in the whole picture's frame; the crop's part of it is what the model learns
    label = np.zeros((HEIGHT, WIDTH), np.int64)
    label[box.top + 5 : box.top + box.size - 5, box.left + 5 : box.left + box.size - 5] = 1
    with pytest.raises(Exception, match=r"picture's frame \(150, 210\)"):
        service.sessions.finish(crop_id, client_id, final_mask=label[:100])
    service.sessions.finish(crop_id, client_id, final_mask=label)
    final = service.store.get_mask(crop_id, "final").mask
    geometry = service.catalogue.geometry(crop_id)
    np.testing.assert_array_equal(final, mask_to_model(cut_from_picture(label, box), geometry))


def test_a_crop_of_a_crop_is_placed_in_the_original_picture(fundus: TestClient) -> None:
    image_id, _picture = upload_photograph(fundus)
    top, left = grid(20, 80)
    bottom, right = grid(120, 180)
    first = fundus.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    )
    outer = fundus.app.state.service.catalogue.crop_of(first.json()["id"])  # type: ignore[attr-defined]
    half = IMAGE_SIZE // 2
    second = fundus.post(
        f"/api/images/{first.json()['id']}/crop",
        json={"top": half, "left": half, "bottom": IMAGE_SIZE, "right": IMAGE_SIZE},
    )
    assert second.status_code == 201, second.text
    inner = fundus.app.state.service.catalogue.crop_of(second.json()["id"])  # type: ignore[attr-defined]
    assert inner.root == image_id and inner.picture_shape == (HEIGHT, WIDTH)
    assert abs(inner.top - (outer.top + outer.size / 2)) <= 1 and abs(inner.left - (outer.left + outer.size / 2)) <= 1
    assert abs(inner.size - outer.size / 2) <= 1


def test_bad_crops_are_refused_naming_why(fundus: TestClient, make_client: AppFactory, tmp_path: Path) -> None:
    image_id, _picture = upload_photograph(fundus)
    tiny = fundus.post(f"/api/images/{image_id}/crop", json={"top": 10, "left": 10, "bottom": 12, "right": 12})
    assert tiny.status_code == 400 and f"at least {MIN_CROP_SIDE}" in tiny.json()["detail"]
    empty = fundus.post(f"/api/images/{image_id}/crop", json={"top": 10, "left": 30, "bottom": 10, "right": 40})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert fundus.post("/api/images/nope/crop", json={"top": 0, "left": 0, "bottom": 9, "right": 9}).status_code == 404
    # a grey brain slice is padded, not resized: cropping it would not change its scale
    client = make_client(store=tmp_path / "brain-store")
    assert client.get("/api/info").json()["crops"] is False
    brain_image = client.get("/api/images").json()[0]["id"]
    refused = client.post(f"/api/images/{brain_image}/crop", json={"top": 0, "left": 0, "bottom": 30, "right": 30})
    assert refused.status_code == 400 and "only photographs" in refused.json()["detail"]
    assert len(fundus.get("/api/images").json()) == 1  # nothing was added


def test_a_crop_of_a_data_folder_photograph_is_compared_with_the_photographs_reference(
    make_client: AppFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "eye.png").write_bytes(synthetic_fundus_png(HEIGHT, WIDTH))
    reference = np.zeros((HEIGHT, WIDTH), np.uint8)
    reference[40:100, 95:155] = 1  # disc rim
    reference[55:85, 110:140] = 2  # cup
    Image.fromarray(reference).save(data / "eye_mask.png")
    client = make_client(data=data, use_samples=False, model=str(write_tiny_fundus_checkpoint(tmp_path / "f.pt")))
    image_id = client.get("/api/images").json()[0]["id"]
    top, left = grid(30, 90)
    bottom, right = grid(110, 170)
    crop = client.post(
        f"/api/images/{image_id}/crop", json={"top": top, "left": left, "bottom": bottom, "right": right}
    )
    assert crop.status_code == 201 and crop.json()["has_reference"] is True
    crop_id = crop.json()["id"]
    headers = {"X-Client-Id": client.get("/api/info").json()["client_id"]}
    assert client.post(f"/api/images/{crop_id}/open", headers=headers).status_code == 200
    click = {"row": IMAGE_SIZE // 2, "col": IMAGE_SIZE // 2, "label": 2}
    assert client.post(f"/api/images/{crop_id}/clicks", json=click, headers=headers).status_code == 200
    # the tiny random model may predict anything: a brush stroke makes the cup overlap the reference's
    stroke = {"points": [[IMAGE_SIZE // 2, IMAGE_SIZE // 2]], "radius": 8, "label": 2}
    assert client.post(f"/api/images/{crop_id}/corrections", json=stroke, headers=headers).status_code == 200
    score = client.get(f"/api/images/{crop_id}/reference")
    assert score.status_code == 200, score.text
    mine = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{crop_id}/export?format=png").content)))
    assert mine.shape == reference.shape  # the crop's mask in the photograph's frame, as the reference
    expected = {
        region: 2
        * (np.isin(mine, classes) & np.isin(reference, classes)).sum()
        / (np.isin(mine, classes).sum() + np.isin(reference, classes).sum())
        for region, classes in FUNDUS.regions.items()
    }
    assert score.json() == {"reference": "eye_mask.png", "dice": pytest.approx(expected)}
    assert expected["cup"] > 0  # the stroke overlaps the reference cup: the comparison is not trivially 0
    # to draw over the crop: its square of the reference, at the crop's own resolution, rim and cup apart
    box = ImageCrop.model_validate(client.app.state.service.store.get_image_data(crop_id).geometry["crop"])  # type: ignore[attr-defined]
    drawn = np.asarray(
        Image.open(io.BytesIO(client.get(f"/api/images/{crop_id}/reference.png").content)).convert("RGBA")
    )
    square = reference[box.top : box.top + box.size, box.left : box.left + box.size]
    assert drawn.shape[:2] == square.shape
    for index in (1, 2):
        assert (np.all(drawn[..., :3] == REFERENCE_COLOURS[index], axis=-1) & (drawn[..., 3] > 0)).sum() == (
            square == index
        ).sum()
